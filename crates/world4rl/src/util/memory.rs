//! The process's peak resident memory, per stage.
//!
//! Linux keeps a process's peak resident set size as `VmHWM` in `/proc/self/status` and resets it
//! to the current size when `5` is written to `/proc/self/clear_refs`. A stage resets it when it
//! starts and reads it when it ends, so its `done.json` records the most memory the process held
//! while that stage ran (tensors the allocator kept from an earlier stage of the same process
//! included: that is what the machine had to provide). Elsewhere both calls do nothing.

/// Resets the peak to the current resident size; false where the kernel does not offer it.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The peak resident memory since the process started or the last [`reset_peak`], in MiB.
pub fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_hwm_mib(&status)
}

/// `VmHWM` of a `/proc/<pid>/status` text, in MiB.
fn vm_hwm_mib(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut words = line["VmHWM:".len()..].split_whitespace();
    let kib: f64 = words.next()?.parse().ok()?;
    (words.next()? == "kB").then_some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_status_line() {
        let status =
            "Name:\tworld4rl\nVmPeak:\t 2048000 kB\nVmHWM:\t  524288 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(vm_hwm_mib(status), Some(512.0));
        assert_eq!(vm_hwm_mib("VmRSS:\t 1024 kB\n"), None);
        assert_eq!(vm_hwm_mib("VmHWM:\t 1024 pages\n"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_touched_buffer_shows_in_the_peak() {
        let before = peak_mib().expect("VmHWM on Linux");
        // 256 MiB, every page written so it is resident
        let buf = vec![1u8; 256 << 20];
        assert_eq!(
            buf.iter().step_by(4096).map(|&b| b as usize).sum::<usize>(),
            (256 << 20) / 4096
        );
        let during = peak_mib().unwrap();
        assert!(
            during >= 250.0 && during >= before,
            "peak {during} MiB with 256 MiB resident"
        );
        drop(buf);
        assert!(reset_peak(), "/proc/self/clear_refs refused the reset");
        assert!(peak_mib().is_some());
    }
}
