//! What an import takes from a LeRobot dataset: the camera, the state and action features and the
//! source of the success flags, resolved against the dataset's `info.json`.

use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};

use crate::import::ImportOptions;
use crate::info::Info;

/// Where an episode's success flags come from.
#[derive(Clone, Debug, PartialEq)]
pub enum SuccessSource {
    /// `next.success` when the dataset has it, else an error asking for one of the others.
    Auto,
    /// A flag column (`next.success`, `next.is_success`, ...).
    Column(String),
    /// `next.reward` strictly above this threshold.
    RewardAbove(f32),
    /// Only the last frame of each episode is a success (every episode a successful demonstration).
    LastFrame,
}

impl FromStr for SuccessSource {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "auto" {
            return Ok(SuccessSource::Auto);
        }
        if s == "last" {
            return Ok(SuccessSource::LastFrame);
        }
        if let Some(t) = s.strip_prefix("reward>") {
            let t: f32 = t.trim().parse().with_context(|| {
                format!("--success '{s}': expected reward>NUMBER, e.g. reward>0.5")
            })?;
            ensure!(
                t.is_finite(),
                "--success '{s}': the threshold must be finite"
            );
            return Ok(SuccessSource::RewardAbove(t));
        }
        ensure!(
            !s.is_empty(),
            "--success is empty: give a column name, reward>X, last or auto"
        );
        Ok(SuccessSource::Column(s.to_string()))
    }
}

impl std::fmt::Display for SuccessSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SuccessSource::Auto => f.write_str("auto"),
            SuccessSource::Column(c) => f.write_str(c),
            SuccessSource::RewardAbove(t) => write!(f, "reward>{t}"),
            SuccessSource::LastFrame => f.write_str("last"),
        }
    }
}

/// Resolved feature choices.
pub(crate) struct Plan {
    pub(crate) camera: String,
    pub(crate) video: bool,
    pub(crate) camera_hw: Option<(usize, usize)>,
    pub(crate) state: Option<(String, usize)>,
    pub(crate) action: (String, usize),
    pub(crate) success: SuccessSource,
    pub(crate) reward: Option<String>,
}

pub(crate) fn plan(info: &Info, opts: &ImportOptions) -> Result<Plan> {
    let camera = match &opts.camera {
        Some(c) => {
            let f = info.feature(c, "camera")?;
            ensure!(
                f.is_camera(),
                "'{c}' is a {} feature, not a camera (cameras: {})",
                f.dtype,
                info.cameras().join(", ")
            );
            c.clone()
        }
        None => match info.cameras().as_slice() {
            [one] => one.to_string(),
            [] => bail!(
                "the dataset has no image or video feature: world4rl learns from camera frames"
            ),
            many => bail!(
                "the dataset has {} cameras ({}): choose one with --camera",
                many.len(),
                many.join(", ")
            ),
        },
    };
    let cf = &info.features[&camera];
    let camera_hw = camera_hw(cf);
    let state = if opts.no_state {
        None
    } else {
        match &opts.state {
            Some(s) => Some((s.clone(), info.feature(s, "state")?.numel())),
            None => info
                .features
                .get("observation.state")
                .map(|f| ("observation.state".to_string(), f.numel())),
        }
    };
    let af = info.feature(&opts.action, "action")?;
    ensure!(
        !af.is_camera(),
        "the action '{}' is a camera feature",
        opts.action
    );
    let success = match &opts.success {
        SuccessSource::Auto => {
            if info.features.contains_key("next.success") {
                SuccessSource::Column("next.success".into())
            } else {
                bail!(
                    "the dataset has no next.success feature: say where success comes from with --success \
                     COLUMN, --success 'reward>X' or --success last (every episode succeeds at its end)"
                )
            }
        }
        SuccessSource::Column(c) => {
            info.feature(c, "success column")?;
            SuccessSource::Column(c.clone())
        }
        SuccessSource::RewardAbove(t) => {
            info.feature("next.reward", "reward column")?;
            SuccessSource::RewardAbove(*t)
        }
        SuccessSource::LastFrame => SuccessSource::LastFrame,
    };
    Ok(Plan {
        video: cf.dtype == "video",
        camera,
        camera_hw,
        state,
        action: (opts.action.clone(), af.numel()),
        success,
        reward: info
            .features
            .contains_key("next.reward")
            .then(|| "next.reward".to_string()),
    })
}

/// Height and width of a camera feature from its shape and names (HWC or CHW).
fn camera_hw(f: &crate::info::Feature) -> Option<(usize, usize)> {
    let s = &f.shape;
    if s.len() != 3 {
        return None;
    }
    let names: Vec<String> = f
        .names
        .as_ref()
        .and_then(|n| n.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if names.first().is_some_and(|n| n.starts_with("channel")) || (s[0] == 3 && s[2] != 3) {
        Some((s[1], s[2]))
    } else {
        Some((s[0], s[1]))
    }
}
