//! `--gpus LIST|all`: the GPUs a run or a replay evaluates on, one `ksmith worker` each.
//!
//! Every result of a run is stored under one GPU identity (`gpu_key`: model, architecture,
//! driver), and speedups are only comparable within it. So the chosen GPUs must all have the
//! same key: a list naming different models is refused (exit 2); by default (every GPU the
//! driver sees) the GPUs that differ from GPU 0 are left out with a note. Keying results per
//! device instead would split one run's candidates across identities, and the agent would
//! compare speedups measured on different hardware; refusing keeps the store's meaning simple.

use verifier::runtime::calibrate::gpu_key;
use verifier::runtime::{DeviceInfo, Gpu};

/// What `--gpus` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelection {
    /// Every GPU the driver sees (of GPU 0's model).
    All,
    /// These ordinals, as the driver numbers them (after `CUDA_VISIBLE_DEVICES`).
    List(Vec<u32>),
}

/// clap's parser for `--gpus`: `all`, or ordinals separated by commas (`0`, `0,1,3`).
pub fn parse_gpus(text: &str) -> Result<GpuSelection, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("all") {
        return Ok(GpuSelection::All);
    }
    if t.is_empty() {
        return Err("empty: name GPU ordinals (`0,1`) or `all`".into());
    }
    let mut ordinals: Vec<u32> = Vec::new();
    for item in t.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!(
                "`{t}` has an empty entry: name GPU ordinals separated by commas (`0,1`) or `all`"
            ));
        }
        let o: u32 = item
            .parse()
            .ok()
            .filter(|_| item.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                format!("`{item}` is not a GPU ordinal: use numbers from 0 (`0,1`) or `all`")
            })?;
        if ordinals.contains(&o) {
            return Err(format!("GPU {o} is listed twice: each GPU runs one worker"));
        }
        ordinals.push(o);
    }
    Ok(GpuSelection::List(ordinals))
}

/// The GPUs a run uses: one model, GPU `ordinals[0]`'s facts standing for all of them.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub ordinals: Vec<u32>,
    pub info: DeviceInfo,
    /// GPUs left out of the default selection, and why (printed as notes).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectError {
    /// No usable GPU (no driver, no device, a named GPU does not open): exit 3.
    NoGpu(String),
    /// `--gpus` names GPUs that are not there or differ in model: exit 2.
    Usage(String),
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Chooses GPUs among the `count` the driver sees; `open` reads one device's facts.
pub fn choose(
    selection: Option<&GpuSelection>,
    count: u32,
    mut open: impl FnMut(u32) -> Result<DeviceInfo, String>,
) -> Result<Chosen, SelectError> {
    if count == 0 {
        return Err(SelectError::NoGpu("the driver sees no GPU".into()));
    }
    match selection {
        Some(GpuSelection::List(list)) => {
            if let Some(o) = list.iter().find(|o| **o >= count) {
                let hint = match std::env::var("CUDA_VISIBLE_DEVICES") {
                    Ok(v) => format!(" (numbered after CUDA_VISIBLE_DEVICES={v})"),
                    Err(_) => String::new(),
                };
                return Err(SelectError::Usage(format!(
                    "--gpus names GPU {o}, but the driver sees {count} GPU{} (ordinals 0 to {}){hint}",
                    plural(count),
                    count - 1
                )));
            }
            let mut infos: Vec<DeviceInfo> = Vec::new();
            for &o in list {
                let info = open(o)
                    .map_err(|e| SelectError::NoGpu(format!("GPU {o} cannot be opened: {e}")))?;
                infos.push(info);
            }
            let Some(first) = infos.first().cloned() else {
                return Err(SelectError::Usage("--gpus names no GPU".into()));
            };
            let key = gpu_key(&first);
            if let Some(other) = infos.iter().find(|i| gpu_key(i) != key) {
                return Err(SelectError::Usage(format!(
                    "--gpus names GPUs of different kinds: GPU {} is {} and GPU {} is {}; the \
                     results of one run share one GPU identity, so choose GPUs of one model \
                     (e.g. --gpus {})",
                    first.ordinal,
                    key,
                    other.ordinal,
                    gpu_key(other),
                    first.ordinal
                )));
            }
            Ok(Chosen {
                ordinals: list.clone(),
                info: first,
                notes: Vec::new(),
            })
        }
        None | Some(GpuSelection::All) => {
            // GPU 0 decides the model; a run that could use it before keeps working.
            let first = open(0).map_err(SelectError::NoGpu)?;
            let key = gpu_key(&first);
            let mut ordinals = vec![0];
            let mut notes = Vec::new();
            for o in 1..count {
                match open(o) {
                    Ok(i) if gpu_key(&i) == key => ordinals.push(o),
                    Ok(i) => notes.push(format!(
                        "GPU {o} ({}) is left out: it is not a {key} like GPU 0 (choose with --gpus)",
                        gpu_key(&i)
                    )),
                    Err(e) => notes.push(format!("GPU {o} is left out: it cannot be opened: {e}")),
                }
            }
            Ok(Chosen {
                ordinals,
                info: first,
                notes,
            })
        }
    }
}

/// [`choose`] on this machine's driver. Probing happens only here, so that a machine without
/// a driver hears about that (with what was looked for) before anything about `--gpus`.
pub fn choose_here(selection: Option<&GpuSelection>) -> Result<Chosen, SelectError> {
    let count = Gpu::count().map_err(|e| SelectError::NoGpu(e.to_string()))?;
    choose(selection, count, |o| {
        Gpu::open(o)
            .map(|g| g.info.clone())
            .map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_all_parse() {
        assert_eq!(parse_gpus("all"), Ok(GpuSelection::All));
        assert_eq!(parse_gpus(" ALL "), Ok(GpuSelection::All));
        assert_eq!(parse_gpus("0"), Ok(GpuSelection::List(vec![0])));
        assert_eq!(parse_gpus("0,1"), Ok(GpuSelection::List(vec![0, 1])));
        assert_eq!(parse_gpus("3, 1"), Ok(GpuSelection::List(vec![3, 1])));
    }

    #[test]
    fn malformed_lists_say_what_is_wrong() {
        for (text, want) in [
            ("", "empty"),
            ("0,,1", "empty entry"),
            ("0,", "empty entry"),
            ("x", "`x` is not a GPU ordinal"),
            ("-1", "`-1` is not a GPU ordinal"),
            ("+1", "`+1` is not a GPU ordinal"),
            ("1.5", "`1.5` is not a GPU ordinal"),
            ("99999999999", "not a GPU ordinal"),
            ("0,1,0", "GPU 0 is listed twice"),
            ("some", "`some` is not a GPU ordinal"),
        ] {
            let e = parse_gpus(text).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    fn device(ordinal: u32, name: &str) -> DeviceInfo {
        DeviceInfo {
            ordinal,
            name: name.into(),
            driver_version: 13000,
            total_memory_bytes: 80 << 30,
            ..DeviceInfo::preset("h100").expect("h100 is a preset")
        }
    }

    /// A machine whose GPU 2 is another model and whose GPU 3 does not open.
    fn machine(o: u32) -> Result<DeviceInfo, String> {
        match o {
            2 => Ok(device(o, "NVIDIA A100")),
            3 => Err("CUDA_ERROR_OUT_OF_MEMORY".into()),
            _ => Ok(device(o, "NVIDIA H100")),
        }
    }

    #[test]
    fn the_default_is_every_gpu_of_gpu_0s_model() {
        let c = choose(None, 5, machine).unwrap();
        assert_eq!(c.ordinals, vec![0, 1, 4]);
        assert_eq!(c.info.ordinal, 0);
        assert_eq!(c.notes.len(), 2, "{:?}", c.notes);
        assert!(
            c.notes[0].contains("GPU 2 (NVIDIA A100|sm_90"),
            "{:?}",
            c.notes
        );
        assert!(c.notes[1].contains("GPU 3 is left out") && c.notes[1].contains("OUT_OF_MEMORY"));
        let all = choose(Some(&GpuSelection::All), 2, machine).unwrap();
        assert_eq!(all.ordinals, vec![0, 1]);
        assert!(all.notes.is_empty());
        // One GPU: as before.
        assert_eq!(choose(None, 1, machine).unwrap().ordinals, vec![0]);
    }

    #[test]
    fn named_gpus_are_checked() {
        let list = |l: &[u32]| GpuSelection::List(l.to_vec());
        let c = choose(Some(&list(&[1, 0])), 5, machine).unwrap();
        assert_eq!((c.ordinals, c.info.ordinal), (vec![1, 0], 1));

        match choose(Some(&list(&[0, 5])), 5, machine) {
            Err(SelectError::Usage(m)) => assert!(
                m.contains("GPU 5") && m.contains("sees 5 GPUs (ordinals 0 to 4)"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        match choose(Some(&list(&[1])), 1, machine) {
            Err(SelectError::Usage(m)) => {
                assert!(m.contains("sees 1 GPU (ordinals 0 to 0)"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        match choose(Some(&list(&[0, 2])), 5, machine) {
            Err(SelectError::Usage(m)) => assert!(
                m.contains("GPU 0 is NVIDIA H100|sm_90")
                    && m.contains("GPU 2 is NVIDIA A100|sm_90")
                    && m.contains("--gpus 0"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        match choose(Some(&list(&[3])), 5, machine) {
            Err(SelectError::NoGpu(m)) => {
                assert!(
                    m.contains("GPU 3 cannot be opened: CUDA_ERROR_OUT_OF_MEMORY"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_device_or_an_unopenable_gpu_0_is_no_gpu() {
        assert!(matches!(
            choose(None, 0, machine),
            Err(SelectError::NoGpu(m)) if m.contains("sees no GPU")
        ));
        assert!(matches!(
            choose(Some(&GpuSelection::List(vec![0])), 0, machine),
            Err(SelectError::NoGpu(_))
        ));
        let broken = |_| Err("CUDA_ERROR_UNKNOWN".to_string());
        assert!(matches!(
            choose(None, 2, broken),
            Err(SelectError::NoGpu(m)) if m.contains("CUDA_ERROR_UNKNOWN")
        ));
    }
}
