//! `ksmith`: verified, fast CUDA kernels from PyTorch specs, benchmarked honestly.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.global.verbose);
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // The whole cause chain on one line, no backtrace.
            eprintln!("error: {}", cli::describe(&e));
            ExitCode::from(cli::EXIT_HARNESS)
        }
    }
}
