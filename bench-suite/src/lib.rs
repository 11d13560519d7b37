//! The host side of kernelsmith: the task suite on disk, suite-wide checks and runs.

pub mod check;
pub mod launches;
pub mod pool;
pub mod profile;
pub mod report;
pub mod spec_check;
pub mod store;
pub mod suite;
pub mod torch;
