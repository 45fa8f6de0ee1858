//! `world4rl data import-lerobot`: a LeRobot dataset (format v3.0 or v2.1, a local folder) into a
//! world4rl episode dataset.
//!
//! Alignment. A LeRobot episode of `N` rows holds, per row `t`, the observation of frame `t`, the
//! action taken from it and the `next.*` values that action produced. A world4rl episode of `T` steps
//! holds `T + 1` frames and `T` actions. So the import keeps the `N` frames and the first `N - 1`
//! actions (the last action's resulting frame is not in the dataset); `success[t + 1]` and
//! `rewards[t]` come from row `t`, and the success flag after the last action is given to the last
//! frame. World4rl's own export writes a last row holding the final frame, so a world4rl → LeRobot →
//! world4rl round trip gives back every frame, action, reward and success flag after the first frame.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use w4rl_data::{DatasetSpec, DatasetWriter, Episode, EpisodeKind};

use crate::frames::{decode_image, decode_video, ffmpeg_program, VideoFrames};
use crate::info::Info;
pub use crate::plan::SuccessSource;
use crate::plan::{plan, Plan};
use crate::source::{episode_refs, read_episode_rows, read_tasks, EpisodeRef, EpisodeRows};

/// What to import and how.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Camera feature (`observation.images.KEY`); default: the dataset's only camera.
    pub camera: Option<String>,
    /// Side of world4rl's square frames (frames are centre-cropped to a square, then resized).
    pub size: usize,
    /// Low-dim state feature; default `observation.state` when present. Ignored with `no_state`.
    pub state: Option<String>,
    /// Import no state even when the dataset has one.
    pub no_state: bool,
    /// Action feature. Default `action`.
    pub action: String,
    /// Where success comes from.
    pub success: SuccessSource,
    /// Only these tasks (LeRobot task strings or their world4rl names); empty = all.
    pub tasks: Vec<String>,
    /// Episode kind recorded for every imported episode. Default expert (the paper's D_exp).
    pub kind: EpisodeKind,
    /// Suite name written into the dataset. Default `lerobot`.
    pub suite: String,
    /// Only LeRobot episodes `start..end`.
    pub episodes: Option<(usize, usize)>,
    /// Action bounds; default: the imported actions' minimum and maximum per dimension.
    pub action_low: Option<Vec<f32>>,
    /// See `action_low`.
    pub action_high: Option<Vec<f32>>,
}

impl ImportOptions {
    /// Checks the settings before anything is read.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (8..=1024).contains(&self.size),
            "--size {} is outside 8..=1024 pixels",
            self.size
        );
        Ok(())
    }
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            camera: None,
            size: 64,
            state: None,
            no_state: false,
            action: "action".into(),
            success: SuccessSource::Auto,
            tasks: Vec::new(),
            kind: EpisodeKind::Expert,
            suite: "lerobot".into(),
            episodes: None,
            action_low: None,
            action_high: None,
        }
    }
}

/// What an import did; also written to `OUT/lerobot_import.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    /// The LeRobot folder.
    pub source: PathBuf,
    /// Its `codebase_version`.
    pub codebase_version: String,
    /// Camera feature imported as the frames.
    pub camera: String,
    /// Whether that camera was stored as video.
    pub video: bool,
    /// Frame side.
    pub image_size: usize,
    /// State feature imported, if any.
    pub state: Option<String>,
    /// Action feature imported.
    pub action: String,
    /// Where the success flags came from.
    pub success: String,
    /// LeRobot task string → world4rl task name.
    pub tasks: BTreeMap<String, String>,
    /// Episodes written (already present ones included).
    pub episodes: usize,
    /// Episodes already in the output from an earlier, interrupted import.
    pub skipped: usize,
    /// Steps written (world4rl steps: rows minus one per episode).
    pub steps: usize,
    /// Imported episodes with at least one successful frame.
    pub successful_episodes: usize,
    /// Action bounds written into the dataset spec.
    pub action_low: Vec<f32>,
    /// See `action_low`.
    pub action_high: Vec<f32>,
}

/// world4rl's name of a LeRobot task string: lowercase, runs of other characters turned into '-'.
pub fn task_name(task: &str) -> String {
    let mut out = String::new();
    for c in task.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        "task".into()
    } else {
        out
    }
}

/// The episodes of `refs` in the `--episodes A:B` range, when one is given.
fn select_range(refs: Vec<EpisodeRef>, range: Option<(usize, usize)>) -> Result<Vec<EpisodeRef>> {
    let Some((a, b)) = range else {
        return Ok(refs);
    };
    let last = refs.last().map(|r| r.index).unwrap_or(0);
    ensure!(
        a < b && b <= last + 1,
        "--episodes {a}:{b} is outside the data: the dataset holds episodes 0..{}",
        last + 1
    );
    Ok(refs
        .into_iter()
        .filter(|r| (a..b).contains(&r.index))
        .collect())
}

/// Per task index: whether `--task` keeps it (by LeRobot string or world4rl name; none given keeps
/// all). A `--task` the dataset does not have is an error listing its tasks.
fn task_filter(tasks: &[String], names: &[String], wanted: &[String]) -> Result<Vec<bool>> {
    for w in wanted {
        ensure!(
            tasks.iter().zip(names).any(|(t, n)| w == t || w == n),
            "the task '{w}' is not in this dataset (its tasks: {})",
            tasks
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(tasks
        .iter()
        .zip(names)
        .map(|(t, n)| wanted.is_empty() || wanted.iter().any(|w| w == t || w == n))
        .collect())
}

/// The episodes grouped by data file, in order; every data file must exist.
fn group_by_file(refs: &[EpisodeRef]) -> Result<BTreeMap<PathBuf, Vec<EpisodeRef>>> {
    let mut by_file: BTreeMap<PathBuf, Vec<EpisodeRef>> = BTreeMap::new();
    for r in refs {
        by_file
            .entry(r.data_file.clone())
            .or_default()
            .push(r.clone());
    }
    for f in by_file.keys() {
        ensure!(f.is_file(), "the data file {} does not exist", f.display());
    }
    Ok(by_file)
}

/// Pass 1 of the import: every wanted episode's rows without the frames (so the action bounds are
/// known before the dataset spec is written), checked against its metadata.
fn read_rows(
    by_file: &BTreeMap<PathBuf, Vec<EpisodeRef>>,
    plan: &Plan,
    info: &Info,
    n_tasks: usize,
    keep_task: &[bool],
) -> Result<Vec<(EpisodeRef, EpisodeRows)>> {
    let mut episodes = Vec::new();
    for (file, eps) in by_file {
        let wanted: BTreeSet<usize> = eps.iter().map(|e| e.index).collect();
        let mut rows = read_episode_rows(file, plan, info.fps, &wanted, false)?;
        for e in eps {
            let er = rows.remove(&e.index).with_context(|| {
                format!("{} holds no rows of episode {}", file.display(), e.index)
            })?;
            if let Some(l) = e.length {
                ensure!(
                    er.timestamps.len() == l,
                    "episode {} has {} rows in {} but its metadata says {l}",
                    e.index,
                    er.timestamps.len(),
                    file.display()
                );
            }
            ensure!(
                er.task_index < n_tasks,
                "episode {} has task_index {} but the dataset has {n_tasks} tasks",
                e.index,
                er.task_index
            );
            if keep_task[er.task_index] {
                episodes.push((e.clone(), er));
            }
        }
    }
    Ok(episodes)
}

/// The world4rl episode of LeRobot episode `r`: its `n` decoded frames, `n - 1` actions, states,
/// rewards (the reward column, else the success flags) and success flags.
fn build_episode(
    spec: &DatasetSpec,
    (name, kind, index): (&str, EpisodeKind, usize),
    r: &EpisodeRef,
    er: &EpisodeRows,
    frames: &[u8],
    success: &[bool],
) -> Result<Episode> {
    let n = er.timestamps.len();
    let fl = spec.image_size * spec.image_size * 3;
    let (aw, sw) = (spec.action_dim, spec.state_dim);
    let mut ep = Episode::start(
        spec,
        name,
        kind,
        index,
        r.index as u64,
        &frames[..fl],
        &er.states[..sw],
        success[0],
    )?;
    for t in 0..n - 1 {
        let reward = match &er.rewards {
            Some(rw) => rw[t],
            None => success[t + 1] as u8 as f32,
        };
        ep.push(
            &er.actions[t * aw..(t + 1) * aw],
            reward,
            &frames[(t + 1) * fl..(t + 2) * fl],
            &er.states[(t + 1) * sw..(t + 2) * sw],
            success[t + 1],
        )
        .with_context(|| format!("episode {} step {t}", r.index))?;
    }
    Ok(ep)
}

/// Imports `src` into the world4rl dataset `out` (created, or completed when an earlier import into
/// it was interrupted). `progress` is called after each episode with (done, total).
pub fn import(
    src: &Path,
    out: &Path,
    opts: &ImportOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<ImportReport> {
    opts.validate()?;
    let info = Info::read(src)?;
    let plan = plan(&info, opts)?;
    let tasks = read_tasks(src, info.layout)?;
    let refs = episode_refs(src, &info, plan.video.then_some(plan.camera.as_str()))?;
    ensure!(!refs.is_empty(), "{} lists no episodes", src.display());
    let refs = select_range(refs, opts.episodes)?;
    let names: Vec<String> = tasks.iter().map(|t| task_name(t)).collect();
    let keep_task = task_filter(&tasks, &names, &opts.tasks)?;

    let by_file = group_by_file(&refs)?;
    let ffmpeg = plan.video.then(ffmpeg_program).transpose()?;
    // pass 1: the rows without the frames, so the action bounds are known before the spec is written
    let episodes = read_rows(&by_file, &plan, &info, tasks.len(), &keep_task)?;
    ensure!(
        !episodes.is_empty(),
        "no episode of {} matches the chosen tasks and range",
        src.display()
    );
    let (low, high) = action_bounds(&episodes, plan.action.1, opts)?;
    let spec = DatasetSpec {
        suite: opts.suite.clone(),
        image_size: opts.size,
        action_dim: plan.action.1,
        action_low: low.clone(),
        action_high: high.clone(),
        state_dim: plan.state.as_ref().map_or(0, |s| s.1),
        render: w4rl_data::FrameRender::default(),
    };
    let writer = DatasetWriter::create(out, spec.clone())
        .with_context(|| format!("cannot create the world4rl dataset {}", out.display()))?;

    // pass 2: decode frames (images: read again one data file at a time) and write
    let mut per_task: BTreeMap<usize, usize> = BTreeMap::new();
    let mut video: Option<VideoFrames> = None;
    let mut images: Option<(PathBuf, BTreeMap<usize, EpisodeRows>)> = None;
    let (mut written, mut skipped, mut steps, mut successes) = (0, 0, 0, 0);
    let total = episodes.len();
    for (done, (r, er)) in episodes.iter().enumerate() {
        let name = &names[er.task_index];
        let idx = per_task.entry(er.task_index).or_insert(0);
        let index = *idx;
        *idx += 1;
        let n = er.timestamps.len();
        ensure!(
            n >= 2,
            "episode {} has {n} frame(s): at least 2 are needed for one step",
            r.index
        );
        if writer.contains(name, opts.kind, index) {
            skipped += 1;
            written += 1;
            steps += n - 1;
            progress(done + 1, total);
            continue;
        }
        if !plan.video && images.as_ref().is_none_or(|(f, _)| f != &r.data_file) {
            drop(images.take());
            let wanted: BTreeSet<usize> = by_file[&r.data_file].iter().map(|e| e.index).collect();
            let rows = read_episode_rows(&r.data_file, &plan, info.fps, &wanted, true)?;
            images = Some((r.data_file.clone(), rows));
        }
        let encoded = images
            .as_mut()
            .and_then(|(_, m)| m.remove(&r.index))
            .and_then(|e| e.images);
        let frames = episode_frames(
            r,
            er,
            encoded.as_deref(),
            &plan,
            &info,
            opts.size,
            ffmpeg.as_deref(),
            &mut video,
        )?;
        let success = success_flags(er, &plan, n);
        let ep = build_episode(&spec, (name, opts.kind, index), r, er, &frames, &success)?;
        successes += ep.meta.success as usize;
        writer
            .write(&ep)
            .with_context(|| format!("writing episode {} of {}", r.index, src.display()))?;
        written += 1;
        steps += n - 1;
        progress(done + 1, total);
    }
    let report = ImportReport {
        source: src.to_path_buf(),
        codebase_version: info.version.clone(),
        camera: plan.camera.clone(),
        video: plan.video,
        image_size: opts.size,
        state: plan.state.as_ref().map(|s| s.0.clone()),
        action: plan.action.0.clone(),
        success: plan.success.to_string(),
        tasks: episodes
            .iter()
            .map(|(_, e)| (tasks[e.task_index].clone(), names[e.task_index].clone()))
            .collect(),
        episodes: written,
        skipped,
        steps,
        successful_episodes: successes,
        action_low: low,
        action_high: high,
    };
    let text = serde_json::to_string_pretty(&report)?;
    w4rl_data::write_atomic(&out.join("lerobot_import.json"), text.as_bytes())?;
    Ok(report)
}

/// Success flag per world4rl frame (see the module docs for the alignment).
fn success_flags(er: &EpisodeRows, plan: &Plan, n: usize) -> Vec<bool> {
    let mut s = vec![false; n];
    let next: Option<Vec<bool>> = match &plan.success {
        SuccessSource::Column(_) => Some(er.flags.clone()),
        SuccessSource::RewardAbove(t) => er
            .rewards
            .as_ref()
            .map(|r| r.iter().map(|&v| v > *t).collect()),
        SuccessSource::LastFrame | SuccessSource::Auto => None,
    };
    match next {
        Some(next) => {
            s[1..n].copy_from_slice(&next[..n - 1]);
            // the flag after the last action belongs to a frame that is not stored: give it to the last one
            s[n - 1] |= next[n - 1];
        }
        None => s[n - 1] = true,
    }
    s
}

fn action_bounds(
    episodes: &[(EpisodeRef, EpisodeRows)],
    dim: usize,
    opts: &ImportOptions,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut lo = vec![f32::INFINITY; dim];
    let mut hi = vec![f32::NEG_INFINITY; dim];
    for (r, e) in episodes {
        // the last row's action is not imported
        let n = e.timestamps.len().saturating_sub(1);
        for (k, &a) in e.actions[..n * dim].iter().enumerate() {
            ensure!(
                a.is_finite(),
                "episode {} step {} has a non-finite action ({a})",
                r.index,
                k / dim
            );
            lo[k % dim] = lo[k % dim].min(a);
            hi[k % dim] = hi[k % dim].max(a);
        }
    }
    for d in 0..dim {
        if lo[d] >= hi[d] || !lo[d].is_finite() {
            // a constant (or absent) dimension still needs a range
            let c = if lo[d].is_finite() { lo[d] } else { 0.0 };
            lo[d] = c - 1.0;
            hi[d] = c + 1.0;
        }
    }
    let pick = |given: &Option<Vec<f32>>, data: Vec<f32>, name: &str| -> Result<Vec<f32>> {
        match given {
            Some(v) => {
                ensure!(
                    v.len() == dim,
                    "{name} has {} values but the action has {dim} dimensions",
                    v.len()
                );
                Ok(v.clone())
            }
            None => Ok(data),
        }
    };
    let low = pick(&opts.action_low, lo, "--action-low")?;
    let high = pick(&opts.action_high, hi, "--action-high")?;
    Ok((low, high))
}

/// The episode's frames, `n × size × size × 3` bytes.
#[allow(clippy::too_many_arguments)]
fn episode_frames(
    r: &EpisodeRef,
    er: &EpisodeRows,
    encoded: Option<&[Vec<u8>]>,
    plan: &Plan,
    info: &Info,
    size: usize,
    ffmpeg: Option<&Path>,
    cache: &mut Option<VideoFrames>,
) -> Result<Vec<u8>> {
    let n = er.timestamps.len();
    let mut out = Vec::with_capacity(n * size * size * 3);
    if !plan.video {
        let images = encoded
            .with_context(|| format!("episode {} has no '{}' images", r.index, plan.camera))?;
        ensure!(
            images.len() == n,
            "episode {} has {} '{}' images for {n} rows",
            r.index,
            images.len(),
            plan.camera
        );
        for (t, bytes) in images.iter().enumerate() {
            out.extend(decode_image(
                bytes,
                size,
                &format!("episode {} frame {t} of '{}'", r.index, plan.camera),
            )?);
        }
        return Ok(out);
    }
    let (file, from) = r.video.as_ref().with_context(|| {
        format!(
            "episode {} has no video file for '{}'",
            r.index, plan.camera
        )
    })?;
    if cache.as_ref().is_none_or(|c| &c.path != file) {
        *cache = None;
        *cache = Some(decode_video(
            ffmpeg.expect("ffmpeg is looked up for video cameras"),
            file,
            size,
            plan.camera_hw,
        )?);
    }
    let v = cache.as_ref().expect("decoded above");
    for (t, ts) in er.timestamps.iter().enumerate() {
        let k = ((from + ts) * info.fps).round();
        ensure!(
            k >= 0.0 && (k as usize) < v.count(),
            "episode {} frame {t} is at {:.3} s of {}, past its {} frames",
            r.index,
            from + ts,
            file.display(),
            v.count()
        );
        out.extend_from_slice(v.frame(k as usize));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_are_slugs() {
        assert_eq!(task_name("Pick the red cube!"), "pick-the-red-cube");
        assert_eq!(task_name("  push/the  ball "), "push-the-ball");
        assert_eq!(task_name("???"), "task");
    }

    #[test]
    fn success_sources_parse() {
        assert_eq!(
            "last".parse::<SuccessSource>().unwrap(),
            SuccessSource::LastFrame
        );
        assert_eq!(
            "reward>0.5".parse::<SuccessSource>().unwrap(),
            SuccessSource::RewardAbove(0.5)
        );
        assert_eq!(
            "next.success".parse::<SuccessSource>().unwrap(),
            SuccessSource::Column("next.success".into())
        );
        assert!("reward>x".parse::<SuccessSource>().is_err());
        assert!("".parse::<SuccessSource>().is_err());
    }
}
