//! Test support shared by the root crate's integration tests: running the binary from the CPU
//! tests, the scripted LLM server of the `ksmith run` tests (run_dry.rs on the CPU, gpu_run.rs
//! on a GPU) and what every GPU test needs.

pub mod cli;
pub mod gpu;
pub mod scripted;
