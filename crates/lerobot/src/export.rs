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
use crate::stats::Stats;

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
pub(crate) const IMAGE: &str = "observation.image";
pub(crate) const STATE: &str = "observation.state";

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
    check_target(out, opts)?;
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

    let partial = fresh_partial(out)?;
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

    let mut stats = Stats::new(&spec);
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
        stats.add_episode(&ep, &spec, (i, row, ti), opts.fps);
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

    write_episodes(&partial, &ep_rows)?;
    write_tasks(&partial, &tasks)?;
    write_json(&partial.join("meta/stats.json"), &stats.to_json())?;

    let info = info_json(&spec, entries.len(), row, tasks.len(), opts);
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

/// One exported episode's place: (episode index, task, rows, data chunk, data file, first row).
type EpisodeRow = (usize, String, usize, usize, usize, usize);

/// `meta/episodes/chunk-000/file-000.parquet`: each episode's length, tasks and where its rows are.
fn write_episodes(partial: &Path, ep_rows: &[EpisodeRow]) -> Result<()> {
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
    for (i, task, rows, c, f, first) in ep_rows {
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

    Ok(())
}

/// `meta/tasks.parquet`: the task string is the pandas index, as lerobot reads it.
fn write_tasks(partial: &Path, tasks: &[String]) -> Result<()> {
    let int = |n: &str| Field::new(n, DataType::Int64, true);
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

    Ok(())
}

/// `meta/info.json`: the features and the layout.
fn info_json(
    spec: &DatasetSpec,
    episodes: usize,
    rows: usize,
    tasks: usize,
    opts: &ExportOptions,
) -> serde_json::Value {
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
        "total_episodes": episodes,
        "total_frames": rows,
        "total_tasks": tasks,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": opts.data_file_mb,
        "video_files_size_in_mb": 200,
        "fps": opts.fps,
        "splits": {"train": format!("0:{episodes}")},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": null,
        "features": features,
    });
    info
}

/// Refuses bad settings and an `out` folder that holds anything.
fn check_target(out: &Path, opts: &ExportOptions) -> Result<()> {
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
    Ok(())
}

/// `OUT.partial`, the folder the export is written to before it is renamed (a stale one removed).
fn fresh_partial(out: &Path) -> Result<PathBuf> {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    let partial = out.with_file_name(name);
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot remove the stale {}", partial.display()))?;
    }
    Ok(partial)
}
