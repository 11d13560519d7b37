//! What the device offers: the limits launches are checked against, and the facts prompts and
//! reports show (name, compute capability, SMs, shared memory, registers, L2, clocks, memory).

use super::error::{Call, RuntimeError};
use cudarc::driver::{result, sys};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub ordinal: u32,
    pub name: String,
    /// `(major, minor)`, e.g. `(9, 0)` for H100.
    pub compute_capability: (u32, u32),
    /// `cuDriverGetVersion`: 12040 is CUDA 12.4.
    pub driver_version: u32,
    pub sm_count: u32,
    pub warp_size: u32,
    pub max_threads_per_block: u32,
    pub max_threads_per_sm: u32,
    pub max_blocks_per_sm: u32,
    pub max_block_dim: [u32; 3],
    pub max_grid_dim: [u32; 3],
    /// Shared memory a block gets without opting in (48 KiB on every current GPU).
    pub shared_mem_per_block: u32,
    /// The most a block can opt into (`cudaFuncAttributeMaxDynamicSharedMemorySize`).
    pub shared_mem_per_block_optin: u32,
    pub shared_mem_per_sm: u32,
    /// Shared memory the system reserves per block (counted against the per-SM amount).
    pub reserved_shared_mem_per_block: u32,
    pub registers_per_block: u32,
    pub registers_per_sm: u32,
    pub l2_cache_bytes: u64,
    /// Peak SM clock in kHz (0 where the driver no longer reports it).
    pub sm_clock_khz: u32,
    pub memory_clock_khz: u32,
    pub memory_bus_width_bits: u32,
    pub total_memory_bytes: u64,
    pub cooperative_launch: bool,
    pub cluster_launch: bool,
    /// `00000000:65:00.0`: how NVML finds this same GPU whatever order CUDA and NVML number
    /// devices in (`CUDA_DEVICE_ORDER`, UUIDs in `CUDA_VISIBLE_DEVICES`). `None` for presets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
}

impl DeviceInfo {
    /// `sm_90a`: the NVRTC target for this device ([`crate::nvrtc::Arch::native`]).
    pub fn arch(&self) -> crate::nvrtc::Arch {
        crate::nvrtc::Arch::native(self.compute_capability.0, self.compute_capability.1)
    }

    /// `sm_90`: the device's compute capability as a target name, for keys and logs (which
    /// name the GPU, not the compile target).
    pub fn sm(&self) -> crate::nvrtc::Arch {
        self.arch().generic()
    }

    /// Theoretical DRAM bandwidth from clock and bus width (DDR: two transfers per clock), in
    /// bytes per second; 0 when the driver does not report the clock.
    pub fn theoretical_bandwidth(&self) -> f64 {
        2.0 * self.memory_clock_khz as f64 * 1e3 * self.memory_bus_width_bits as f64 / 8.0
    }

    /// A short line for logs: `NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)`.
    pub fn summary(&self) -> String {
        format!(
            "{} ({}, {} SMs, {:.1} GiB, driver {}.{})",
            self.name,
            self.sm(),
            self.sm_count,
            self.total_memory_bytes as f64 / (1u64 << 30) as f64,
            self.driver_version / 1000,
            (self.driver_version % 1000) / 10
        )
    }
}

pub(crate) fn query(ordinal: u32, dev: sys::CUdevice) -> Result<DeviceInfo, RuntimeError> {
    use sys::CUdevice_attribute as A;
    let attr = |a: A| -> Result<u32, RuntimeError> {
        // SAFETY: `dev` came from cuDeviceGet after cuInit.
        let v = unsafe { result::device::get_attribute(dev, a) }.call("cuDeviceGetAttribute")?;
        Ok(v.max(0) as u32)
    };
    let mut driver_version = 0i32;
    // SAFETY: writes one int.
    unsafe { sys::cuDriverGetVersion(&mut driver_version) }
        .result()
        .call("cuDriverGetVersion")?;
    Ok(DeviceInfo {
        ordinal,
        name: result::device::get_name(dev).call("cuDeviceGetName")?,
        compute_capability: (
            attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        ),
        driver_version: driver_version.max(0) as u32,
        sm_count: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        warp_size: attr(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE)?,
        max_threads_per_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
        max_threads_per_sm: attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)?,
        max_blocks_per_sm: attr(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR)?,
        max_block_dim: [
            attr(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X)?,
            attr(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y)?,
            attr(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z)?,
        ],
        max_grid_dim: [
            attr(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X)?,
            attr(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y)?,
            attr(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z)?,
        ],
        shared_mem_per_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)?,
        shared_mem_per_block_optin: attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?,
        shared_mem_per_sm: attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)?,
        reserved_shared_mem_per_block: attr(
            A::CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK,
        )?,
        registers_per_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK)?,
        registers_per_sm: attr(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR)?,
        l2_cache_bytes: attr(A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)? as u64,
        sm_clock_khz: attr(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE).unwrap_or(0),
        memory_clock_khz: attr(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE).unwrap_or(0),
        memory_bus_width_bits: attr(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)?,
        // SAFETY: as above.
        total_memory_bytes: unsafe { result::device::total_mem(dev) }.call("cuDeviceTotalMem")?
            as u64,
        cooperative_launch: attr(A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH)? != 0,
        cluster_launch: attr(A::CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH).unwrap_or(0) != 0,
        pci_bus_id: pci_bus_id(
            attr(A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID).ok(),
            attr(A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID).ok(),
            attr(A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID).ok(),
        ),
    })
}

/// The bus id in the form `nvidia-smi` prints and `nvmlDeviceGetHandleByPciBusId_v2` accepts
/// (all hexadecimal, function 0: CUDA devices are function 0 of their PCI device).
pub fn pci_bus_id(domain: Option<u32>, bus: Option<u32>, device: Option<u32>) -> Option<String> {
    Some(format!("{:08X}:{:02X}:{:02X}.0", domain?, bus?, device?))
}

/// Devices whose figures `ksmith tasks launches` can assume without a GPU (the driver's own
/// attribute values for those parts).
pub const PRESETS: &[&str] = &["h100", "h200", "a100"];

impl DeviceInfo {
    /// The figures of a known part: `h100` (SXM, 80 GB), `h200` (SXM, 141 GB), `a100` (SXM,
    /// 80 GB). `None` for any other name.
    pub fn preset(name: &str) -> Option<DeviceInfo> {
        let h100 = DeviceInfo {
            ordinal: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            compute_capability: (9, 0),
            driver_version: 12040,
            sm_count: 132,
            warp_size: 32,
            max_threads_per_block: 1024,
            max_threads_per_sm: 2048,
            max_blocks_per_sm: 32,
            max_block_dim: [1024, 1024, 64],
            max_grid_dim: [2147483647, 65535, 65535],
            shared_mem_per_block: 49152,
            shared_mem_per_block_optin: 232448,
            shared_mem_per_sm: 233472,
            reserved_shared_mem_per_block: 1024,
            registers_per_block: 65536,
            registers_per_sm: 65536,
            l2_cache_bytes: 52428800,
            sm_clock_khz: 1980000,
            memory_clock_khz: 2619000,
            memory_bus_width_bits: 5120,
            total_memory_bytes: 85028896768,
            cooperative_launch: true,
            cluster_launch: true,
            pci_bus_id: None,
        };
        match name {
            "h100" => Some(h100),
            // The same SM and limits; more, faster memory.
            "h200" => Some(DeviceInfo {
                name: "NVIDIA H200".into(),
                memory_clock_khz: 3201000,
                memory_bus_width_bits: 6144,
                total_memory_bytes: 150_754_820_096,
                l2_cache_bytes: 52428800,
                ..h100
            }),
            "a100" => Some(DeviceInfo {
                name: "NVIDIA A100-SXM4-80GB".into(),
                compute_capability: (8, 0),
                sm_count: 108,
                shared_mem_per_block_optin: 166912,
                shared_mem_per_sm: 167936,
                l2_cache_bytes: 41943040,
                sm_clock_khz: 1410000,
                memory_clock_khz: 1593000,
                total_memory_bytes: 85_100_000_000,
                cluster_launch: false,
                ..h100
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// H100 SXM's figures, for CPU tests of the launch checks.
    pub fn h100() -> DeviceInfo {
        DeviceInfo::preset("h100").expect("h100 is a preset")
    }

    #[test]
    fn pci_bus_ids_read_as_nvidia_smi_prints_them() {
        assert_eq!(
            pci_bus_id(Some(0), Some(0x65), Some(0)).as_deref(),
            Some("00000000:65:00.0")
        );
        assert_eq!(
            pci_bus_id(Some(0x10), Some(0xc1), Some(0x1f)).as_deref(),
            Some("00000010:C1:1F.0")
        );
        assert_eq!(
            pci_bus_id(Some(0), None, Some(0)),
            None,
            "an attribute unread"
        );
    }

    #[test]
    fn presets_have_their_datasheet_bandwidth() {
        let tb = |n: &str| DeviceInfo::preset(n).unwrap().theoretical_bandwidth() / 1e12;
        // H200 4.8 TB/s, A100 80 GB 2.0 TB/s (datasheets round down).
        assert!((tb("h200") - 4.92).abs() < 0.01, "{}", tb("h200"));
        assert!((tb("a100") - 2.04).abs() < 0.01, "{}", tb("a100"));
        for n in PRESETS {
            assert!(DeviceInfo::preset(n).is_some(), "{n}");
        }
        assert!(DeviceInfo::preset("b200").is_none());
        assert_eq!(
            DeviceInfo::preset("a100").unwrap().arch().to_string(),
            "sm_80"
        );
    }

    #[test]
    fn info_round_trips_and_summarises() {
        let d = h100();
        let json = serde_json::to_string(&d).unwrap();
        let back: DeviceInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert_eq!(d.arch().to_string(), "sm_90a");
        assert_eq!(d.sm().to_string(), "sm_90");
        assert_eq!(
            d.summary(),
            "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.2 GiB, driver 12.4)"
        );
        // 2619 MHz x 5120 bits x 2 / 8 = 3.35 TB/s, H100 SXM's datasheet figure.
        assert!((d.theoretical_bandwidth() / 1e12 - 3.352).abs() < 0.01);
    }
}
