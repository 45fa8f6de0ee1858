//! `world4rl data export-lerobot`: a world4rl episode dataset as a LeRobot v3.0 dataset that
//! `LeRobotDataset(repo_id, root=DIR)` loads offline.
//!
//! Each world4rl episode of `T` steps becomes `T + 1` rows. Row `t < T` holds frame `t`, action `t`
//! and what that action produced (`next.reward`, `next.success` of frame `t + 1`, `next.done`); the
//! last row holds the final frame, repeats the last action, and has `next.reward` 0, `next.success`
//! of the final frame and `next.done` true. Frames are PNG images inside the parquet
//! (`observation.image`); world4rl's own metadata (spec, kind and seed of each episode) goes to
//! `meta/world4rl.json`. The folder is written under a temporary name and renamed when complete.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeListBuilder, Float32Builder, Int64Builder, ListBuilder,
    StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use serde_json::json;
use w4rl_data::{Dataset, DatasetSpec, Episode};

use crate::columns::write_parquet;

/// Export settings.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Frames per second written into `info.json` (timestamps are `frame_index / fps`). Default 10.
    pub fps: u32,
    /// Start a new data file once the current one holds this many MB of frames. Default 100
    /// (LeRobot's own default).
    pub data_file_mb: usize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            fps: 10,
            data_file_mb: 100,
        }
    }
}

/// What an export wrote.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportReport {
    /// The LeRobot folder.
    pub out: PathBuf,
    /// Episodes written.
    pub episodes: usize,
    /// Rows (frames) written.
    pub frames: usize,
    /// Task strings, by task index.
    pub tasks: Vec<String>,
    /// Data parquet files written.
    pub data_files: usize,
}

/// Per-episode record in `meta/world4rl.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportedEpisode {
    /// LeRobot episode index.
    pub episode_index: usize,
    /// world4rl task.
    pub task: String,
    /// world4rl episode kind.
    pub kind: String,
    /// world4rl index among (task, kind).
    pub index: usize,
    /// Environment seed.
    pub seed: u64,
    /// Steps `T` (the episode has `T + 1` rows).
    pub steps: usize,
}

const CHUNKS_SIZE: usize = 1000;
const IMAGE: &str = "observation.image";
const STATE: &str = "observation.state";

fn data_schema(spec: &DatasetSpec) -> SchemaRef {
    let image = DataType::Struct(Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]));
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let mut fields = vec![Field::new(IMAGE, image, true)];
    if spec.state_dim > 0 {
        fields.push(Field::new(
            STATE,
            DataType::FixedSizeList(item.clone(), spec.state_dim as i32),
            true,
        ));
    }
    fields.extend([
        Field::new(
            "action",
            DataType::FixedSizeList(item, spec.action_dim as i32),
            true,
        ),
        Field::new("next.reward", DataType::Float32, true),
        Field::new("next.success", DataType::Boolean, true),
        Field::new("next.done", DataType::Boolean, true),
        Field::new("timestamp", DataType::Float32, true),
        Field::new("frame_index", DataType::Int64, true),
        Field::new("episode_index", DataType::Int64, true),
        Field::new("index", DataType::Int64, true),
        Field::new("task_index", DataType::Int64, true),
    ]);
    Arc::new(Schema::new(fields))
}

/// PNG bytes of one RGB frame.
fn png(frame: &[u8], size: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            frame,
            size as u32,
            size as u32,
            image::ExtendedColorType::Rgb8,
        )
        .context("PNG encoding failed")?;
    Ok(out)
}

use image::ImageEncoder;

/// The rows of one episode as a record batch.
fn episode_batch(
    ep: &Episode,
    schema: &SchemaRef,
    episode_index: usize,
    first_row: usize,
    task_index: usize,
    fps: u32,
) -> Result<(RecordBatch, usize)> {
    let m = &ep.meta;
    let t_steps = m.steps;
    let rows = t_steps + 1;
    let mut bytes = BinaryBuilder::new();
    let mut paths = StringBuilder::new();
    let mut png_bytes = 0usize;
    for t in 0..rows {
        let b = png(ep.frame(t), m.image_size)?;
        png_bytes += b.len();
        bytes.append_value(&b);
        paths.append_value(format!("frame-{t:06}.png"));
    }
    let DataType::Struct(image_fields) = schema.field(0).data_type().clone() else {
        unreachable!("the first column is the image struct")
    };
    let image: ArrayRef = Arc::new(StructArray::new(
        image_fields,
        vec![Arc::new(bytes.finish()), Arc::new(paths.finish())],
        None,
    ));
    let mut cols = vec![image];
    let list = |values: &dyn Fn(usize) -> Vec<f32>, width: usize| -> ArrayRef {
        let mut b = FixedSizeListBuilder::new(Float32Builder::new(), width as i32);
        for t in 0..rows {
            b.values().append_slice(&values(t));
            b.append(true);
        }
        Arc::new(b.finish())
    };
    if m.state_dim > 0 {
        cols.push(list(&|t| ep.state(t).to_vec(), m.state_dim));
    }
    let last_action = |t: usize| -> Vec<f32> {
        if t_steps == 0 {
            vec![0.0; m.action_dim]
        } else {
            ep.action(t.min(t_steps - 1)).to_vec()
        }
    };
    cols.push(list(&last_action, m.action_dim));
    let mut reward = Float32Builder::new();
    let mut success = BooleanBuilder::new();
    let mut done = BooleanBuilder::new();
    let mut ts = Float32Builder::new();
    let (mut fi, mut ei, mut gi, mut ti) = (
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
    );
    for t in 0..rows {
        reward.append_value(if t < t_steps { ep.rewards[t] } else { 0.0 });
        success.append_value(ep.success[(t + 1).min(t_steps)] != 0);
        done.append_value(t == t_steps);
        ts.append_value(t as f32 / fps as f32);
        fi.append_value(t as i64);
        ei.append_value(episode_index as i64);
        gi.append_value((first_row + t) as i64);
        ti.append_value(task_index as i64);
    }
    cols.push(Arc::new(reward.finish()));
    cols.push(Arc::new(success.finish()));
    cols.push(Arc::new(done.finish()));
    cols.push(Arc::new(ts.finish()));
    for mut b in [fi, ei, gi, ti] {
        cols.push(Arc::new(b.finish()));
    }
    Ok((RecordBatch::try_new(schema.clone(), cols)?, png_bytes))
}

/// Running statistics of one feature: values per dimension (exact quantiles) or, for images, a
/// histogram per channel.
enum Stat {
    Values(Vec<Vec<f64>>),
    /// Histogram per channel, and the number of frames (LeRobot counts frames, not pixels).
    Image(Box<[[u64; 256]; 3]>, u64),
}

impl Stat {
    fn push(&mut self, v: &[f64]) {
        if let Stat::Values(d) = self {
            for (k, x) in v.iter().enumerate() {
                d[k].push(*x);
            }
        }
    }

    fn to_json(&self, boolean: bool) -> serde_json::Value {
        // per dimension (or channel): min, max, mean, std, q01, q10, q50, q90, q99
        let (per, count, image): (Vec<[f64; 9]>, u64, bool) = match self {
            Stat::Values(dims) => {
                let per = dims
                    .iter()
                    .map(|d| {
                        let mut s = d.clone();
                        s.sort_by(|a, b| a.total_cmp(b));
                        let n = s.len().max(1) as f64;
                        let mean = s.iter().sum::<f64>() / n;
                        let var = s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
                        let first = s.first().copied().unwrap_or(0.0);
                        let last = s.last().copied().unwrap_or(0.0);
                        summary(first, last, mean, var.sqrt(), |p| quantile_sorted(&s, p))
                    })
                    .collect();
                (per, dims.first().map_or(0, |d| d.len()) as u64, false)
            }
            Stat::Image(h, frames) => {
                let val = |i: usize| i as f64 / 255.0;
                let per = h
                    .iter()
                    .map(|hist| {
                        let nf = hist.iter().sum::<u64>().max(1) as f64;
                        let weighted = |f: &dyn Fn(f64) -> f64| {
                            hist.iter()
                                .enumerate()
                                .map(|(i, &c)| c as f64 * f(val(i)))
                                .sum::<f64>()
                                / nf
                        };
                        let mean = weighted(&|v| v);
                        let var = weighted(&|v| (v - mean).powi(2));
                        let min = hist.iter().position(|&c| c > 0).unwrap_or(0);
                        let max = hist.iter().rposition(|&c| c > 0).unwrap_or(0);
                        summary(val(min), val(max), mean, var.sqrt(), |p| {
                            quantile_hist(hist, p)
                        })
                    })
                    .collect();
                (per, *frames, true)
            }
        };
        let col = |i: usize| -> serde_json::Value {
            if image {
                // LeRobot's image stats have shape (3, 1, 1)
                json!(per.iter().map(|s| vec![vec![s[i]]]).collect::<Vec<_>>())
            } else if boolean && i < 2 {
                json!(per.iter().map(|s| s[i] != 0.0).collect::<Vec<_>>())
            } else {
                json!(per.iter().map(|s| s[i]).collect::<Vec<_>>())
            }
        };
        json!({
            "min": col(0), "max": col(1), "mean": col(2), "std": col(3),
            "count": [count],
            "q01": col(4), "q10": col(5), "q50": col(6), "q90": col(7), "q99": col(8),
        })
    }
}

/// The statistics LeRobot stores, in order: min, max, mean, std and the 1/10/50/90/99 % quantiles.
fn summary(min: f64, max: f64, mean: f64, std: f64, q: impl Fn(f64) -> f64) -> [f64; 9] {
    [
        min,
        max,
        mean,
        std,
        q(0.01),
        q(0.10),
        q(0.50),
        q(0.90),
        q(0.99),
    ]
}

/// Linear-interpolated quantile of sorted values (numpy's default).
fn quantile_sorted(s: &[f64], p: f64) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let pos = p * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

/// Quantile of 8-bit values given as a histogram, in [0, 1].
fn quantile_hist(h: &[u64; 256], p: f64) -> f64 {
    let n: u64 = h.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let target = (p * (n - 1) as f64).round() as u64;
    let mut acc = 0u64;
    for (i, &c) in h.iter().enumerate() {
        acc += c;
        if acc > target {
            return i as f64 / 255.0;
        }
    }
    1.0
}

fn feature(dtype: &str, shape: &[usize], names: serde_json::Value) -> serde_json::Value {
    json!({"dtype": dtype, "shape": shape, "names": names})
}

/// Exports the world4rl dataset at `dataset` into the new folder `out`.
pub fn export(
    dataset: &Path,
    out: &Path,
    opts: &ExportOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<ExportReport> {
    ensure!(opts.fps > 0, "--fps must be positive");
    ensure!(opts.data_file_mb > 0, "the data file size must be positive");
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        ensure!(
            empty,
            "{} already exists and is not empty: choose a new --out folder (nothing was written)",
            out.display()
        );
    }
    let ds = Dataset::open(dataset)
        .with_context(|| format!("cannot open the world4rl dataset {}", dataset.display()))?;
    let spec = ds.spec().clone();
    let entries = ds.entries().to_vec();
    ensure!(
        !entries.is_empty(),
        "{} holds no episodes",
        dataset.display()
    );
    let tasks: Vec<String> = {
        let mut t: Vec<String> = entries.iter().map(|e| e.meta.task.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    let task_index: BTreeMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();

    let partial = {
        let mut name = out.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        out.with_file_name(name)
    };
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot remove the stale {}", partial.display()))?;
    }
    let schema = data_schema(&spec);
    let props = || {
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build()
    };
    let data_rel = |c: usize, f: usize| format!("data/chunk-{c:03}/file-{f:03}.parquet");
    let (mut chunk, mut file_i, mut file_bytes) = (0usize, 0usize, 0usize);
    let open = |c: usize, f: usize| -> Result<ArrowWriter<File>> {
        let p = partial.join(data_rel(c, f));
        std::fs::create_dir_all(p.parent().expect("has parent"))
            .with_context(|| format!("cannot create {}", p.display()))?;
        let file = File::create(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(ArrowWriter::try_new(file, schema.clone(), Some(props()))?)
    };
    let mut writer = Some(open(0, 0)?);
    let mut data_files = 1;

    // statistics
    let mut stats: BTreeMap<&str, (Stat, bool)> = BTreeMap::new();
    let vals = |d: usize| Stat::Values(vec![Vec::new(); d]);
    stats.insert(IMAGE, (Stat::Image(Box::new([[0; 256]; 3]), 0), false));
    if spec.state_dim > 0 {
        stats.insert(STATE, (vals(spec.state_dim), false));
    }
    stats.insert("action", (vals(spec.action_dim), false));
    for k in [
        "next.reward",
        "timestamp",
        "frame_index",
        "episode_index",
        "index",
        "task_index",
    ] {
        stats.insert(k, (vals(1), false));
    }
    stats.insert("next.success", (vals(1), true));
    stats.insert("next.done", (vals(1), true));

    let mut ep_rows = Vec::new();
    let mut w4 = Vec::new();
    let mut row = 0usize;
    for (i, entry) in entries.iter().enumerate() {
        let ep = ds.load(i)?;
        let m = &ep.meta;
        let ti = task_index[m.task.as_str()];
        if file_bytes >= opts.data_file_mb * 1_000_000 {
            writer.take().expect("open").close()?;
            file_i += 1;
            if file_i == CHUNKS_SIZE {
                chunk += 1;
                file_i = 0;
            }
            writer = Some(open(chunk, file_i)?);
            data_files += 1;
            file_bytes = 0;
        }
        let (batch, bytes) = episode_batch(&ep, &schema, i, row, ti, opts.fps)
            .with_context(|| format!("episode {}", entry.path.display()))?;
        writer.as_mut().expect("open").write(&batch)?;
        file_bytes += bytes;
        let rows = m.steps + 1;
        // statistics of this episode's rows
        for t in 0..rows {
            if let Some((Stat::Image(h, frames), _)) = stats.get_mut(IMAGE) {
                *frames += 1;
                for px in ep.frame(t).chunks_exact(3) {
                    for c in 0..3 {
                        h[c][px[c] as usize] += 1;
                    }
                }
            }
            let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
            if spec.state_dim > 0 {
                stats
                    .get_mut(STATE)
                    .expect("inserted")
                    .0
                    .push(&f(ep.state(t)));
            }
            let a = if m.steps == 0 {
                vec![0.0; spec.action_dim]
            } else {
                f(ep.action(t.min(m.steps - 1)))
            };
            stats.get_mut("action").expect("inserted").0.push(&a);
            let scalars = [
                (
                    "next.reward",
                    if t < m.steps {
                        ep.rewards[t] as f64
                    } else {
                        0.0
                    },
                ),
                (
                    "next.success",
                    (ep.success[(t + 1).min(m.steps)] != 0) as u8 as f64,
                ),
                ("next.done", (t == m.steps) as u8 as f64),
                ("timestamp", (t as f32 / opts.fps as f32) as f64),
                ("frame_index", t as f64),
                ("episode_index", i as f64),
                ("index", (row + t) as f64),
                ("task_index", ti as f64),
            ];
            for (k, v) in scalars {
                stats.get_mut(k).expect("inserted").0.push(&[v]);
            }
        }
        ep_rows.push((i, m.task.clone(), rows, chunk, file_i, row));
        w4.push(ExportedEpisode {
            episode_index: i,
            task: m.task.clone(),
            kind: m.kind.to_string(),
            index: m.index,
            seed: m.seed,
            steps: m.steps,
        });
        row += rows;
        progress(i + 1, entries.len());
    }
    writer.take().expect("open").close()?;

    // meta/episodes
    let mut e_idx = Int64Builder::new();
    let mut e_tasks = ListBuilder::new(StringBuilder::new());
    let mut e_len = Int64Builder::new();
    let (mut dci, mut dfi, mut from, mut to, mut mci, mut mfi) = (
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
    );
    for (i, task, rows, c, f, first) in &ep_rows {
        e_idx.append_value(*i as i64);
        e_tasks.values().append_value(task);
        e_tasks.append(true);
        e_len.append_value(*rows as i64);
        dci.append_value(*c as i64);
        dfi.append_value(*f as i64);
        from.append_value(*first as i64);
        to.append_value((*first + *rows) as i64);
        mci.append_value(0);
        mfi.append_value(0);
    }
    let int = |n: &str| Field::new(n, DataType::Int64, true);
    let ep_schema = Arc::new(Schema::new(vec![
        int("episode_index"),
        Field::new(
            "tasks",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        int("length"),
        int("data/chunk_index"),
        int("data/file_index"),
        int("dataset_from_index"),
        int("dataset_to_index"),
        int("meta/episodes/chunk_index"),
        int("meta/episodes/file_index"),
    ]));
    let ep_cols: Vec<ArrayRef> = vec![
        Arc::new(e_idx.finish()),
        Arc::new(e_tasks.finish()),
        Arc::new(e_len.finish()),
        Arc::new(dci.finish()),
        Arc::new(dfi.finish()),
        Arc::new(from.finish()),
        Arc::new(to.finish()),
        Arc::new(mci.finish()),
        Arc::new(mfi.finish()),
    ];
    write_parquet(
        &partial.join("meta/episodes/chunk-000/file-000.parquet"),
        ep_schema.clone(),
        &[RecordBatch::try_new(ep_schema, ep_cols)?],
    )?;

    // meta/tasks.parquet: the task string is the pandas index, as lerobot reads it
    let pandas = json!({
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": null, "field_name": null, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": null},
            {"name": null, "field_name": "__index_level_0__", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": null}
        ],
        "creator": {"library": "world4rl", "version": env!("CARGO_PKG_VERSION")},
        "pandas_version": "2.2.3"
    });
    let t_schema = Arc::new(
        Schema::new(vec![
            int("task_index"),
            Field::new("__index_level_0__", DataType::Utf8, true),
        ])
        .with_metadata(std::collections::HashMap::from([(
            "pandas".to_string(),
            pandas.to_string(),
        )])),
    );
    let mut t_idx = Int64Builder::new();
    let mut t_name = StringBuilder::new();
    for (i, t) in tasks.iter().enumerate() {
        t_idx.append_value(i as i64);
        t_name.append_value(t);
    }
    write_parquet(
        &partial.join("meta/tasks.parquet"),
        t_schema.clone(),
        &[RecordBatch::try_new(
            t_schema,
            vec![Arc::new(t_idx.finish()), Arc::new(t_name.finish())],
        )?],
    )?;

    // meta/stats.json
    let stats_json: serde_json::Map<String, serde_json::Value> = stats
        .iter()
        .map(|(k, (s, b))| (k.to_string(), s.to_json(*b)))
        .collect();
    write_json(
        &partial.join("meta/stats.json"),
        &serde_json::Value::Object(stats_json),
    )?;

    // meta/info.json
    let s = spec.image_size;
    let mut features = serde_json::Map::new();
    features.insert(
        IMAGE.into(),
        feature("image", &[s, s, 3], json!(["height", "width", "channels"])),
    );
    if spec.state_dim > 0 {
        features.insert(
            STATE.into(),
            feature("float32", &[spec.state_dim], json!(null)),
        );
    }
    features.insert(
        "action".into(),
        feature("float32", &[spec.action_dim], json!(null)),
    );
    for (k, d) in [
        ("next.reward", "float32"),
        ("next.success", "bool"),
        ("next.done", "bool"),
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    ] {
        features.insert(k.into(), feature(d, &[1], json!(null)));
    }
    let info = json!({
        "codebase_version": "v3.0",
        "robot_type": format!("world4rl/{}", spec.suite),
        "total_episodes": entries.len(),
        "total_frames": row,
        "total_tasks": tasks.len(),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": opts.data_file_mb,
        "video_files_size_in_mb": 200,
        "fps": opts.fps,
        "splits": {"train": format!("0:{}", entries.len())},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": null,
        "features": features,
    });
    write_json(&partial.join("meta/info.json"), &info)?;
    write_json(
        &partial.join("meta/world4rl.json"),
        &json!({
            "format": "world4rl-lerobot-export",
            "version": 1,
            "source": dataset,
            "spec": spec,
            "final_row": "the last row of each episode holds its final frame; its action repeats the previous one and next.reward is 0",
            "episodes": w4,
        }),
    )?;

    if out.exists() {
        std::fs::remove_dir(out)
            .with_context(|| format!("cannot replace the empty {}", out.display()))?;
    }
    std::fs::rename(&partial, out)
        .with_context(|| format!("cannot move {} to {}", partial.display(), out.display()))?;
    Ok(ExportReport {
        out: out.to_path_buf(),
        episodes: entries.len(),
        frames: row,
        tasks,
        data_files,
    })
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let text = serde_json::to_string_pretty(v)?;
    w4rl_data::write_atomic(path, text.as_bytes())?;
    Ok(())
}
