use std::fs;
use std::io::Write;

use w4rl_data::*;

fn spec() -> DatasetSpec {
    DatasetSpec {
        suite: "test".into(),
        image_size: 8,
        action_dim: 2,
        action_low: vec![-1.0; 2],
        action_high: vec![1.0; 2],
        state_dim: 3,
        render: w4rl_data::FrameRender::default(),
    }
}

/// A deterministic episode whose bytes depend on (task, kind, index).
fn episode(task: &str, kind: EpisodeKind, index: usize, steps: usize) -> Episode {
    let s = spec();
    let fl = 8 * 8 * 3;
    let tag = (index * 31 + task.len() * 7 + kind as usize * 3) as u32;
    let frame = |t: usize| -> Vec<u8> {
        (0..fl)
            .map(|i| ((i as u32 * 13 + t as u32 * 101 + tag) % 251) as u8)
            .collect()
    };
    let state = |t: usize| vec![t as f32, tag as f32, -0.5];
    let mut ep = Episode::start(
        &s,
        task,
        kind,
        index,
        1000 + index as u64,
        &frame(0),
        &state(0),
        false,
    )
    .unwrap();
    for t in 0..steps {
        let a = [((t as f32) * 0.1).sin(), -0.3 + tag as f32 * 1e-3];
        ep.push(
            &a,
            t as f32 * 0.5,
            &frame(t + 1),
            &state(t + 1),
            t + 1 == steps && index.is_multiple_of(2),
        )
        .unwrap();
    }
    ep
}

#[test]
fn write_read_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let w = DatasetWriter::create(dir.path(), spec()).unwrap();
    let ep = episode("metaworld/door-lock", EpisodeKind::Policy, 3, 7);
    let path = w.write(&ep).unwrap();
    assert!(path.ends_with("episodes/metaworld__door-lock/policy-00003.safetensors"));
    let back = read_episode(&path).unwrap();
    assert_eq!(back, ep);
    // f32 payloads are compared bit for bit, not by value
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back.actions), bits(&ep.actions));
    assert_eq!(bits(&back.states), bits(&ep.states));
    let ds = Dataset::open(dir.path()).unwrap();
    assert_eq!(ds.entries().len(), 1);
    assert_eq!(ds.load(0).unwrap(), ep);
}

#[test]
fn one_episode_always_encodes_to_the_same_bytes() {
    // the header's metadata goes through a HashMap; its order must not leak into the file, or a
    // re-collected episode would differ from the original
    let ep = episode("push-t", EpisodeKind::Expert, 1, 6);
    let first = encode_episode(&ep).unwrap();
    for _ in 0..32 {
        assert_eq!(encode_episode(&ep).unwrap(), first);
    }
    let n = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "header length is a multiple of 8");
    let header = std::str::from_utf8(&first[8..8 + n]).unwrap();
    assert!(
        header.find("\"crc32\"").unwrap() < header.find("\"world4rl\"").unwrap(),
        "{header}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = DatasetWriter::create(dir.path(), spec())
        .unwrap()
        .write(&ep)
        .unwrap();
    assert_eq!(read_episode(&path).unwrap(), ep);
    // canonicalising is idempotent, and a buffer too short for its header is refused, not read past
    assert_eq!(canonical_safetensors_header(first.clone()).unwrap(), first);
    for cut in [0, 5, 8, 8 + n / 2] {
        let err = canonical_safetensors_header(first[..cut].to_vec()).unwrap_err();
        assert!(err.to_string().contains("safetensors"), "{cut}: {err}");
    }
}

#[test]
fn truncated_and_corrupt_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let w = DatasetWriter::create(dir.path(), spec()).unwrap();
    let mut paths = Vec::new();
    for i in 0..3 {
        paths.push(
            w.write(&episode("push-t", EpisodeKind::Expert, i, 5))
                .unwrap(),
        );
    }
    assert!(verify(dir.path(), false, |_, _| {}).unwrap().passed());

    // truncate one file
    let bytes = fs::read(&paths[1]).unwrap();
    fs::write(&paths[1], &bytes[..bytes.len() - 10]).unwrap();
    // flip one byte of the frames of another
    let mut bytes2 = fs::read(&paths[2]).unwrap();
    let last = bytes2.len() - 200;
    bytes2[last] ^= 0xff;
    fs::write(&paths[2], &bytes2).unwrap();

    let err = read_episode(&paths[1]).unwrap_err().to_string();
    assert!(err.contains("expert-00001.safetensors"), "{err}");
    let report = verify(dir.path(), false, |_, _| {}).unwrap();
    assert!(!report.passed());
    let bad: Vec<_> = report.bad.iter().map(|b| b.path.clone()).collect();
    assert_eq!(bad, vec![paths[1].clone(), paths[2].clone()]);
    assert_eq!(report.ok, 1);
    // strict open names the truncated file; lenient open sets it aside
    let err = Dataset::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("expert-00001"), "{err}");
    assert_eq!(
        Dataset::open_lenient(dir.path())
            .unwrap()
            .unreadable()
            .len(),
        1
    );
}

#[test]
fn wrong_shapes_and_nan_are_refused() {
    let s = spec();
    let f = vec![0u8; 8 * 8 * 3];
    assert!(Episode::start(
        &s,
        "t",
        EpisodeKind::Random,
        0,
        0,
        &f[1..],
        &[0.0; 3],
        false
    )
    .is_err());
    assert!(Episode::start(&s, "t", EpisodeKind::Random, 0, 0, &f, &[0.0; 2], false).is_err());
    let mut ep = Episode::start(&s, "t", EpisodeKind::Random, 0, 0, &f, &[0.0; 3], false).unwrap();
    let err = ep
        .push(&[f32::NAN, 0.0], 0.0, &f, &[0.0; 3], false)
        .unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
    assert!(ep.push(&[0.0], 0.0, &f, &[0.0; 3], false).is_err());
    // a dataset re-opened with another spec is refused
    let dir = tempfile::tempdir().unwrap();
    DatasetWriter::create(dir.path(), spec()).unwrap();
    let mut other = spec();
    other.image_size = 16;
    assert!(DatasetWriter::create(dir.path(), other).is_err());
}

#[test]
fn interrupted_write_leaves_nothing_visible() {
    let dir = tempfile::tempdir().unwrap();
    let w = DatasetWriter::create(dir.path(), spec()).unwrap();
    w.write(&episode("push-t", EpisodeKind::Expert, 0, 4))
        .unwrap();
    // simulate a collector killed mid-write: a half-written hidden temporary file
    let task_dir = dir.path().join("episodes/push-t");
    let mut f = fs::File::create(task_dir.join(".expert-00001.safetensors.999.tmp")).unwrap();
    f.write_all(b"garbage").unwrap();
    drop(f);
    let ds = Dataset::open(dir.path()).unwrap();
    assert_eq!(ds.entries().len(), 1);
    assert!(verify(dir.path(), false, |_, _| {}).unwrap().passed());
    // re-opening the writer (a resumed collection) cleans it up
    drop(w);
    let w = DatasetWriter::create(dir.path(), spec()).unwrap();
    assert!(!task_dir.join(".expert-00001.safetensors.999.tmp").exists());
    assert!(w.contains("push-t", EpisodeKind::Expert, 0));
    assert!(!w.contains("push-t", EpisodeKind::Expert, 1));
}

#[test]
fn info_counts() {
    let dir = tempfile::tempdir().unwrap();
    let w = DatasetWriter::create(dir.path(), spec()).unwrap();
    for i in 0..4 {
        w.write(&episode("a", EpisodeKind::Expert, i, 5)).unwrap();
    }
    for i in 0..2 {
        w.write(&episode("b", EpisodeKind::Random, i, 3)).unwrap();
    }
    let info = info(dir.path()).unwrap();
    assert_eq!(info.total.episodes, 6);
    assert_eq!(info.total.steps, 4 * 5 + 2 * 3);
    assert_eq!(info.per_task["a"].successes, 2); // even indices succeed
    assert_eq!(info.per_kind["random"].episodes, 2);
    assert_eq!(info.per_task_kind["b"]["random"].steps, 6);
}

#[test]
fn windows_align_and_pad() {
    let ep = episode("a", EpisodeKind::Expert, 0, 6);
    let s = WindowSampler::new(vec![&ep], WindowConfig::default(), 0).unwrap();
    let b = s.windows(&[(0, 2), (0, 6)]);
    let fl = 8 * 8 * 3;
    // window ending at frame 2: positions 0,1 are padding, 2,3 hold frames 0,1
    assert_eq!(&b.mask[..4], &[false, false, true, true]);
    assert!(b.frames[..2 * fl].iter().all(|&x| x == 0));
    assert_eq!(&b.frames[2 * fl..3 * fl], ep.frame(0));
    assert_eq!(&b.frames[3 * fl..4 * fl], ep.frame(1));
    assert_eq!(&b.actions[3 * 2..4 * 2], ep.action(1));
    assert_eq!(&b.next[..fl], ep.frame(2));
    // window ending at frame 6: frames 2..5, actions 2..5, next 6, no padding
    assert!(b.mask[4..].iter().all(|&m| m));
    assert_eq!(&b.frames[(4 + 3) * fl..(4 + 4) * fl], ep.frame(5));
    assert_eq!(&b.actions[(4 + 3) * 2..(4 + 4) * 2], ep.action(5));
    assert_eq!(&b.next[fl..], ep.frame(6));
}

#[test]
fn rollout_windows_carry_the_following_frames_and_actions() {
    let ep = episode("a", EpisodeKind::Expert, 0, 6);
    let cfg = WindowConfig {
        rollout: 3,
        ..Default::default()
    };
    let s = WindowSampler::new(vec![&ep], cfg, 0).unwrap();
    let b = s.windows(&[(0, 2), (0, 5)]);
    let fl = 8 * 8 * 3;
    assert_eq!(b.rollout(), 3);
    // target 2: frames 3, 4, 5 follow, reached by actions 2, 3, 4
    assert_eq!(&b.after_mask[..3], &[true, true, true]);
    for k in 0..3 {
        assert_eq!(&b.after[k * fl..(k + 1) * fl], ep.frame(3 + k));
        assert_eq!(&b.after_actions[k * 2..(k + 1) * 2], ep.action(2 + k));
    }
    // target 5 of a 6-step episode: only frame 6 follows; the rest is zero padding
    assert_eq!(&b.after_mask[3..], &[true, false, false]);
    assert_eq!(&b.after[3 * fl..4 * fl], ep.frame(6));
    assert!(b.after[4 * fl..].iter().all(|&x| x == 0));
    assert!(b.after_actions[4 * 2..].iter().all(|&x| x == 0.0));
    // without rollout nothing follows
    let plain = WindowSampler::new(vec![&ep], WindowConfig::default(), 0).unwrap();
    let p = plain.windows(&[(0, 2)]);
    assert_eq!(p.rollout(), 0);
    assert!(p.after.is_empty() && p.after_mask.is_empty());
}

#[test]
fn sampler_is_seeded_and_weighted() {
    let eps: Vec<Episode> = (0..4)
        .map(|i| episode(if i < 2 { "a" } else { "b" }, EpisodeKind::Expert, i, 10))
        .chain((4..6).map(|i| episode("a", EpisodeKind::Random, i, 10)))
        .collect();
    let refs: Vec<&Episode> = eps.iter().collect();
    let mut s1 = WindowSampler::new(refs.clone(), WindowConfig::default(), 7).unwrap();
    let mut s2 = WindowSampler::new(refs.clone(), WindowConfig::default(), 7).unwrap();
    assert_eq!(s1.sample(16), s2.sample(16));

    let mut cfg = WindowConfig::default();
    cfg.task_weights.insert("b".into(), 0.0);
    cfg.kind_weights.insert(EpisodeKind::Random, 3.0);
    let mut s = WindowSampler::new(refs.clone(), cfg, 1).unwrap();
    let b = s.sample(4000);
    let mut random = 0;
    for &e in &b.episode {
        assert_ne!(eps[e].meta.task, "b", "task b has weight 0");
        random += (eps[e].meta.kind == EpisodeKind::Random) as usize;
        assert!(b.step.iter().all(|&j| (1..=10).contains(&j)));
    }
    // expert 'a': 20 transitions x1, random 'a': 20 transitions x3 -> 75 % random
    let frac = random as f64 / 4000.0;
    assert!((frac - 0.75).abs() < 0.03, "{frac}");

    let mut zero = WindowConfig::default();
    zero.task_weights.insert("a".into(), 0.0);
    zero.task_weights.insert("b".into(), 0.0);
    assert!(WindowSampler::new(refs, zero, 0).is_err());
}

#[test]
fn holdout_is_stratified() {
    let tasks = ["a", "a", "a", "a", "b", "b", "c"];
    let (train, held) = holdout_split(&tasks, 0.25, 3);
    assert_eq!(train.len() + held.len(), tasks.len());
    let held_tasks: Vec<&str> = held.iter().map(|&i| tasks[i]).collect();
    assert!(held_tasks.contains(&"a") && held_tasks.contains(&"b"));
    assert!(
        !held_tasks.contains(&"c"),
        "a task with one episode keeps it for training"
    );
    assert_eq!(holdout_split(&tasks, 0.25, 3), (train, held));
}

#[test]
fn a_second_writer_on_one_dataset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let w = DatasetWriter::create(dir.path(), spec()).unwrap();
    let err = DatasetWriter::create(dir.path(), spec()).unwrap_err();
    assert!(matches!(err, DataError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by process"), "{err}");
    drop(w);
    DatasetWriter::create(dir.path(), spec()).unwrap();
}

#[test]
fn the_index_reports_deleted_added_and_changed_episodes() {
    let dir = tempfile::tempdir().unwrap();
    let w = DatasetWriter::create(dir.path(), spec()).unwrap();
    let paths: Vec<_> = (0..4)
        .map(|i| {
            w.write(&episode("push-t", EpisodeKind::Expert, i, 5))
                .unwrap()
        })
        .collect();
    drop(w);
    let clean = verify(dir.path(), false, |_, _| {}).unwrap();
    assert!(clean.passed() && clean.indexed, "{clean:?}");

    // deleted: the learners refuse the dataset unless told to go on
    fs::remove_file(&paths[0]).unwrap();
    // changed: a valid episode file, but not the one that was committed
    let other = encode_episode(&episode("push-t", EpisodeKind::Expert, 1, 7)).unwrap();
    fs::write(&paths[1], other).unwrap();
    // added: a valid episode file the dataset never committed
    let added = dir.path().join("episodes/push-t/expert-00009.safetensors");
    fs::write(
        &added,
        encode_episode(&episode("push-t", EpisodeKind::Expert, 9, 5)).unwrap(),
    )
    .unwrap();

    let report = verify(dir.path(), false, |_, _| {}).unwrap();
    assert!(!report.passed());
    assert_eq!(report.missing, vec![paths[0].clone()]);
    assert_eq!(report.changed, vec![paths[1].clone()]);
    assert_eq!(report.extra, vec![added.clone()]);
    assert!(report.bad.is_empty(), "{:?}", report.bad);

    let err = Dataset::open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("missing 1 of the 4") && err.contains("--allow-missing"),
        "{err}"
    );
    let info = info(dir.path()).unwrap();
    assert!(!info.intact());
    assert_eq!(info.missing, vec![paths[0].clone()]);
    assert_eq!(info.total.episodes, 3, "the extra file is not counted");

    // --allow-missing: the learners go on with what is there (the uncommitted file left out)
    set_allow_missing(true);
    let ds = Dataset::open(dir.path());
    set_allow_missing(false);
    assert_eq!(ds.unwrap().entries().len(), 3);

    // --reindex: the index lists what is there now, and the dataset verifies again
    let re = verify(dir.path(), true, |_, _| {}).unwrap();
    assert!(re.reindexed);
    let after = verify(dir.path(), false, |_, _| {}).unwrap();
    assert!(after.passed(), "{after:?}");
    assert_eq!(Dataset::open(dir.path()).unwrap().entries().len(), 4);
}

#[test]
fn a_dataset_without_an_index_opens_and_gets_one_when_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let w = DatasetWriter::create(dir.path(), spec()).unwrap();
    for i in 0..2 {
        w.write(&episode("push-t", EpisodeKind::Random, i, 3))
            .unwrap();
    }
    drop(w);
    fs::remove_file(dir.path().join("index.json")).unwrap();
    let report = verify(dir.path(), false, |_, _| {}).unwrap();
    assert!(report.passed() && !report.indexed);
    assert_eq!(Dataset::open(dir.path()).unwrap().entries().len(), 2);
    // a resumed collection indexes the intact files it finds and skips them
    let w = DatasetWriter::create(dir.path(), spec()).unwrap();
    assert!(w.contains("push-t", EpisodeKind::Random, 1));
    drop(w);
    assert!(verify(dir.path(), false, |_, _| {}).unwrap().indexed);
}
