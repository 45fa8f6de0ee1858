//! LeRobot round trips without Python: a world4rl dataset exported as v3.0 and imported back gives the
//! same episodes; the same rows rewritten by this test in the v2.1 layout (one parquet per episode,
//! `meta/*.jsonl`) import to the same episodes; and each corrupt input stops the import with one
//! sentence naming what is wrong, before anything is written.

use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use w4rl_data::{Dataset, DatasetSpec, DatasetWriter, Episode, EpisodeKind};
use w4rl_lerobot::columns::{read_columns, write_parquet};
use w4rl_lerobot::{export, import, ExportOptions, ImportOptions};

const SIZE: usize = 16;

fn spec() -> DatasetSpec {
    DatasetSpec {
        suite: "tabletop".into(),
        image_size: SIZE,
        action_dim: 3,
        action_low: vec![-1.0, -1.0, -1.0],
        action_high: vec![1.0, 1.0, 1.0],
        state_dim: 2,
        render: w4rl_data::FrameRender::default(),
    }
}

/// A small pseudo-random byte/float stream (no RNG crate needed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn byte(&mut self) -> u8 {
        (self.next() & 0xff) as u8
    }
    fn unit(&mut self) -> f32 {
        (self.next() % 20001) as f32 / 10000.0 - 1.0
    }
}

/// Two tasks, five episodes of different lengths; success only at the end of some; frame 0 never
/// successful (LeRobot has no flag for the first frame).
fn synthetic(dir: &Path) -> PathBuf {
    let spec = spec();
    let out = dir.join("w4rl");
    let w = DatasetWriter::create(&out, spec.clone()).unwrap();
    let mut rng = Lcg(11);
    let plan = [
        ("push-block", 0, 7, true),
        ("push-block", 1, 5, false),
        ("turn-lever", 0, 9, true),
        ("turn-lever", 1, 4, true),
        ("push-block", 2, 6, false),
    ];
    for (task, index, steps, ok) in plan {
        let fl = SIZE * SIZE * 3;
        let frame = |r: &mut Lcg| (0..fl).map(|_| r.byte()).collect::<Vec<u8>>();
        let f0 = frame(&mut rng);
        let s0 = [rng.unit(), rng.unit()];
        let mut ep = Episode::start(
            &spec,
            task,
            EpisodeKind::Expert,
            index,
            100 + index as u64,
            &f0,
            &s0,
            false,
        )
        .unwrap();
        for t in 0..steps {
            let a = [rng.unit(), rng.unit(), rng.unit()];
            let f = frame(&mut rng);
            let s = [rng.unit(), rng.unit()];
            let success = ok && t + 1 == steps;
            ep.push(
                &a,
                success as u8 as f32 + 0.25 * rng.unit(),
                &f,
                &s,
                success,
            )
            .unwrap();
        }
        w.write(&ep).unwrap();
    }
    out
}

fn episodes(dir: &Path) -> Vec<Episode> {
    let ds = Dataset::open(dir).unwrap();
    (0..ds.entries().len())
        .map(|i| ds.load(i).unwrap())
        .collect()
}

fn opts() -> ImportOptions {
    ImportOptions {
        size: SIZE,
        action_low: Some(vec![-1.0; 3]),
        action_high: Some(vec![1.0; 3]),
        suite: "tabletop".into(),
        ..ImportOptions::default()
    }
}

/// Every imported episode equals the original it came from (its seed is the LeRobot episode index,
/// which is the original's position in the exported dataset).
fn assert_same_episodes(original: &[Episode], imported_dir: &Path) {
    let imported = episodes(imported_dir);
    assert_eq!(imported.len(), original.len());
    for got in &imported {
        let want = &original[got.meta.seed as usize];
        assert_eq!(got.meta.task, want.meta.task);
        assert_eq!(got.meta.steps, want.meta.steps);
        assert_eq!(got.frames, want.frames, "frames of {}", want.meta.task);
        assert_eq!(got.actions, want.actions);
        assert_eq!(got.rewards, want.rewards);
        assert_eq!(got.states, want.states);
        assert_eq!(got.success, want.success);
        assert_eq!(got.meta.success, want.meta.success);
    }
}

fn exported(dir: &Path) -> (Vec<Episode>, PathBuf) {
    let w4 = synthetic(dir);
    let lr = dir.join("lerobot");
    let report = export(&w4, &lr, &ExportOptions::default(), |_, _| {}).unwrap();
    assert_eq!(report.episodes, 5);
    assert_eq!(report.frames, 7 + 5 + 9 + 4 + 6 + 5);
    (episodes(&w4), lr)
}

#[test]
fn export_then_import_gives_back_every_episode() {
    let dir = tempfile::tempdir().unwrap();
    let (original, lr) = exported(dir.path());
    let back = dir.path().join("back");
    let report = import(&lr, &back, &opts(), |_, _| {}).unwrap();
    assert_eq!(report.codebase_version, "v3.0");
    assert_eq!((report.episodes, report.steps), (5, 31));
    assert_eq!(report.successful_episodes, 3);
    assert_same_episodes(&original, &back);
    // a second run finds everything in place and writes nothing new
    let again = import(&lr, &back, &opts(), |_, _| {}).unwrap();
    assert_eq!(again.skipped, 5);
}

/// Rewrites the v3.0 export in the v2.1 layout: one data parquet per episode, `meta/episodes.jsonl`,
/// `meta/tasks.jsonl`, an info.json saying v2.1 with the v2.1 path template.
fn to_v21(v3: &Path, out: &Path) {
    let data = v3.join("data/chunk-000/file-000.parquet");
    let batch = read_columns(&data, &[]).unwrap();
    let ep = batch
        .column_by_name("episode_index")
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    let tix = batch
        .column_by_name("task_index")
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    let tasks_batch = read_columns(&v3.join("meta/tasks.parquet"), &[]).unwrap();
    let names = tasks_batch.column_by_name("__index_level_0__").unwrap();
    let names: Vec<String> = (0..names.len())
        .map(|i| names.as_string::<i32>().value(i).to_string())
        .collect();
    std::fs::create_dir_all(out.join("meta")).unwrap();
    let mut episodes_jsonl = String::new();
    let mut start = 0;
    while start < ep.len() {
        let e = ep[start];
        let len = ep[start..].iter().take_while(|&&x| x == e).count();
        let file = out.join(format!("data/chunk-000/episode_{e:06}.parquet"));
        write_parquet(&file, batch.schema(), &[batch.slice(start, len)]).unwrap();
        episodes_jsonl.push_str(&format!(
            "{{\"episode_index\": {e}, \"tasks\": [\"{}\"], \"length\": {len}}}\n",
            names[tix[start] as usize]
        ));
        start += len;
    }
    std::fs::write(out.join("meta/episodes.jsonl"), episodes_jsonl).unwrap();
    let tasks_jsonl: String = names
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{{\"task_index\": {i}, \"task\": \"{t}\"}}\n"))
        .collect();
    std::fs::write(out.join("meta/tasks.jsonl"), tasks_jsonl).unwrap();
    let mut info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v3.join("meta/info.json")).unwrap()).unwrap();
    let o = info.as_object_mut().unwrap();
    o.insert("codebase_version".into(), "v2.1".into());
    o.insert(
        "data_path".into(),
        "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet".into(),
    );
    o.insert("total_chunks".into(), 1.into());
    o.remove("data_files_size_in_mb");
    o.remove("video_files_size_in_mb");
    std::fs::write(
        out.join("meta/info.json"),
        serde_json::to_vec_pretty(&info).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_v21_dataset_imports_to_the_same_episodes() {
    let dir = tempfile::tempdir().unwrap();
    let (original, v3) = exported(dir.path());
    let v21 = dir.path().join("v21");
    to_v21(&v3, &v21);
    assert!(v21.join("data/chunk-000/episode_000004.parquet").is_file());
    let back = dir.path().join("back");
    let report = import(&v21, &back, &opts(), |_, _| {}).unwrap();
    assert_eq!(report.codebase_version, "v2.1");
    assert_eq!(report.episodes, 5);
    assert_same_episodes(&original, &back);

    // an episode range and a task filter select the right episodes (LeRobot episode e is the
    // original's e-th episode in the dataset's order)
    let some = dir.path().join("some");
    let mut o = opts();
    o.episodes = Some((2, 5));
    o.tasks = vec!["turn-lever".into()];
    let want: Vec<u64> = (2..5u64)
        .filter(|&e| original[e as usize].meta.task == "turn-lever")
        .collect();
    assert!(!want.is_empty() && want.len() < 3, "{want:?}");
    let report = import(&v21, &some, &o, |_, _| {}).unwrap();
    assert_eq!(report.episodes, want.len());
    let mut seeds: Vec<u64> = episodes(&some).iter().map(|e| e.meta.seed).collect();
    seeds.sort();
    assert_eq!(seeds, want);
}

/// Runs an import expected to fail; returns its message and checks that nothing was written.
fn refused(src: &Path, out: &Path, opts: &ImportOptions) -> String {
    let err = import(src, out, opts, |_, _| {}).expect_err("the import must fail");
    assert!(!out.exists(), "nothing is written for a refused import");
    let msg = format!("{err:#}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    msg
}

fn edit_info(root: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = root.join("meta/info.json");
    let mut info: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(info.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_vec(&info).unwrap()).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn corrupt_inputs_are_refused_with_one_sentence_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (_, v3) = exported(dir.path());
    let out = dir.path().join("out");
    let case = |name: &str| {
        let d = dir.path().join(name);
        copy_dir(&v3, &d);
        d
    };

    // not a LeRobot folder at all
    let msg = refused(&dir.path().join("nowhere"), &out, &opts());
    assert!(
        msg.contains("info.json") && msg.contains("LeRobot dataset folder"),
        "{msg}"
    );

    let d = case("no-version");
    edit_info(&d, |o| {
        o.remove("codebase_version");
    });
    let msg = refused(&d, &out, &opts());
    assert!(msg.contains("info.json has no codebase_version"), "{msg}");

    let d = case("old-version");
    edit_info(&d, |o| {
        o.insert("codebase_version".into(), "v1.6".into());
    });
    let msg = refused(&d, &out, &opts());
    assert!(msg.contains("codebase_version v1.6"), "{msg}");

    let mut o = opts();
    o.camera = Some("observation.images.wrist".into());
    let msg = refused(&v3, &out, &o);
    assert!(
        msg.contains("'observation.images.wrist' is not a feature")
            && msg.contains("observation.image,"),
        "{msg}"
    );
    let mut o = opts();
    o.action = "action.joints".into();
    let msg = refused(&v3, &out, &o);
    assert!(msg.contains("'action.joints' is not a feature"), "{msg}");

    let mut o = opts();
    o.episodes = Some((3, 9));
    let msg = refused(&v3, &out, &o);
    assert!(
        msg.contains("--episodes 3:9 is outside the data") && msg.contains("0..5"),
        "{msg}"
    );

    let mut o = opts();
    o.tasks = vec!["open-drawer".into()];
    let msg = refused(&v3, &out, &o);
    assert!(
        msg.contains("'open-drawer' is not in this dataset"),
        "{msg}"
    );

    let d = case("truncated");
    let data = d.join("data/chunk-000/file-000.parquet");
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    let msg = refused(&d, &out, &opts());
    assert!(
        msg.contains("file-000.parquet") && msg.contains("truncated or corrupt"),
        "{msg}"
    );

    let d = case("no-data");
    std::fs::remove_file(d.join("data/chunk-000/file-000.parquet")).unwrap();
    let msg = refused(&d, &out, &opts());
    assert!(
        msg.contains("file-000.parquet") && msg.contains("does not exist"),
        "{msg}"
    );
}
