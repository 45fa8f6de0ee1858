//! Device selection: `--device cpu|cuda|auto`.
//!
//! The whole code base is device-agnostic (tensors are created on the device a stage is given); only CPU
//! runs are tested here, since the development machines have no GPU.

use anyhow::{bail, Result};
use tch::Device;

/// Resolves a device name. `auto` picks the first CUDA device when there is one, else the CPU; asking
/// for `cuda` where none is available is an error.
pub fn resolve(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available()),
        "cuda" => {
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                bail!("--device cuda was asked for but no CUDA device is available (use --device cpu or auto)")
            }
        }
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) if tch::Cuda::is_available() && i < tch::Cuda::device_count() as usize => {
                Ok(Device::Cuda(i))
            }
            Some(Ok(i)) => bail!(
                "--device cuda:{i} was asked for but only {} CUDA device(s) are available",
                tch::Cuda::device_count()
            ),
            _ => bail!("unknown device '{other}': use cpu, cuda, cuda:N or auto"),
        },
    }
}

/// Sets libtorch's intra-op thread count (and a single inter-op thread) and the size of rayon's pool.
/// libtorch's OpenMP threads collapse when cores are oversubscribed, so every command sets this
/// explicitly.
pub fn set_threads(n: usize) {
    let n = n.max(1);
    flush_denormals();
    tch::set_num_threads(n as i32);
    tch::set_num_interop_threads(1);
    // rayon steps batches of costly real environments in parallel (`w4rl_envs::steps_in_parallel`):
    // the same number of threads as libtorch's, each with the same subnormal handling. Building the
    // global pool fails only when it exists already (a second call in one process), which keeps it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .start_handler(|_| flush_denormals())
        .build_global();
}

/// Makes the CPU treat subnormal floats as zero (the FTZ and DAZ bits of x86-64's MXCSR, what
/// `torch.set_flush_denormal(True)` does). Training drives some weights, Adam moments and gradients into
/// the subnormal range, where every x86 arithmetic operation takes about a hundred times longer:
/// measured on `train bc` (slide-handle, 6000 steps), the step rate fell from 27/s to 8/s after 3000
/// steps without it. MXCSR is per thread and new threads inherit it, so this runs before libtorch
/// starts its thread pool (see [`set_threads`]). No effect on other architectures.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    #[allow(deprecated)]
    // `_mm_setcsr` is deprecated in favour of inline assembly, with the same effect
    // SAFETY: setting MXCSR's FTZ (bit 15) and DAZ (bit 6) changes only how subnormals are rounded.
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | 0x8040);
    }
}

/// Whether the CPU computes bfloat16 natively (x86-64 with AVX-512 BF16 or AMX-BF16, read from
/// Linux's `/proc/cpuinfo`). `None` where that cannot be told (other systems); elsewhere libtorch
/// emulates bfloat16 and it is slower than f32.
pub fn cpu_has_native_bf16() -> Option<bool> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = info.lines().find(|l| l.starts_with("flags"))?;
    Some(
        flags
            .split_whitespace()
            .any(|f| f == "avx512_bf16" || f == "amx_bf16"),
    )
}

/// The machine's core count, the default for `--threads`.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(resolve("cpu").unwrap(), Device::Cpu);
        assert!(resolve("tpu").is_err());
        if !tch::Cuda::is_available() {
            let err = resolve("cuda").unwrap_err().to_string();
            assert!(err.contains("no CUDA device"), "{err}");
            assert_eq!(resolve("auto").unwrap(), Device::Cpu);
        }
    }
}
