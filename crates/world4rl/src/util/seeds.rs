//! Seed streams, in three disjoint sets (World4RL's evaluation protocol, `docs/evaluation.md`):
//!
//! * **training** seeds (top bit 0): every collected episode, so every scene a learner sees;
//! * **validation** seeds (top bits `10`): every choice made on real success (BC's checkpoint and
//!   action mode, the refined policy's action mode, any setting tuned by hand);
//! * **test** seeds (top bits `11`): the reported numbers only, never a choice.
//!
//! The sets are disjoint by construction (their top bits differ), so no validation or test scene can
//! reach a learner, and no test scene can decide a setting.

use w4rl_data::EpisodeKind;

/// SplitMix64 finaliser: a well-mixed 64-bit hash of a 64-bit input.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Reset seed of collected episode `index` of (`task`, `kind`) under experiment seed `base`.
/// Always has the top bit clear.
pub fn collect_seed(base: u64, task: &str, kind: EpisodeKind, index: usize) -> u64 {
    let k = kind as u64 + 1;
    mix(mix(mix(base) ^ hash_str(task)) ^ (k << 40) ^ index as u64) >> 1
}

/// Base seed of the held-out policy rollouts (the outcome check's yardstick): used in place of the
/// experiment seed `base` in [`collect_seed`], so their initial states are drawn from a stream no
/// training episode uses (the collision odds of two 63-bit hashes are negligible; the first
/// thousands are checked in the tests).
pub fn heldout_base(base: u64) -> u64 {
    mix(base ^ 0x4E1D_0075_C0DE)
}

/// The two sets of evaluation seeds: the one choices are made on and the one results are reported on.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Seeds every choice is made on (checkpoints, action modes, settings).
    #[default]
    Validation,
    /// Seeds only reported numbers are measured on.
    Test,
}

impl Split {
    /// `validation` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }

    /// The top two bits of this split's seeds.
    fn tag(self) -> u64 {
        match self {
            Split::Validation => 0b10 << 62,
            Split::Test => 0b11 << 62,
        }
    }

    /// The split a reset seed belongs to (`None`: a training seed).
    pub fn of_seed(seed: u64) -> Option<Split> {
        match seed >> 62 {
            0b10 => Some(Split::Validation),
            0b11 => Some(Split::Test),
            _ => None,
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "validation" => Ok(Split::Validation),
            "test" => Ok(Split::Test),
            other => Err(format!(
                "unknown seed set '{other}'; the sets are validation and test"
            )),
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Refuses an episode reset with a validation or test seed: evaluation scenes never reach a learner.
pub fn ensure_training_seed(seed: u64, what: &str) -> anyhow::Result<()> {
    match Split::of_seed(seed) {
        None => Ok(()),
        Some(split) => anyhow::bail!(
            "{what} was reset with a {split} seed ({seed:#x}); {split} scenes must never be trained on (is this an evaluation recording?)"
        ),
    }
}

/// Reset seed of evaluation episode `index` of `task` in `split` (its top two bits say the split;
/// training seeds never have the top bit set).
pub fn eval_seed(base: u64, split: Split, task: &str, index: usize) -> u64 {
    let stream = match split {
        Split::Validation => 0x5EED,
        Split::Test => 0x7E57_5EED,
    };
    split.tag() | (mix(mix(base ^ stream) ^ hash_str(task) ^ index as u64) >> 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for kind in EpisodeKind::ALL {
            for i in 0..2000 {
                let s = collect_seed(0, "push-t", kind, i);
                assert!(s >> 63 == 0 && Split::of_seed(s).is_none());
                assert!(seen.insert(s));
            }
        }
        for split in [Split::Validation, Split::Test] {
            for i in 0..2000 {
                let s = eval_seed(0, split, "push-t", i);
                assert_eq!(Split::of_seed(s), Some(split));
                assert!(seen.insert(s));
            }
        }
        // held-out rollouts: a stream of their own, disjoint from training and evaluation seeds
        for i in 0..2000 {
            let s = collect_seed(heldout_base(0), "push-t", EpisodeKind::Policy, i);
            assert!(seen.insert(s), "held-out seed {i} collides");
        }
        assert_ne!(
            collect_seed(0, "a", EpisodeKind::Expert, 0),
            collect_seed(1, "a", EpisodeKind::Expert, 0)
        );
    }
}
