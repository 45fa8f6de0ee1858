//! Policy export for Python (`world4rl export policy`): a LeRobot-style policy folder that plain PyTorch
//! loads without world4rl.
//!
//! * `config.json`: `type = "world4rl_gaussian"`, LeRobot's `input_features` / `output_features` (type and
//!   shape of `observation.image`, `observation.state` and `action`), the architecture, the frame sizes,
//!   the action box and the σ bounds;
//! * `model.safetensors`: the weights only, under the policy's own variable names;
//! * `world4rl_policy.py`: a `torch`-only module that rebuilds the network, reproduces world4rl's frame
//!   preprocessing (area reduction to the policy's size, 8-bit rounding, frame stacking) and returns the
//!   mean action in environment units from `select_action` (tested against the Rust policy).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::gaussian::GaussianPolicy;
use crate::util::checkpoint;

/// The Python module written into every export.
pub const PYTHON_MODULE: &str = include_str!("../../python/world4rl_policy.py");

/// The files of an export folder.
pub const FILES: [&str; 3] = ["config.json", "model.safetensors", "world4rl_policy.py"];

/// What [`export_policy`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ExportSummary {
    /// The folder.
    pub dir: PathBuf,
    /// Weight tensors written.
    pub tensors: usize,
    /// Scalars in them.
    pub parameters: i64,
}

/// The `config.json` of an export.
pub fn export_config(policy: &GaussianPolicy, source: &Path) -> serde_json::Value {
    let (cfg, spec) = (policy.config(), policy.spec());
    let strides: Vec<i64> = (0..cfg.encoder.channels.len())
        .map(|i| cfg.encoder.stride(i))
        .collect();
    let render = spec.render_size();
    let mut inputs = serde_json::Map::new();
    if cfg.use_image {
        inputs.insert(
            "observation.image".into(),
            serde_json::json!({"type": "VISUAL", "shape": [3, render, render]}),
        );
    }
    if cfg.use_state {
        inputs.insert(
            "observation.state".into(),
            serde_json::json!({"type": "STATE", "shape": [spec.state_dim]}),
        );
    }
    let (lo, hi) = policy.std_bounds();
    let mut config = serde_json::json!({
        "type": "world4rl_gaussian",
        "world4rl_version": env!("CARGO_PKG_VERSION"),
        "task": spec.task,
        "source": source,
        "input_features": inputs,
        "output_features": {"action": {"type": "ACTION", "shape": [spec.action_dim]}},
        "image_size": spec.image_size,
        "render_size": render,
        "frame_stack": cfg.frame_stack,
        "use_image": cfg.use_image,
        "use_state": cfg.use_state,
        "state_dim": spec.state_dim,
        "encoder": {
            "channels": cfg.encoder.channels,
            "strides": strides,
            "spatial_softmax": cfg.encoder.spatial_softmax,
            "pool": cfg.encoder.pool,
            "features": cfg.encoder.features,
        },
        "hidden": cfg.hidden,
        "action_low": spec.action_low,
        "action_high": spec.action_high,
        "std_bounds": [lo, hi],
    });
    if let Some(scale) = policy.residual_scale() {
        config["residual"] = serde_json::json!({"scale": scale});
    }
    config
}

/// Writes the export of `policy` (loaded from `source`) into `out` (created when missing). A folder
/// holding anything but the files of an earlier export is refused, so nothing of the user's is
/// overwritten; every file is written atomically.
pub fn export_policy(policy: &GaussianPolicy, source: &Path, out: &Path) -> Result<ExportSummary> {
    if out.exists() {
        if !out.is_dir() {
            bail!("{} exists and is not a folder", out.display());
        }
        let foreign: Vec<String> = std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !FILES.contains(&n.as_str()))
            .collect();
        if !foreign.is_empty() {
            bail!(
                "{} already holds other files ({}); export into a new or empty folder",
                out.display(),
                foreign.join(", ")
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let tensors = checkpoint::varstore_tensors(policy.var_store(), "");
    let parameters = tensors.iter().map(|(_, t)| t.numel() as i64).sum();
    checkpoint::save_tensors(
        &out.join("model.safetensors"),
        &tensors,
        &serde_json::json!({"kind": "world4rl-policy-weights"}),
    )?;
    let config = serde_json::to_vec_pretty(&export_config(policy, source))?;
    w4rl_data::write_atomic(&out.join("config.json"), &config)?;
    w4rl_data::write_atomic(&out.join("world4rl_policy.py"), PYTHON_MODULE.as_bytes())?;
    Ok(ExportSummary {
        dir: out.to_path_buf(),
        tensors: tensors.len(),
        parameters,
    })
}
