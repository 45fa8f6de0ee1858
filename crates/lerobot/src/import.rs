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
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use w4rl_data::{DatasetSpec, DatasetWriter, Episode, EpisodeKind};

use crate::columns::{
    bool_rows, column, f32_rows, i64_rows, image_bytes, read_columns, string_rows,
};
use crate::frames::{decode_image, decode_video, ffmpeg_program, VideoFrames};
use crate::info::{fill_template, Info, Layout, TemplateValue};

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

/// One LeRobot episode: where its rows and its video frames are.
#[derive(Clone, Debug)]
struct EpisodeRef {
    index: usize,
    length: Option<usize>,
    data_file: PathBuf,
    /// (mp4 file, start time of the episode inside it) for a video camera.
    video: Option<(PathBuf, f64)>,
}

/// The task strings by task index.
fn read_tasks(root: &Path, layout: Layout) -> Result<Vec<String>> {
    match layout {
        Layout::V3 => {
            let path = root.join("meta").join("tasks.parquet");
            let batch = read_columns(&path, &[])?;
            let idx = i64_rows(column(&batch, "task_index", &path)?, "task_index")?;
            // pandas writes the task string as the index column; other writers as `task`
            let name_col = ["__index_level_0__", "task"]
                .iter()
                .find(|c| batch.column_by_name(c).is_some())
                .with_context(|| {
                    format!(
                        "{} has no task strings (no 'task' or index column)",
                        path.display()
                    )
                })?;
            let names = string_rows(column(&batch, name_col, &path)?, "task")?;
            by_index(idx, names, &path)
        }
        Layout::V2 => {
            let path = root.join("meta").join("tasks.jsonl");
            #[derive(Deserialize)]
            struct Row {
                task_index: i64,
                task: String,
            }
            let rows: Vec<Row> = read_jsonl(&path)?;
            let (idx, names) = rows.into_iter().map(|r| (r.task_index, r.task)).unzip();
            by_index(idx, names, &path)
        }
    }
}

fn by_index(idx: Vec<i64>, names: Vec<String>, path: &Path) -> Result<Vec<String>> {
    let mut out = vec![None; idx.len()];
    for (i, n) in idx.into_iter().zip(names) {
        ensure!(
            i >= 0 && (i as usize) < out.len() && out[i as usize].is_none(),
            "{}: task indices must be 0..{} without repeats (found {i})",
            path.display(),
            out.len()
        );
        out[i as usize] = Some(n);
    }
    Ok(out.into_iter().map(|n| n.expect("filled")).collect())
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(line).with_context(|| {
                format!("{} line {}: not a valid record", path.display(), i + 1)
            })?,
        );
    }
    Ok(out)
}

/// Sorted `*.parquet` files one level below `dir` (`chunk-*/file-*.parquet`).
fn parquet_files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let chunks =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for c in chunks {
        let c = c?.path();
        if c.is_dir() {
            for f in std::fs::read_dir(&c)? {
                let f = f?.path();
                if f.extension().is_some_and(|e| e == "parquet") {
                    out.push(f);
                }
            }
        }
    }
    out.sort();
    ensure!(!out.is_empty(), "{} holds no parquet files", dir.display());
    Ok(out)
}

fn as_index(v: i64, what: &str, file: &Path) -> Result<usize> {
    ensure!(v >= 0, "{}: {what} is negative ({v})", file.display());
    Ok(v as usize)
}

/// Every episode of the dataset with its files (v3: from `meta/episodes`; v2: from the templates).
fn episode_refs(root: &Path, info: &Info, video_cam: Option<&str>) -> Result<Vec<EpisodeRef>> {
    let mut out = Vec::new();
    match info.layout {
        Layout::V3 => {
            let data_t = info.data_path.clone().unwrap_or_else(|| {
                "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet".into()
            });
            for path in parquet_files_below(&root.join("meta").join("episodes"))? {
                let mut cols = vec!["episode_index", "data/chunk_index", "data/file_index"];
                let vcols = video_cam.map(|k| {
                    [
                        format!("videos/{k}/chunk_index"),
                        format!("videos/{k}/file_index"),
                        format!("videos/{k}/from_timestamp"),
                    ]
                });
                if let Some(v) = &vcols {
                    cols.extend(v.iter().map(|s| s.as_str()));
                }
                let with_len = parquet_column_names(&path)?.iter().any(|c| c == "length");
                if with_len {
                    cols.push("length");
                }
                let batch = read_columns(&path, &cols)?;
                let ep = i64_rows(column(&batch, "episode_index", &path)?, "episode_index")?;
                let dc = i64_rows(
                    column(&batch, "data/chunk_index", &path)?,
                    "data/chunk_index",
                )?;
                let df = i64_rows(column(&batch, "data/file_index", &path)?, "data/file_index")?;
                let len = match with_len {
                    true => Some(i64_rows(column(&batch, "length", &path)?, "length")?),
                    false => None,
                };
                let video = match &vcols {
                    Some(v) => {
                        let c = i64_rows(column(&batch, &v[0], &path)?, &v[0])?;
                        let f = i64_rows(column(&batch, &v[1], &path)?, &v[1])?;
                        let from = f32_or_f64(column(&batch, &v[2], &path)?, &v[2])?;
                        Some((c, f, from))
                    }
                    None => None,
                };
                for i in 0..ep.len() {
                    let data_rel = fill_template(
                        &data_t,
                        &[
                            (
                                "chunk_index",
                                TemplateValue::Int(as_index(dc[i], "data/chunk_index", &path)?),
                            ),
                            (
                                "file_index",
                                TemplateValue::Int(as_index(df[i], "data/file_index", &path)?),
                            ),
                        ],
                    )?;
                    let video = match (&video, video_cam, &info.video_path) {
                        (Some((c, f, from)), Some(key), Some(vt)) => {
                            let rel = fill_template(
                                vt,
                                &[
                                    ("video_key", TemplateValue::Str(key)),
                                    (
                                        "chunk_index",
                                        TemplateValue::Int(as_index(
                                            c[i],
                                            "video chunk_index",
                                            &path,
                                        )?),
                                    ),
                                    (
                                        "file_index",
                                        TemplateValue::Int(as_index(
                                            f[i],
                                            "video file_index",
                                            &path,
                                        )?),
                                    ),
                                ],
                            )?;
                            Some((root.join(rel), from[i]))
                        }
                        _ => None,
                    };
                    out.push(EpisodeRef {
                        index: as_index(ep[i], "episode_index", &path)?,
                        length: len.as_ref().map(|l| l[i].max(0) as usize),
                        data_file: root.join(data_rel),
                        video,
                    });
                }
            }
        }
        Layout::V2 => {
            let path = root.join("meta").join("episodes.jsonl");
            #[derive(Deserialize)]
            struct Row {
                episode_index: i64,
                length: Option<i64>,
            }
            let rows: Vec<Row> = read_jsonl(&path)?;
            let data_t = info.data_path.clone().unwrap_or_else(|| {
                "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet".into()
            });
            for r in rows {
                let ep = as_index(r.episode_index, "episode_index", &path)?;
                let chunk = ep / info.chunks_size;
                let base = [
                    ("episode_chunk", TemplateValue::Int(chunk)),
                    ("episode_index", TemplateValue::Int(ep)),
                ];
                let data_rel = fill_template(&data_t, &base)?;
                let video = match (video_cam, &info.video_path) {
                    (Some(key), Some(vt)) => {
                        let mut v = base.to_vec();
                        v.push(("video_key", TemplateValue::Str(key)));
                        Some((root.join(fill_template(vt, &v)?), 0.0))
                    }
                    _ => None,
                };
                out.push(EpisodeRef {
                    index: ep,
                    length: r.length.map(|l| l.max(0) as usize),
                    data_file: root.join(data_rel),
                    video,
                });
            }
        }
    }
    out.sort_by_key(|e| e.index);
    for w in out.windows(2) {
        ensure!(
            w[0].index != w[1].index,
            "the episode metadata lists episode {} twice",
            w[0].index
        );
    }
    Ok(out)
}

fn f32_or_f64(col: &arrow_array::ArrayRef, what: &str) -> Result<Vec<f64>> {
    Ok(f32_rows(col, 1, what)?
        .into_iter()
        .map(|v| v as f64)
        .collect())
}

/// The rows of one episode, in frame order, with only the imported columns.
struct EpisodeRows {
    task_index: usize,
    timestamps: Vec<f64>,
    actions: Vec<f32>,
    states: Vec<f32>,
    flags: Vec<bool>,
    rewards: Option<Vec<f32>>,
    images: Option<Vec<Vec<u8>>>,
}

/// Resolved feature choices.
struct Plan {
    camera: String,
    video: bool,
    camera_hw: Option<(usize, usize)>,
    state: Option<(String, usize)>,
    action: (String, usize),
    success: SuccessSource,
    reward: Option<String>,
}

fn plan(info: &Info, opts: &ImportOptions) -> Result<Plan> {
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

/// Reads the rows of the wanted episodes of one data file.
fn read_episode_rows(
    file: &Path,
    plan: &Plan,
    fps: f64,
    wanted: &BTreeSet<usize>,
    with_images: bool,
) -> Result<BTreeMap<usize, EpisodeRows>> {
    let mut cols: Vec<&str> = vec!["episode_index", "frame_index", "task_index", &plan.action.0];
    let has = |batch_cols: &[String], c: &str| batch_cols.iter().any(|b| b == c);
    let file_cols = parquet_column_names(file)?;
    let with_ts = has(&file_cols, "timestamp");
    if with_ts {
        cols.push("timestamp");
    }
    if let Some((s, _)) = &plan.state {
        cols.push(s);
    }
    if let SuccessSource::Column(c) = &plan.success {
        cols.push(c);
    }
    if let Some(r) = &plan.reward {
        if !cols.contains(&r.as_str()) {
            cols.push(r);
        }
    }
    let with_images = with_images && !plan.video;
    if with_images {
        cols.push(&plan.camera);
    }
    cols.dedup();
    let batch = read_columns(file, &cols)?;
    let f = |c: &str| column(&batch, c, file);
    let what = |c: &str| format!("{}: column '{c}'", file.display());
    let ep = i64_rows(f("episode_index")?, &what("episode_index"))?;
    let fi = i64_rows(f("frame_index")?, &what("frame_index"))?;
    let ti = i64_rows(f("task_index")?, &what("task_index"))?;
    let ts = if with_ts {
        Some(f32_rows(f("timestamp")?, 1, &what("timestamp"))?)
    } else {
        None
    };
    let act = f32_rows(f(&plan.action.0)?, plan.action.1, &what(&plan.action.0))?;
    let st = match &plan.state {
        Some((s, w)) => Some(f32_rows(f(s)?, *w, &what(s))?),
        None => None,
    };
    let flags = match &plan.success {
        SuccessSource::Column(c) => Some(bool_rows(f(c)?, &what(c))?),
        _ => None,
    };
    let rew = match &plan.reward {
        Some(r) => Some(f32_rows(f(r)?, 1, &what(r))?),
        None => None,
    };
    let imgs = if !with_images {
        None
    } else {
        Some(image_bytes(f(&plan.camera)?, &what(&plan.camera))?)
    };
    // rows of each wanted episode, by frame index
    let mut rows: BTreeMap<usize, Vec<(i64, usize)>> = BTreeMap::new();
    for (r, &e) in ep.iter().enumerate() {
        ensure!(
            e >= 0,
            "{}: row {r} has a negative episode_index",
            file.display()
        );
        if wanted.contains(&(e as usize)) {
            rows.entry(e as usize).or_default().push((fi[r], r));
        }
    }
    let (aw, sw) = (plan.action.1, plan.state.as_ref().map_or(0, |s| s.1));
    let mut out = BTreeMap::new();
    for (e, mut list) in rows {
        list.sort();
        for (k, (f, _)) in list.iter().enumerate() {
            ensure!(
                *f == k as i64,
                "{}: episode {e} has frame_index {f} where {k} was expected (missing or repeated rows)",
                file.display()
            );
        }
        let first = list[0].1;
        let tix = ti[first];
        ensure!(
            tix >= 0,
            "{}: episode {e} has a negative task_index",
            file.display()
        );
        let mut er = EpisodeRows {
            task_index: tix as usize,
            timestamps: Vec::with_capacity(list.len()),
            actions: Vec::with_capacity(list.len() * aw),
            states: Vec::with_capacity(list.len() * sw),
            flags: Vec::with_capacity(list.len()),
            rewards: rew.as_ref().map(|_| Vec::with_capacity(list.len())),
            images: imgs.as_ref().map(|_| Vec::with_capacity(list.len())),
        };
        for &(f, r) in &list {
            er.timestamps.push(match &ts {
                Some(ts) => ts[r] as f64,
                None => f as f64 / fps,
            });
            er.actions.extend_from_slice(&act[r * aw..(r + 1) * aw]);
            if let Some(st) = &st {
                er.states.extend_from_slice(&st[r * sw..(r + 1) * sw]);
            }
            if let Some(fl) = &flags {
                er.flags.push(fl[r]);
            }
            if let (Some(out), Some(rw)) = (er.rewards.as_mut(), &rew) {
                out.push(rw[r]);
            }
            if let (Some(out), Some(im)) = (er.images.as_mut(), &imgs) {
                out.push(im[r].clone());
            }
        }
        out.insert(e, er);
    }
    Ok(out)
}

fn parquet_column_names(file: &Path) -> Result<Vec<String>> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f).with_context(|| {
        format!(
            "{} is not a readable parquet file (truncated or corrupt?)",
            file.display()
        )
    })?;
    Ok(b.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect())
}

/// Imports `src` into the world4rl dataset `out` (created, or completed when an earlier import into
/// it was interrupted). `progress` is called after each episode with (done, total).
pub fn import(
    src: &Path,
    out: &Path,
    opts: &ImportOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<ImportReport> {
    ensure!(
        (8..=1024).contains(&opts.size),
        "--size {} is outside 8..=1024 pixels",
        opts.size
    );
    let info = Info::read(src)?;
    let plan = plan(&info, opts)?;
    let tasks = read_tasks(src, info.layout)?;
    let refs = episode_refs(src, &info, plan.video.then_some(plan.camera.as_str()))?;
    ensure!(!refs.is_empty(), "{} lists no episodes", src.display());
    let refs: Vec<EpisodeRef> = match opts.episodes {
        Some((a, b)) => {
            let last = refs.last().map(|r| r.index).unwrap_or(0);
            ensure!(
                a < b && b <= last + 1,
                "--episodes {a}:{b} is outside the data: the dataset holds episodes 0..{}",
                last + 1
            );
            refs.into_iter()
                .filter(|r| (a..b).contains(&r.index))
                .collect()
        }
        None => refs,
    };
    // task filter: by LeRobot string or world4rl name
    let names: Vec<String> = tasks.iter().map(|t| task_name(t)).collect();
    let keep_task: Vec<bool> = tasks
        .iter()
        .zip(&names)
        .map(|(t, n)| opts.tasks.is_empty() || opts.tasks.iter().any(|w| w == t || w == n))
        .collect();
    for w in &opts.tasks {
        ensure!(
            tasks.iter().zip(&names).any(|(t, n)| w == t || w == n),
            "the task '{w}' is not in this dataset (its tasks: {})",
            tasks
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // group episodes by data file, in order
    let mut by_file: BTreeMap<PathBuf, Vec<EpisodeRef>> = BTreeMap::new();
    for r in &refs {
        by_file
            .entry(r.data_file.clone())
            .or_default()
            .push(r.clone());
    }
    for f in by_file.keys() {
        ensure!(f.is_file(), "the data file {} does not exist", f.display());
    }

    // pass 1: every wanted episode's rows without the frames, so the action bounds are known before
    // the dataset spec is written
    let ffmpeg = if plan.video {
        Some(ffmpeg_program()?)
    } else {
        None
    };
    let mut episodes: Vec<(EpisodeRef, EpisodeRows)> = Vec::new();
    for (file, eps) in &by_file {
        let wanted: BTreeSet<usize> = eps.iter().map(|e| e.index).collect();
        let mut rows = read_episode_rows(file, &plan, info.fps, &wanted, false)?;
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
                er.task_index < tasks.len(),
                "episode {} has task_index {} but the dataset has {} tasks",
                e.index,
                er.task_index,
                tasks.len()
            );
            if keep_task[er.task_index] {
                episodes.push((e.clone(), er));
            }
        }
    }
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
        let fl = opts.size * opts.size * 3;
        let (aw, sw) = (plan.action.1, spec.state_dim);
        let mut ep = Episode::start(
            &spec,
            name,
            opts.kind,
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
