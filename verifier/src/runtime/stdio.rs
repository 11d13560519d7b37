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
