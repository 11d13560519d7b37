//! The worker's protocol stream. Device code's `printf` and anything a library prints go to
//! file descriptor 1, which would corrupt a JSON-lines protocol on stdout; so the worker moves
//! the protocol to a private duplicate of fd 1 and points fd 1 at stderr before any kernel runs.

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;

/// Returns a writer on the original stdout and redirects fd 1 to fd 2. Call once, early.
pub fn take_protocol_stream() -> io::Result<File> {
    // SAFETY: plain descriptor syscalls on the process's own standard streams; the duplicate
    // is owned by the returned File from here on.
    unsafe {
        let dup = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::dup2(2, 1) < 0 {
            let e = io::Error::last_os_error();
            libc::close(dup);
            return Err(e);
        }
        Ok(File::from_raw_fd(dup))
    }
}

/// Ends the process at once with `code`, without unwinding or running destructors: for a
/// thread that must stop a process whose main thread is blocked inside the CUDA driver.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// How many times this worker process restarted in place (0 for a fresh process).
pub const ENV_GENERATION: &str = "KSMITH_WORKER_GENERATION";

/// Replaces the process image with a fresh run of the same executable and arguments: same pid,
/// same stdin/stderr pipes, the protocol stream back on fd 1, every other descriptor closed
/// (the CUDA driver's among them, which tears the lost context down and stops a spinning
/// kernel). The parent sees no death between requests, so a fault is never blamed on the
/// request that follows it. Returns only if the exec failed.
///
/// Nothing may be read from stdin between answering the last request and calling this: the
/// next request must stay in the pipe for the new image.
pub fn restart_in_place(protocol: std::os::fd::RawFd) -> io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return e,
    };
    let generation = std::env::var(ENV_GENERATION)
        .ok()
        .and_then(|g| g.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    // SAFETY: descriptor syscalls on this process's own table, right before exec.
    unsafe {
        if protocol != 1 && libc::dup2(protocol, 1) < 0 {
            return io::Error::last_os_error();
        }
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            // Kernels before 5.9: close them one by one.
            let max = libc::sysconf(libc::_SC_OPEN_MAX).clamp(1024, 1 << 20) as i32;
            for fd in 3..max {
                libc::close(fd);
            }
        }
    }
    std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(ENV_GENERATION, generation.to_string())
        .exec()
}
