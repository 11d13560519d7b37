//! The PyTorch oracle: a task's outputs computed by its spec.py in a torch [`Session`], on the
//! inputs the strict protocol generated for the candidate (written as safetensors, so the spec
//! sees the same bytes). Plugs into `verifier::runtime::strict` as its [`SpecOracle`]; caching
//! and checking the outputs against the task's declarations happen there.
//!
//! No python or no torch is said once, as "skipped: PyTorch ...", and remembered: later cases
//! get the same answer without starting another process.

use super::{Mode, ModeResult, RunnerConfig, Session, TorchDevice, TorchError, TorchJob};
use std::time::Duration;
use verifier::inputs::HostTensor;
use verifier::runtime::strict::{EvalError, SpecCase, SpecOracle, SPEC_ORACLE_SKIPPED};
use verifier::timing::Protocol;

/// The longest one case may take in spec.py (the torch import of a new session included)
/// unless the configuration says otherwise.
pub const DEFAULT_CASE_TIMEOUT: Duration = Duration::from_secs(300);

pub struct TorchOracle {
    config: RunnerConfig,
    session: Option<Session>,
    unavailable: Option<String>,
    torch_version: Option<String>,
    /// Cases answered by spec.py (cache hits never reach this oracle).
    pub cases: u64,
    device: TorchDevice,
}

impl TorchOracle {
    pub fn new(config: RunnerConfig) -> TorchOracle {
        TorchOracle {
            config,
            session: None,
            unavailable: None,
            torch_version: None,
            cases: 0,
            device: TorchDevice::Cuda(0),
        }
    }

    /// Runs spec.py on this device instead of CUDA device 0 (`Cpu`: for the emulator, whose
    /// machine may have no GPU).
    pub fn on(mut self, device: TorchDevice) -> TorchOracle {
        self.device = device;
        self
    }

    /// Runner processes started so far.
    pub fn processes_started(&self) -> u32 {
        self.session.as_ref().map_or(0, |s| s.started)
    }
}

/// The harness's words for "no PyTorch here", or `None` for any other failure.
pub fn skip_message(e: &TorchError) -> Option<String> {
    match e {
        TorchError::NoPython { .. } => Some(format!(
            "{SPEC_ORACLE_SKIPPED} not importable: {}",
            e.skip_reason().unwrap_or_default()
        )),
        TorchError::Unavailable { reason } if reason.contains("does not import") => {
            Some(format!("{SPEC_ORACLE_SKIPPED} not importable: {reason}"))
        }
        TorchError::Unavailable { reason } => {
            Some(format!("{SPEC_ORACLE_SKIPPED} cannot use a GPU: {reason}"))
        }
        _ => None,
    }
}

impl SpecOracle for TorchOracle {
    fn describe(&self) -> String {
        format!(
            "spec.py through PyTorch{} ({})",
            self.torch_version
                .as_deref()
                .map(|v| format!(" {v}"))
                .unwrap_or_default(),
            self.config.python.display()
        )
    }

    fn outputs(&mut self, c: &SpecCase) -> Result<Vec<HostTensor>, EvalError> {
        if let Some(m) = &self.unavailable {
            return Err(EvalError::new(m.clone()));
        }
        let at = c.case.describe();
        let fail = |e: TorchError| EvalError::new(format!("the PyTorch oracle on {at}: {e}"));
        let sets = vec![c.inputs.to_vec()];
        let mut job = TorchJob::for_task(
            c.task,
            c.shape,
            &sets,
            vec![Mode::Oracle],
            Protocol::default(),
        )
        .map_err(fail)?;
        job.spec = c.spec.to_path_buf();
        job.device = self.device;
        let session = match &mut self.session {
            Some(s) => s,
            None => self
                .session
                .insert(Session::new(self.config.clone()).map_err(fail)?),
        };
        let report = match session.run(&job) {
            Ok(r) => r,
            Err(e) => {
                if let Some(m) = skip_message(&e) {
                    self.unavailable = Some(m.clone());
                    return Err(EvalError::new(m));
                }
                return Err(fail(e));
            }
        };
        if let Some(v) = report.torch_version {
            self.torch_version = Some(v);
        }
        match report.oracle {
            Some(ModeResult::Ok(mut o)) if o.sets.len() == 1 => {
                self.cases += 1;
                Ok(o.sets.remove(0).1)
            }
            Some(ModeResult::Ok(o)) => Err(EvalError::new(format!(
                "the PyTorch oracle on {at}: {} output sets came back for one input set",
                o.sets.len()
            ))),
            Some(ModeResult::Failed { error, traceback }) => Err(EvalError::new(format!(
                "spec.py failed on {at} ({}): {error}{}",
                c.spec.display(),
                traceback.map(|t| format!("\n{t}")).unwrap_or_default()
            ))),
            None => Err(EvalError::new(format!(
                "the PyTorch oracle on {at}: the runner's reply has no oracle result"
            ))),
        }
    }
}

impl TorchOracle {
    /// An oracle with the default runner (python3 or `KSMITH_PYTHON`, the embedded script) and
    /// `timeout` per case.
    pub fn with_timeout(timeout: Duration) -> TorchOracle {
        TorchOracle::new(RunnerConfig {
            timeout,
            ..RunnerConfig::default()
        })
    }
}
