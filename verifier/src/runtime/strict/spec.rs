//! The PyTorch oracle seen from the verifier: the task's outputs computed from its spec.py by
//! something outside this crate (the worker binary runs a torch process; tests use stand-ins).
//! [`SpecOracleFor`] binds one to a task, caches its outputs by (task.toml + spec.py content,
//! shape, seed, variant) like the reference kernel's, and checks that what comes back is what
//! the task declares before anything is compared with it.

use super::{EvalError, Oracle, ReferenceCache};
use crate::inputs::{dims_of, HostTensor};
use crate::task::{Shape, Task};
use crate::verdict::Case;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// One case for a spec oracle: the inputs are exactly those the candidate gets.
pub struct SpecCase<'a> {
    pub task: &'a Task,
    /// The task's spec.py.
    pub spec: &'a Path,
    pub case: &'a Case,
    pub shape: &'a Shape,
    pub inputs: &'a [HostTensor],
}

/// Computes a task's outputs from its spec.py. Errors are the harness's (no PyTorch, spec.py
/// failing, a crashed runner), never a verdict on the candidate; an error whose message starts
/// with [`SKIPPED`] means PyTorch is not usable here at all.
pub trait SpecOracle {
    /// What computes the outputs, for logs ("spec.py through PyTorch 2.11 ...").
    fn describe(&self) -> String;
    /// The outputs for `c.inputs`, in `task.outputs` order.
    fn outputs(&mut self, c: &SpecCase) -> Result<Vec<HostTensor>, EvalError>;
}

/// How an oracle error that means "no PyTorch here" starts.
pub const SPEC_ORACLE_SKIPPED: &str = "skipped: PyTorch";

/// A [`SpecOracle`] bound to one task, as the strict protocol's [`Oracle`].
pub struct SpecOracleFor<'a> {
    inner: &'a mut dyn SpecOracle,
    task: &'a Task,
    spec: PathBuf,
    /// `spec:` + SHA-256 over task.toml and spec.py: never equal to a reference kernel's key.
    content: String,
    cache: &'a mut ReferenceCache,
}

impl<'a> SpecOracleFor<'a> {
    /// Binds `inner` to the task whose task.toml text is `task_text`; reads spec.py beside it.
    pub fn new(
        inner: &'a mut dyn SpecOracle,
        task: &'a Task,
        task_text: &str,
        cache: &'a mut ReferenceCache,
    ) -> Result<SpecOracleFor<'a>, EvalError> {
        let spec = task.path.parent().unwrap_or(Path::new(".")).join("spec.py");
        let text = std::fs::read(&spec).map_err(|e| {
            EvalError::new(format!("the PyTorch oracle needs {}: {e}", spec.display()))
        })?;
        let mut h = Sha256::new();
        for part in [task_text.as_bytes(), &text] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Ok(SpecOracleFor {
            inner,
            task,
            spec,
            content: format!("spec:{}", hex::encode(h.finalize())),
            cache,
        })
    }

    /// The cache key prefix of this task's spec outputs.
    pub fn content(&self) -> &str {
        &self.content
    }
}

/// Checks the oracle's outputs against the task's declarations at this shape.
fn check_outputs(task: &Task, shape: &Shape, got: &[HostTensor]) -> Result<(), String> {
    if got.len() != task.outputs.len() {
        return Err(format!(
            "{} output(s) came back, the task declares {}",
            got.len(),
            task.outputs.len()
        ));
    }
    for (t, d) in got.iter().zip(&task.outputs) {
        let dims = dims_of(d, shape).map_err(|e| format!("output `{}`: {e}", d.name))?;
        if t.dtype != d.dtype || t.dims != dims {
            return Err(format!(
                "output `{}` came back as {} {:?}, the task declares {} {:?}",
                d.name, t.dtype, t.dims, d.dtype, dims
            ));
        }
        let want = t.numel() * t.dtype.size_bytes() as u64;
        if t.bytes.len() as u64 != want {
            return Err(format!(
                "output `{}` holds {} bytes, {} {:?} needs {want}",
                d.name,
                t.bytes.len(),
                t.dtype,
                t.dims
            ));
        }
    }
    Ok(())
}

impl Oracle for SpecOracleFor<'_> {
    fn describe(&self) -> String {
        format!("{} ({})", self.inner.describe(), self.spec.display())
    }

    fn outputs(
        &mut self,
        case: &Case,
        shape: &Shape,
        inputs: &[HostTensor],
    ) -> Result<Rc<Vec<HostTensor>>, EvalError> {
        if let Some(hit) = self.cache.get(&self.content, case) {
            return Ok(hit);
        }
        let out = self.inner.outputs(&SpecCase {
            task: self.task,
            spec: &self.spec,
            case,
            shape,
            inputs,
        })?;
        check_outputs(self.task, shape, &out).map_err(|e| {
            EvalError::new(format!(
                "the PyTorch oracle on {}: {e} ({})",
                case.describe(),
                self.spec.display()
            ))
        })?;
        let out = Rc::new(out);
        self.cache.put(&self.content, case, Rc::clone(&out));
        Ok(out)
    }
}
