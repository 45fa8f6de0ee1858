//! The reading side of the import: where a LeRobot dataset's episodes are (v3.0 episode tables or
//! v2.x per-episode files), its task strings, and the imported columns of an episode's rows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::Deserialize;

use crate::columns::{
    bool_rows, column, f32_rows, i64_rows, image_bytes, read_columns, string_rows,
};
use crate::info::{fill_template, Info, Layout, TemplateValue};
use crate::plan::{Plan, SuccessSource};

/// One LeRobot episode: where its rows and its video frames are.
#[derive(Clone, Debug)]
pub(crate) struct EpisodeRef {
    pub(crate) index: usize,
    pub(crate) length: Option<usize>,
    pub(crate) data_file: PathBuf,
    /// (mp4 file, start time of the episode inside it) for a video camera.
    pub(crate) video: Option<(PathBuf, f64)>,
}

/// The task strings by task index.
pub(crate) fn read_tasks(root: &Path, layout: Layout) -> Result<Vec<String>> {
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
pub(crate) fn episode_refs(
    root: &Path,
    info: &Info,
    video_cam: Option<&str>,
) -> Result<Vec<EpisodeRef>> {
    let mut out = Vec::new();
    match info.layout {
        Layout::V3 => {
            for path in parquet_files_below(&root.join("meta").join("episodes"))? {
                out.extend(v3_episode_refs(root, info, video_cam, &path)?);
            }
        }
        Layout::V2 => out = v2_episode_refs(root, info, video_cam)?,
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

/// The episodes listed in one v3.0 `meta/episodes` parquet file.
fn v3_episode_refs(
    root: &Path,
    info: &Info,
    video_cam: Option<&str>,
    path: &Path,
) -> Result<Vec<EpisodeRef>> {
    let data_t = info
        .data_path
        .clone()
        .unwrap_or_else(|| "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet".into());
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
    let with_len = parquet_column_names(path)?.iter().any(|c| c == "length");
    if with_len {
        cols.push("length");
    }
    let batch = read_columns(path, &cols)?;
    let ints = |name: &str| -> Result<Vec<i64>> { i64_rows(column(&batch, name, path)?, name) };
    let ep = ints("episode_index")?;
    let (dc, df) = (ints("data/chunk_index")?, ints("data/file_index")?);
    let len = if with_len {
        Some(ints("length")?)
    } else {
        None
    };
    let video = match &vcols {
        Some(v) => Some((
            ints(&v[0])?,
            ints(&v[1])?,
            f32_or_f64(column(&batch, &v[2], path)?, &v[2])?,
        )),
        None => None,
    };
    let idx = |v: i64, what: &str| -> Result<TemplateValue> {
        Ok(TemplateValue::Int(as_index(v, what, path)?))
    };
    let mut out = Vec::new();
    for i in 0..ep.len() {
        let data_rel = fill_template(
            &data_t,
            &[
                ("chunk_index", idx(dc[i], "data/chunk_index")?),
                ("file_index", idx(df[i], "data/file_index")?),
            ],
        )?;
        let video = match (&video, video_cam, &info.video_path) {
            (Some((c, f, from)), Some(key), Some(vt)) => {
                let rel = fill_template(
                    vt,
                    &[
                        ("video_key", TemplateValue::Str(key)),
                        ("chunk_index", idx(c[i], "video chunk_index")?),
                        ("file_index", idx(f[i], "video file_index")?),
                    ],
                )?;
                Some((root.join(rel), from[i]))
            }
            _ => None,
        };
        out.push(EpisodeRef {
            index: as_index(ep[i], "episode_index", path)?,
            length: len.as_ref().map(|l| l[i].max(0) as usize),
            data_file: root.join(data_rel),
            video,
        });
    }
    Ok(out)
}

/// The episodes of a v2.x dataset, from `meta/episodes.jsonl` and the path templates.
fn v2_episode_refs(root: &Path, info: &Info, video_cam: Option<&str>) -> Result<Vec<EpisodeRef>> {
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
    let mut out = Vec::new();
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
    Ok(out)
}

fn f32_or_f64(col: &arrow_array::ArrayRef, what: &str) -> Result<Vec<f64>> {
    Ok(f32_rows(col, 1, what)?
        .into_iter()
        .map(|v| v as f64)
        .collect())
}

/// The rows of one episode, in frame order, with only the imported columns.
pub(crate) struct EpisodeRows {
    pub(crate) task_index: usize,
    pub(crate) timestamps: Vec<f64>,
    pub(crate) actions: Vec<f32>,
    pub(crate) states: Vec<f32>,
    pub(crate) flags: Vec<bool>,
    pub(crate) rewards: Option<Vec<f32>>,
    pub(crate) images: Option<Vec<Vec<u8>>>,
}

/// The (frame index, row) pairs of each wanted episode, in frame order; an episode whose frame
/// indices are not 0, 1, 2... (missing or repeated rows) is an error.
fn rows_by_episode(
    file: &Path,
    ep: &[i64],
    fi: &[i64],
    wanted: &BTreeSet<usize>,
) -> Result<BTreeMap<usize, Vec<(i64, usize)>>> {
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
    for (e, list) in rows.iter_mut() {
        list.sort();
        for (k, (f, _)) in list.iter().enumerate() {
            ensure!(
                *f == k as i64,
                "{}: episode {e} has frame_index {f} where {k} was expected (missing or repeated rows)",
                file.display()
            );
        }
    }
    Ok(rows)
}

/// Reads the rows of the wanted episodes of one data file.
pub(crate) fn read_episode_rows(
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
    let (aw, sw) = (plan.action.1, plan.state.as_ref().map_or(0, |s| s.1));
    let mut out = BTreeMap::new();
    for (e, list) in rows_by_episode(file, &ep, &fi, wanted)? {
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
