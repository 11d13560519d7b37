//! NVML telemetry recorded with every measurement (DESIGN §5): SM and memory clocks,
//! temperature, power and the clock-event ("throttle") reasons, read before and after a
//! measurement and after every timed sample.
//!
//! NVML is loaded at run time (`libnvidia-ml.so.1`, shipped with the driver). Its absence, or
//! any call it refuses, makes telemetry "unavailable" with the reason; it is never an error, so
//! a machine without NVML still times kernels. Nothing here changes a clock, a power limit,
//! persistence or compute mode: only `nvmlDeviceGet*` queries are called.

use super::DeviceInfo;
use libloading::Library;
use serde::{Deserialize, Serialize};
use std::ffi::{c_char, c_uint, c_void, CStr};

/// Libraries tried, in order (the driver installs the versioned name).
pub const NVML_LIBRARIES: &[&str] = &["libnvidia-ml.so.1", "libnvidia-ml.so"];

/// `nvmlClocksEventReasons` bits (nvml.h; formerly "clocks throttle reasons").
pub const REASONS: &[(u64, &str, bool)] = &[
    // (bit, name, whether it means the GPU ran slower than it would have for the kernel)
    (0x1, "gpu_idle", false),
    (0x2, "applications_clocks_setting", false),
    (0x4, "sw_power_cap", true),
    (0x8, "hw_slowdown", true),
    (0x10, "sync_boost", false),
    (0x20, "sw_thermal_slowdown", true),
    (0x40, "hw_thermal_slowdown", true),
    (0x80, "hw_power_brake_slowdown", true),
    (0x100, "display_clock_setting", false),
];

/// The reason bits that mean a slowdown forced by power or heat. Idle, application clocks,
/// sync boost and display settings are how the GPU is configured, not a throttle.
pub const THROTTLE_MASK: u64 = 0x4 | 0x8 | 0x20 | 0x40 | 0x80;

/// Names of the set bits, unknown bits as `0x...`.
pub fn reason_names(bits: u64) -> Vec<String> {
    let mut out: Vec<String> = REASONS
        .iter()
        .filter(|(b, _, _)| bits & b != 0)
        .map(|(_, n, _)| n.to_string())
        .collect();
    let known: u64 = REASONS.iter().map(|(b, _, _)| b).sum();
    let unknown = bits & !known;
    if unknown != 0 {
        out.push(format!("unknown_{unknown:#x}"));
    }
    out
}

/// True when the bits include a power or thermal slowdown.
pub fn is_throttled(bits: u64) -> bool {
    bits & THROTTLE_MASK != 0
}

/// One reading; a field NVML refused to give is `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    pub temperature_c: Option<u32>,
    pub power_w: Option<f64>,
    /// Raw clock-event reason bits.
    pub reasons: Option<u64>,
    /// Their names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reason_names: Vec<String>,
    /// A power or thermal slowdown was active.
    pub throttled: bool,
}

impl Reading {
    pub fn from_reasons(mut self, bits: Option<u64>) -> Reading {
        self.reasons = bits;
        self.reason_names = bits.map(reason_names).unwrap_or_default();
        self.throttled = bits.is_some_and(is_throttled);
        self
    }

    /// `1980 MHz SM, 2619 MHz mem, 41 C, 312.5 W` (fields NVML gave).
    pub fn describe(&self) -> String {
        let mut p = Vec::new();
        if let Some(v) = self.sm_clock_mhz {
            p.push(format!("{v} MHz SM"));
        }
        if let Some(v) = self.memory_clock_mhz {
            p.push(format!("{v} MHz mem"));
        }
        if let Some(v) = self.temperature_c {
            p.push(format!("{v} C"));
        }
        if let Some(v) = self.power_w {
            p.push(format!("{v:.1} W"));
        }
        if !self.reason_names.is_empty() {
            p.push(format!("reasons: {}", self.reason_names.join("+")));
        }
        p.join(", ")
    }
}

/// The telemetry of one measurement (one shape of one kernel, or one microbenchmark).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeasurementTelemetry {
    /// Why there is none (no NVML, the device not found in NVML...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    pub before: Option<Reading>,
    pub after: Option<Reading>,
    /// Timed samples whose reason bits (read right after the sample) showed a slowdown.
    pub throttled_samples: u32,
    /// Samples whose reasons were read.
    pub checked_samples: u32,
}

impl MeasurementTelemetry {
    pub fn unavailable(reason: impl Into<String>) -> MeasurementTelemetry {
        MeasurementTelemetry {
            unavailable: Some(reason.into()),
            ..Default::default()
        }
    }

    /// Counts one timed sample's reason bits (`None`: not readable).
    pub fn note_sample(&mut self, bits: Option<u64>) {
        if let Some(b) = bits {
            self.checked_samples += 1;
            if is_throttled(b) {
                self.throttled_samples += 1;
            }
        }
    }

    /// Whether any part of the measurement ran throttled: `None` when nothing could be read.
    pub fn throttled(&self) -> Option<bool> {
        let readings = [&self.before, &self.after];
        let any_read = readings.iter().any(|r| r.is_some()) || self.checked_samples > 0;
        if !any_read {
            return None;
        }
        Some(
            self.throttled_samples > 0
                || readings
                    .iter()
                    .any(|r| r.as_ref().is_some_and(|r| r.throttled)),
        )
    }
}

type NvmlReturn = c_uint;
type Device = *mut c_void;

/// Function pointers resolved once; the library stays loaded as long as they are used.
struct Api {
    shutdown: unsafe extern "C" fn() -> NvmlReturn,
    error_string: unsafe extern "C" fn(NvmlReturn) -> *const c_char,
    clock_info: unsafe extern "C" fn(Device, c_uint, *mut c_uint) -> NvmlReturn,
    max_clock_info: unsafe extern "C" fn(Device, c_uint, *mut c_uint) -> NvmlReturn,
    /// Optional: nvml.h deprecates it in favour of nvmlDeviceGetTemperatureV, and a driver that
    /// drops it must still give clocks, power and reasons.
    temperature: Option<unsafe extern "C" fn(Device, c_uint, *mut c_uint) -> NvmlReturn>,
    power: unsafe extern "C" fn(Device, *mut c_uint) -> NvmlReturn,
    reasons: Option<unsafe extern "C" fn(Device, *mut u64) -> NvmlReturn>,
    name: unsafe extern "C" fn(Device, *mut c_char, c_uint) -> NvmlReturn,
    driver_version: unsafe extern "C" fn(*mut c_char, c_uint) -> NvmlReturn,
}

/// An initialised NVML bound to one device. Dropping it shuts NVML down.
pub struct Nvml {
    api: Api,
    device: Device,
    pub library: &'static str,
    // Last: dropped after every use of `api`.
    _lib: Library,
}

const NVML_SUCCESS: NvmlReturn = 0;
const NVML_CLOCK_SM: c_uint = 1;
const NVML_CLOCK_MEM: c_uint = 2;
const NVML_TEMPERATURE_GPU: c_uint = 0;

impl Nvml {
    /// Loads NVML and opens the device the CUDA ordinal `ordinal` refers to: by its PCI bus id
    /// where CUDA reported one (exact whatever order CUDA and NVML number devices in), else by
    /// index. NVML ignores `CUDA_VISIBLE_DEVICES`, so for the index a single integer there is
    /// honoured; anything else (UUIDs, lists) falls back to `ordinal`, and the caller compares
    /// the names.
    pub fn open(ordinal: u32, pci_bus_id: Option<&str>) -> Result<Nvml, String> {
        let mut tried = Vec::new();
        for name in NVML_LIBRARIES {
            // SAFETY: loading NVML runs its initialisers, which have no preconditions.
            match unsafe { Library::new(name) } {
                Ok(lib) => return Self::with_library(lib, name, nvml_index(ordinal), pci_bus_id),
                Err(e) => tried.push(format!("{name} ({e})")),
            }
        }
        Err(format!("NVML not found: looked for {}", tried.join(", ")))
    }

    fn with_library(
        lib: Library,
        library: &'static str,
        index: u32,
        pci_bus_id: Option<&str>,
    ) -> Result<Nvml, String> {
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the signature is the one nvml.h declares for this symbol.
                *unsafe { lib.get(concat!($name, "\0").as_bytes()) }
                    .map_err(|e| format!("{library} lacks {}: {e}", $name))?
            };
        }
        let init: unsafe extern "C" fn() -> NvmlReturn = sym!("nvmlInit_v2");
        let by_index: unsafe extern "C" fn(c_uint, *mut Device) -> NvmlReturn =
            sym!("nvmlDeviceGetHandleByIndex_v2");
        // SAFETY: nvmlReturn_t (const char*, nvmlDevice_t*), as nvml.h declares it.
        let by_pci = unsafe {
            lib.get::<unsafe extern "C" fn(*const c_char, *mut Device) -> NvmlReturn>(
                b"nvmlDeviceGetHandleByPciBusId_v2\0",
            )
        }
        .ok()
        .map(|s| *s);
        // The newer name first; drivers before 535 only have the "throttle" one.
        // SAFETY: both have the signature nvmlReturn_t (nvmlDevice_t, unsigned long long*).
        let reasons = unsafe {
            lib.get::<unsafe extern "C" fn(Device, *mut u64) -> NvmlReturn>(
                b"nvmlDeviceGetCurrentClocksEventReasons\0",
            )
            .or_else(|_| lib.get(b"nvmlDeviceGetCurrentClocksThrottleReasons\0"))
        }
        .ok()
        .map(|s| *s);
        let api = Api {
            shutdown: sym!("nvmlShutdown"),
            error_string: sym!("nvmlErrorString"),
            clock_info: sym!("nvmlDeviceGetClockInfo"),
            max_clock_info: sym!("nvmlDeviceGetMaxClockInfo"),
            // SAFETY: nvmlReturn_t (nvmlDevice_t, nvmlTemperatureSensors_t, unsigned int*).
            temperature: unsafe {
                lib.get::<unsafe extern "C" fn(Device, c_uint, *mut c_uint) -> NvmlReturn>(
                    b"nvmlDeviceGetTemperature\0",
                )
            }
            .ok()
            .map(|s| *s),
            power: sym!("nvmlDeviceGetPowerUsage"),
            reasons,
            name: sym!("nvmlDeviceGetName"),
            driver_version: sym!("nvmlSystemGetDriverVersion"),
        };
        // SAFETY: plain initialisation call.
        let rc = unsafe { init() };
        if rc != NVML_SUCCESS {
            return Err(format!("nvmlInit failed: {}", describe(&api, rc)));
        }
        let mut device: Device = std::ptr::null_mut();
        let bus_id = pci_bus_id.and_then(|b| std::ffi::CString::new(b).ok());
        if let (Some(f), Some(bus_id)) = (by_pci, bus_id) {
            // SAFETY: a NUL-terminated string NVML only reads; writes one handle. On failure
            // the index below decides.
            if unsafe { f(bus_id.as_ptr(), &mut device) } != NVML_SUCCESS {
                device = std::ptr::null_mut();
            }
        }
        // SAFETY: writes one handle.
        let rc = if device.is_null() {
            unsafe { by_index(index, &mut device) }
        } else {
            NVML_SUCCESS
        };
        if rc != NVML_SUCCESS {
            // SAFETY: initialised above.
            unsafe { (api.shutdown)() };
            return Err(format!(
                "NVML has no device {index}: {}",
                describe(&api, rc)
            ));
        }
        Ok(Nvml {
            api,
            device,
            library,
            _lib: lib,
        })
    }

    fn u32_of(
        &self,
        f: unsafe extern "C" fn(Device, c_uint, *mut c_uint) -> NvmlReturn,
        which: c_uint,
    ) -> Option<u32> {
        let mut v: c_uint = 0;
        // SAFETY: a handle from nvmlDeviceGetHandleByIndex; writes one unsigned int.
        (unsafe { f(self.device, which, &mut v) } == NVML_SUCCESS).then_some(v)
    }

    pub fn reasons(&self) -> Option<u64> {
        let f = self.api.reasons?;
        let mut v: u64 = 0;
        // SAFETY: as above; writes one unsigned long long.
        (unsafe { f(self.device, &mut v) } == NVML_SUCCESS).then_some(v)
    }

    pub fn read(&self) -> Reading {
        let mut mw: c_uint = 0;
        // SAFETY: as above.
        let power = (unsafe { (self.api.power)(self.device, &mut mw) } == NVML_SUCCESS)
            .then(|| mw as f64 / 1e3);
        Reading {
            sm_clock_mhz: self.u32_of(self.api.clock_info, NVML_CLOCK_SM),
            memory_clock_mhz: self.u32_of(self.api.clock_info, NVML_CLOCK_MEM),
            temperature_c: self
                .api
                .temperature
                .and_then(|f| self.u32_of(f, NVML_TEMPERATURE_GPU)),
            power_w: power,
            ..Reading::default()
        }
        .from_reasons(self.reasons())
    }

    /// The highest SM and memory clocks, in MHz.
    pub fn max_clocks_mhz(&self) -> (Option<u32>, Option<u32>) {
        (
            self.u32_of(self.api.max_clock_info, NVML_CLOCK_SM),
            self.u32_of(self.api.max_clock_info, NVML_CLOCK_MEM),
        )
    }

    pub fn device_name(&self) -> Option<String> {
        let mut buf = [0 as c_char; 256];
        // SAFETY: NVML writes a NUL-terminated string of at most `len` bytes.
        let rc = unsafe { (self.api.name)(self.device, buf.as_mut_ptr(), buf.len() as c_uint) };
        (rc == NVML_SUCCESS).then(|| c_string(&buf))
    }

    /// The driver version as NVML reports it (`550.54.15`).
    pub fn driver_version(&self) -> Option<String> {
        let mut buf = [0 as c_char; 96];
        // SAFETY: as above.
        let rc = unsafe { (self.api.driver_version)(buf.as_mut_ptr(), buf.len() as c_uint) };
        (rc == NVML_SUCCESS).then(|| c_string(&buf))
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: initialised in `open`, shut down once.
        unsafe {
            (self.api.shutdown)();
        }
    }
}

fn c_string(buf: &[c_char]) -> String {
    // SAFETY: NVML NUL-terminates; the last byte is forced to NUL in case it did not.
    let mut b = buf.to_vec();
    if let Some(last) = b.last_mut() {
        *last = 0;
    }
    unsafe { CStr::from_ptr(b.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn describe(api: &Api, rc: NvmlReturn) -> String {
    // SAFETY: returns a static string for any code.
    let p = unsafe { (api.error_string)(rc) };
    if p.is_null() {
        return format!("NVML error {rc}");
    }
    // SAFETY: non-null static C string.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy();
    format!("{s} ({rc})")
}

/// The NVML index of CUDA device `ordinal`, given `CUDA_VISIBLE_DEVICES`.
fn nvml_index(ordinal: u32) -> u32 {
    visible_index(
        std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
        ordinal,
    )
}

/// `CUDA_VISIBLE_DEVICES="3"` and ordinal 0 is NVML index 3; lists of integers map by
/// position; UUIDs or anything else are not resolved (the ordinal is used).
pub fn visible_index(var: Option<&str>, ordinal: u32) -> u32 {
    let Some(v) = var.map(str::trim).filter(|v| !v.is_empty()) else {
        return ordinal;
    };
    let parts: Option<Vec<u32>> = v.split(',').map(|p| p.trim().parse().ok()).collect();
    match parts {
        Some(list) => list.get(ordinal as usize).copied().unwrap_or(ordinal),
        None => ordinal,
    }
}

/// Telemetry for a measurement: an open NVML, or the reason there is none.
pub enum Telemetry {
    Nvml(Box<Nvml>),
    Unavailable(String),
}

impl Telemetry {
    /// Opens NVML for CUDA device `ordinal`. With the device's CUDA facts it is found by PCI
    /// bus id, and the name (from CUDA) guards against reading another GPU when it had to be
    /// found by index.
    pub fn open(ordinal: u32, cuda: Option<&DeviceInfo>) -> Telemetry {
        let pci_bus_id = cuda.and_then(|d| d.pci_bus_id.as_deref());
        match Nvml::open(ordinal, pci_bus_id) {
            Ok(n) => {
                if let (Some(want), Some(got)) = (cuda.map(|d| &d.name), n.device_name()) {
                    if *want != got {
                        return Telemetry::Unavailable(format!(
                            "NVML device is `{got}`, CUDA device is `{want}`: cannot tell which GPU to read (set CUDA_VISIBLE_DEVICES to an index)"
                        ));
                    }
                }
                Telemetry::Nvml(Box::new(n))
            }
            Err(e) => Telemetry::Unavailable(e),
        }
    }

    pub fn read(&self) -> Option<Reading> {
        match self {
            Telemetry::Nvml(n) => Some(n.read()),
            Telemetry::Unavailable(_) => None,
        }
    }

    pub fn reasons(&self) -> Option<u64> {
        match self {
            Telemetry::Nvml(n) => n.reasons(),
            Telemetry::Unavailable(_) => None,
        }
    }

    /// Starts the record of one measurement (reads "before").
    pub fn begin(&self) -> MeasurementTelemetry {
        match self {
            Telemetry::Nvml(n) => MeasurementTelemetry {
                before: Some(n.read()),
                ..Default::default()
            },
            Telemetry::Unavailable(r) => MeasurementTelemetry::unavailable(r.clone()),
        }
    }

    /// Completes it (reads "after").
    pub fn end(&self, m: &mut MeasurementTelemetry) {
        if let Telemetry::Nvml(n) = self {
            m.after = Some(n.read());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_bits_decode_by_name() {
        assert!(reason_names(0).is_empty());
        assert_eq!(reason_names(0x1), vec!["gpu_idle"]);
        assert_eq!(
            reason_names(0x4 | 0x40),
            vec!["sw_power_cap", "hw_thermal_slowdown"]
        );
        assert_eq!(
            reason_names(0x2 | 0x1000),
            vec!["applications_clocks_setting", "unknown_0x1000"]
        );
        // Every named bit is distinct and the throttle mask is exactly the flagged names.
        let mask: u64 = REASONS.iter().filter(|r| r.2).map(|r| r.0).sum();
        assert_eq!(mask, THROTTLE_MASK);
        let all: u64 = REASONS.iter().map(|r| r.0).fold(0, |a, b| {
            assert_eq!(a & b, 0, "bit {b:#x} listed twice");
            a | b
        });
        assert_eq!(all, 0x1FF);
    }

    #[test]
    fn only_power_and_thermal_reasons_count_as_throttling() {
        for idle_like in [0x0, 0x1, 0x2, 0x10, 0x100, 0x1 | 0x2 | 0x10 | 0x100] {
            assert!(!is_throttled(idle_like), "{idle_like:#x}");
        }
        for slow in [0x4, 0x8, 0x20, 0x40, 0x80, 0x1 | 0x40] {
            assert!(is_throttled(slow), "{slow:#x}");
        }
        let r = Reading::default().from_reasons(Some(0x1 | 0x20));
        assert!(r.throttled);
        assert_eq!(r.reason_names, vec!["gpu_idle", "sw_thermal_slowdown"]);
        assert!(!Reading::default().from_reasons(None).throttled);
    }

    #[test]
    fn measurements_flag_throttled_samples() {
        let mut m = MeasurementTelemetry::default();
        assert_eq!(m.throttled(), None, "nothing read: unknown, not 'no'");
        m.before = Some(Reading::default().from_reasons(Some(0x1)));
        assert_eq!(m.throttled(), Some(false));
        m.note_sample(Some(0x0));
        m.note_sample(None);
        m.note_sample(Some(0x4));
        assert_eq!((m.checked_samples, m.throttled_samples), (2, 1));
        assert_eq!(m.throttled(), Some(true));
        let n = MeasurementTelemetry {
            after: Some(Reading::default().from_reasons(Some(0x8))),
            ..Default::default()
        };
        assert_eq!(n.throttled(), Some(true));
        let u = MeasurementTelemetry::unavailable("NVML not found");
        assert_eq!(u.throttled(), None);
        let json = serde_json::to_string(&m).unwrap();
        let back: MeasurementTelemetry = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn visible_devices_map_to_nvml_indices() {
        assert_eq!(visible_index(None, 0), 0);
        assert_eq!(visible_index(Some(""), 1), 1);
        assert_eq!(visible_index(Some("3"), 0), 3);
        assert_eq!(visible_index(Some("2, 5"), 1), 5);
        assert_eq!(
            visible_index(Some("2,5"), 7),
            7,
            "out of range: the ordinal"
        );
        assert_eq!(
            visible_index(Some("GPU-1234abcd"), 0),
            0,
            "UUIDs not resolved"
        );
    }

    #[test]
    fn absent_nvml_is_unavailable_not_an_error() {
        match Telemetry::open(0, None) {
            Telemetry::Nvml(n) => eprintln!("NVML present: {:?}", n.read()),
            Telemetry::Unavailable(reason) => {
                assert!(!reason.is_empty());
                eprintln!("telemetry unavailable here, as expected without a driver: {reason}");
                let t = Telemetry::Unavailable(reason.clone());
                let m = t.begin();
                assert_eq!(m.unavailable.as_deref(), Some(reason.as_str()));
                assert!(t.read().is_none() && t.reasons().is_none());
            }
        }
    }

    #[test]
    fn readings_describe_what_was_read() {
        let r = Reading {
            sm_clock_mhz: Some(1980),
            memory_clock_mhz: Some(2619),
            temperature_c: Some(41),
            power_w: Some(312.46),
            ..Reading::default()
        }
        .from_reasons(Some(0x4));
        assert_eq!(
            r.describe(),
            "1980 MHz SM, 2619 MHz mem, 41 C, 312.5 W, reasons: sw_power_cap"
        );
        assert_eq!(Reading::default().describe(), "");
    }
}
