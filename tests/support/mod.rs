//! Test support shared by the `ksmith run` tests (run_dry.rs on the CPU, gpu_run.rs on a GPU).

pub mod scripted;
