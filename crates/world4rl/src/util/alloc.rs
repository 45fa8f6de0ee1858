//! How the C allocator hands memory to libtorch.
//!
//! libtorch allocates every intermediate tensor with the C library's `posix_memalign` and frees it
//! right after use. With glibc's defaults, a block above the *mmap threshold* (128 KiB at first,
//! raised dynamically as large blocks are freed) is a fresh `mmap` of zeroed pages, given back with
//! `munmap` when freed; a U-Net activation of a batch is 1-17 MB, so every layer of every forward pass
//! faults its output pages in anew. Profiled on the 64 px world model (`perf record` on
//! `examples/imagine_bench --preset wm64`, 2-core Intel Xeon), 30 % of an imagination step was the
//! kernel zeroing and mapping those pages.
//!
//! [`keep_freed_memory`] raises the mmap threshold to glibc's maximum (32 MiB) and the trim threshold to
//! 1 GiB, so freed blocks stay in the heap and the next tensor of the same size reuses them (what
//! PyTorch's CPU performance guide obtains by preloading jemalloc or tcmalloc). Only where memory
//! comes from changes: every computation and its rounding are the same, and peak memory stays what
//! the largest working set needs. `WORLD4RL_MALLOC=system` keeps glibc's defaults.

/// glibc's largest accepted mmap threshold on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`).
pub const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of the heap is returned to the system only above this.
pub const TRIM_THRESHOLD: i32 = 1 << 30;

/// The environment variable that chooses the setting: unset, empty or `kept` applies it, `system`
/// keeps the C library's defaults; any other value is refused.
pub const ENV_VAR: &str = "WORLD4RL_MALLOC";

/// Which allocator tuning is in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malloc {
    /// Freed blocks stay in the heap for reuse (the thresholds above).
    Kept,
    /// The C library's defaults (`WORLD4RL_MALLOC=system`, or a C library other than glibc).
    System,
}

impl Malloc {
    /// The label benchmarks and manifests record (`kept` or `system`).
    pub const fn label(self) -> &'static str {
        match self {
            Self::Kept => "kept",
            Self::System => "system",
        }
    }

    /// The setting `WORLD4RL_MALLOC`'s value asks for (`None`: unset).
    pub fn requested(value: Option<&str>) -> Result<Self, UnknownMalloc> {
        match value.map(str::trim) {
            None | Some("") | Some("kept") => Ok(Self::Kept),
            Some("system") => Ok(Self::System),
            Some(other) => Err(UnknownMalloc(other.to_string())),
        }
    }
}

/// `WORLD4RL_MALLOC` holds a value that names no setting.
#[derive(Debug, thiserror::Error)]
#[error("{ENV_VAR}={0:?} is not a setting: use `kept` (the default: freed tensor memory is reused) or `system` (the C library's defaults)")]
pub struct UnknownMalloc(pub String);

/// Applies the settings above unless `WORLD4RL_MALLOC=system`; call it once, before the first tensor.
/// Returns the setting in force ([`Malloc::System`] on a C library other than glibc, where nothing
/// changes), or an error when `WORLD4RL_MALLOC` names no setting.
pub fn keep_freed_memory() -> Result<Malloc, UnknownMalloc> {
    let value = std::env::var(ENV_VAR).ok();
    match Malloc::requested(value.as_deref())? {
        Malloc::System => Ok(Malloc::System),
        Malloc::Kept if set_thresholds() => Ok(Malloc::Kept),
        Malloc::Kept => Ok(Malloc::System),
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> bool {
    // SAFETY: mallopt only changes the allocator's tuning parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_names_a_setting_or_is_refused() {
        assert_eq!(Malloc::requested(None).unwrap(), Malloc::Kept);
        assert_eq!(Malloc::requested(Some("")).unwrap(), Malloc::Kept);
        assert_eq!(Malloc::requested(Some("kept")).unwrap(), Malloc::Kept);
        assert_eq!(Malloc::requested(Some("system")).unwrap(), Malloc::System);
        let e = Malloc::requested(Some("jemalloc")).unwrap_err().to_string();
        assert!(
            e.contains("WORLD4RL_MALLOC") && e.contains("jemalloc"),
            "{e}"
        );
        assert!(e.contains("system"), "{e}");
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_thresholds_and_tensors_still_compute() {
        // glibc refuses an mmap threshold above its maximum: the constant must be accepted
        assert!(set_thresholds(), "glibc refused the allocator settings");
        let a = tch::Tensor::ones([64, 64, 64, 64], (tch::Kind::Float, tch::Device::Cpu));
        for _ in 0..3 {
            let b = &a * 2.0 + 1.0;
            assert_eq!(
                b.sum(tch::Kind::Double).double_value(&[]),
                3.0 * 64f64.powi(4)
            );
        }
    }
}
