//! Where a stage ran: the CPU, the instruction-set extensions that change libtorch's kernels (and so
//! its rounding), the thread count and the environment variables that force other kernels. Every
//! stage records it in its `done.json`, so a run resumed on another machine says which stage ran
//! where, and a replicate on another CPU kind is stated, not hidden (`docs/evaluation.md`).

use serde::{Deserialize, Serialize};

/// The instruction-set extensions recorded (the ones libtorch, oneDNN and MKL dispatch on).
const FLAGS: [&str; 6] = [
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_bf16",
];

/// The environment variables that force other kernels.
const KERNEL_VARS: [&str; 5] = [
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "OMP_NUM_THREADS",
];

/// A machine, as far as a result can depend on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` of `/proc/cpuinfo` (empty where unknown).
    pub cpu: String,
    /// Which of the recorded extensions the CPU has.
    pub flags: Vec<String>,
    /// libtorch's intra-op threads.
    pub threads: usize,
    /// Kernel-forcing environment variables that were set, as `NAME=value`.
    #[serde(default)]
    pub kernel_env: Vec<String>,
}

impl Machine {
    /// This machine, now.
    pub fn current() -> Machine {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self::from_cpuinfo(
            &info,
            tch::get_num_threads().max(1) as usize,
            KERNEL_VARS
                .iter()
                .filter_map(|v| std::env::var(v).ok().map(|x| format!("{v}={x}")))
                .collect(),
        )
    }

    /// Parses `/proc/cpuinfo`'s text (the first processor's lines).
    pub fn from_cpuinfo(info: &str, threads: usize, kernel_env: Vec<String>) -> Machine {
        let field = |name: &str| {
            info.lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        let flags = field("flags");
        let have: Vec<&str> = flags.split_whitespace().collect();
        Machine {
            cpu: field("model name"),
            flags: FLAGS
                .iter()
                .filter(|f| have.contains(f))
                .map(|f| f.to_string())
                .collect(),
            threads,
            kernel_env,
        }
    }

    /// `AMD EPYC 9B14 (avx2 fma avx512f avx512_bf16), 2 threads`, with forced kernels after it.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} ({}), {} threads",
            if self.cpu.is_empty() {
                "unknown CPU"
            } else {
                &self.cpu
            },
            self.flags.join(" "),
            self.threads
        );
        if !self.kernel_env.is_empty() {
            s.push_str(&format!(", {}", self.kernel_env.join(" ")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_model_and_the_flags_that_change_kernels() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 sha_ni\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9B14\n";
        let m = Machine::from_cpuinfo(info, 2, vec!["MKL_CBWR=COMPATIBLE".into()]);
        assert_eq!(m.cpu, "AMD EPYC 9B14");
        assert_eq!(m.flags, ["avx2", "fma", "avx512f", "avx512_bf16"]);
        assert_eq!(
            m.summary(),
            "AMD EPYC 9B14 (avx2 fma avx512f avx512_bf16), 2 threads, MKL_CBWR=COMPATIBLE"
        );
        let none = Machine::from_cpuinfo("", 1, vec![]);
        assert!(none.cpu.is_empty() && none.flags.is_empty());
        assert!(none.summary().starts_with("unknown CPU"));
    }
}
