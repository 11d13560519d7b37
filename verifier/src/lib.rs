//! The GPU side of kernelsmith. Nothing here knows about LLMs or databases.
//!
//! - [`expr`]: checked integer expressions used by shapes, grids and rooflines;
//! - [`dtype`]: element types;
//! - [`diag`]: `file:line:column: key: message` diagnostics;
//! - [`task`]: the task format (`task.toml`) and its validator;
//! - [`plan`]: launch plans (`reference.toml`, a candidate's `launch.toml`);
//! - [`nvrtc`]: NVRTC discovery, compilation to CUBIN, include allowlist, ptxas reports, cache.

pub mod compare;
pub mod diag;
pub mod dtype;
pub mod emulator;
pub mod expr;
pub mod heldout;
pub mod inputs;
pub mod nvrtc;
pub mod plan;
pub mod protocol;
pub mod runtime;
pub mod seconds;
pub mod source;
pub mod task;
pub mod timing;
mod toml_reader;

/// `; did you mean `x`?` for a misspelt name, or nothing: the hint every parser gives.
pub use toml_reader::suggestion;
pub mod verdict;
