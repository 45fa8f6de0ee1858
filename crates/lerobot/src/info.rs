//! `meta/info.json`: the format version, the frame rate and the features of a LeRobot dataset.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The two on-disk layouts world4rl reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `v2.0` / `v2.1`: one parquet and one mp4 per episode, `meta/episodes.jsonl`, `meta/tasks.jsonl`.
    V2,
    /// `v3.x`: many episodes per parquet and mp4, `meta/episodes/*/*.parquet`, `meta/tasks.parquet`.
    V3,
}

/// One entry of `features`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    /// `image`, `video`, `float32`, `float64`, `int64`, `bool`, `string`, ...
    pub dtype: String,
    /// Shape as written (images: usually `[height, width, channels]`).
    pub shape: Vec<usize>,
    /// Free-form names (list, map or null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<serde_json::Value>,
    /// Video stream facts (`video.height`, `video.codec`, ...), for video features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

impl Feature {
    /// True for camera features (`image` or `video`).
    pub fn is_camera(&self) -> bool {
        self.dtype == "image" || self.dtype == "video"
    }

    /// Number of scalar values per frame for a numeric feature.
    pub fn numel(&self) -> usize {
        self.shape.iter().product::<usize>().max(1)
    }
}

/// The parts of `meta/info.json` the importer needs.
#[derive(Clone, Debug)]
pub struct Info {
    /// `codebase_version` as written (`v2.1`, `v3.0`, ...).
    pub version: String,
    /// Which layout that version uses.
    pub layout: Layout,
    /// Frames per second.
    pub fps: f64,
    /// Episodes the dataset says it holds.
    pub total_episodes: usize,
    /// Frames (rows) the dataset says it holds.
    pub total_frames: usize,
    /// Episodes per chunk folder (v2: names the chunk of an episode).
    pub chunks_size: usize,
    /// Data file template (`data/chunk-{...}/...parquet`).
    pub data_path: Option<String>,
    /// Video file template, when the dataset has video features.
    pub video_path: Option<String>,
    /// Every feature by name, in name order.
    pub features: BTreeMap<String, Feature>,
}

#[derive(Deserialize)]
struct RawInfo {
    codebase_version: Option<String>,
    fps: Option<f64>,
    total_episodes: Option<usize>,
    total_frames: Option<usize>,
    chunks_size: Option<usize>,
    data_path: Option<String>,
    video_path: Option<String>,
    features: Option<BTreeMap<String, Feature>>,
}

impl Info {
    /// Reads and checks `ROOT/meta/info.json`.
    pub fn read(root: &Path) -> Result<Self> {
        let path = root.join("meta").join("info.json");
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {}: is {} a LeRobot dataset folder?",
                path.display(),
                root.display()
            )
        })?;
        let raw: RawInfo = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid LeRobot info JSON", path.display()))?;
        let Some(version) = raw.codebase_version else {
            bail!(
                "{} has no codebase_version: world4rl reads LeRobot datasets of format v2.1 and v3.0",
                path.display()
            );
        };
        let layout = match version.as_str() {
            "v2.0" | "v2.1" => Layout::V2,
            v if v.starts_with("v3.") => Layout::V3,
            v => bail!(
                "{} says codebase_version {v}: world4rl reads LeRobot formats v2.0, v2.1 and v3.x only \
                 (convert older datasets with lerobot's conversion scripts first)",
                path.display()
            ),
        };
        let missing = |what: &str| anyhow::anyhow!("{} has no '{what}' field", path.display());
        let fps = raw.fps.ok_or_else(|| missing("fps"))?;
        if !(fps.is_finite() && fps > 0.0) {
            bail!("{} gives fps {fps}: it must be positive", path.display());
        }
        let features = raw.features.ok_or_else(|| missing("features"))?;
        if features.values().any(|f| f.dtype == "video") && raw.video_path.is_none() {
            bail!(
                "{} has video features but no video_path template",
                path.display()
            );
        }
        Ok(Info {
            version,
            layout,
            fps,
            total_episodes: raw
                .total_episodes
                .ok_or_else(|| missing("total_episodes"))?,
            total_frames: raw.total_frames.ok_or_else(|| missing("total_frames"))?,
            chunks_size: raw.chunks_size.unwrap_or(1000).max(1),
            data_path: raw.data_path,
            video_path: raw.video_path,
            features,
        })
    }

    /// The feature `name`, or an error listing the features the dataset has.
    pub fn feature(&self, name: &str, what: &str) -> Result<&Feature> {
        self.features.get(name).with_context(|| {
            format!(
                "the {what} '{name}' is not a feature of this dataset (meta/info.json lists: {})",
                self.features.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// Camera feature names (`image` and `video` dtypes).
    pub fn cameras(&self) -> Vec<&str> {
        self.features
            .iter()
            .filter(|(_, f)| f.is_camera())
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// Fills a LeRobot path template such as `videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4`.
/// Supports `{name}` and `{name:0Nd}` placeholders.
pub fn fill_template(template: &str, values: &[(&str, TemplateValue<'_>)]) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .with_context(|| format!("unclosed '{{' in the path template '{template}'"))?
            + open;
        let spec = &rest[open + 1..close];
        let (name, fmt) = match spec.split_once(':') {
            Some((n, f)) => (n, Some(f)),
            None => (spec, None),
        };
        let value = values
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
            .with_context(|| {
                format!("unknown placeholder {{{name}}} in the path template '{template}'")
            })?;
        match (value, fmt) {
            (TemplateValue::Str(s), _) => out.push_str(s),
            (TemplateValue::Int(i), None) => out.push_str(&i.to_string()),
            (TemplateValue::Int(i), Some(f)) => {
                let width: usize = f
                    .strip_prefix('0')
                    .and_then(|w| w.strip_suffix('d'))
                    .and_then(|w| w.parse().ok())
                    .with_context(|| {
                        format!("unsupported format '{f}' in the path template '{template}'")
                    })?;
                out.push_str(&format!("{i:0width$}"));
            }
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A value substituted into a path template.
#[derive(Clone, Copy, Debug)]
pub enum TemplateValue<'a> {
    /// A number (`{chunk_index:03d}`).
    Int(usize),
    /// A string (`{video_key}`).
    Str(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_like_python_format() {
        let s = fill_template(
            "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            &[
                ("video_key", TemplateValue::Str("observation.images.top")),
                ("chunk_index", TemplateValue::Int(2)),
                ("file_index", TemplateValue::Int(17)),
            ],
        )
        .unwrap();
        assert_eq!(s, "videos/observation.images.top/chunk-002/file-017.mp4");
        let s = fill_template(
            "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            &[
                ("episode_chunk", TemplateValue::Int(0)),
                ("episode_index", TemplateValue::Int(42)),
            ],
        )
        .unwrap();
        assert_eq!(s, "data/chunk-000/episode_000042.parquet");
        assert!(fill_template("a/{nope}.mp4", &[]).is_err());
        assert!(fill_template("a/{x:3x}.mp4", &[("x", TemplateValue::Int(1))]).is_err());
    }
}
