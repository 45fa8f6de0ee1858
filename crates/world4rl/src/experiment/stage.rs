//! One stage of the experiment: a name (its folder in the run directory) and a typed record.
//! [`run_stage`] alone decides whether a stage runs, times it and writes its one `done.json`; the
//! stages themselves (`crate::stages`) only load their inputs, call a learner and save its outputs.

use std::time::Instant;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::experiment::run::{Done, RunDir, DONE_FORMAT};

/// A step of the experiment.
pub trait Stage {
    /// What the stage leaves in its `done.json`.
    type Record: Serialize + DeserializeOwned;

    /// The stage's folder in the run directory, e.g. `bc/push-block`.
    fn name(&self) -> String;

    /// Runs the stage: reads its inputs from `run`, writes its outputs there (not `done.json`).
    fn run(&self, run: &RunDir) -> Result<Self::Record>;

    /// Run again even when finished (the report, which reflects whatever the other stages left).
    fn always_runs(&self) -> bool {
        false
    }

    /// The folders of the stages whose outputs this one reads (`bc-filtered/push-block`,
    /// `world_model`): a finished stage is stale, and runs again, when one of them finished after it.
    fn inputs(&self) -> Vec<String> {
        Vec::new()
    }

    /// Why the finished stage's record no longer covers what the run holds beyond its
    /// [`Stage::inputs`] (a task the record lacks), or `None` when it still does. A stale stage runs
    /// again.
    fn stale(&self, _run: &RunDir, _done: &Done<Self::Record>) -> Result<Option<String>> {
        Ok(None)
    }
}

/// Runs `stage` in `run` unless it finished before and is not [`Stage::stale`] (then its record is
/// returned as it was written). A stop request (Ctrl-C) is honoured before the stage starts; a stage
/// interrupted midway has no `done.json` and resumes (or restarts) on the next call.
pub fn run_stage<S: Stage>(run: &RunDir, stage: &S) -> Result<Done<S::Record>> {
    let name = stage.name();
    if !stage.always_runs() {
        if let Some(done) = run.done::<S::Record>(&name)? {
            match newer_input(run, &name, &stage.inputs())?.or(stage.stale(run, &done)?) {
                None => {
                    tracing::info!("stage {name}: finished before, skipped");
                    return Ok(done);
                }
                Some(why) => {
                    tracing::info!("stage {name}: finished before, but {why}: running it again")
                }
            }
        }
    }
    crate::util::interrupt::check_at(&format!("stage {name}"), "before it started")?;
    tracing::info!("stage {name}");
    crate::util::memory::reset_peak();
    let t0 = Instant::now();
    let record = stage.run(run).with_context(|| format!("stage {name}"))?;
    let done = Done {
        format: DONE_FORMAT,
        stage: name,
        seconds: t0.elapsed().as_secs_f64(),
        record,
        machine: Some(crate::experiment::machine::Machine::current()),
        peak_rss_mib: crate::util::memory::peak_mib(),
    };
    run.write_done(&done)?;
    // what a later run will skip on must read back now, not fail then
    run.done::<S::Record>(&done.stage)?
        .with_context(|| format!("stage {}: its done.json did not read back", done.stage))?;
    Ok(done)
}

/// "`input` finished after it" for the first of `inputs` whose `done.json` is newer than `name`'s.
fn newer_input(run: &RunDir, name: &str, inputs: &[String]) -> Result<Option<String>> {
    let Some(me) = run.finished_at(name)? else {
        return Ok(None);
    };
    for input in inputs {
        if run.finished_at(input)?.is_some_and(|t| t > me) {
            return Ok(Some(format!("{input} finished after it")));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct Counting<'a> {
        calls: &'a Cell<u32>,
        always: bool,
        /// stale while its record is below this
        fresh_from: u32,
    }

    impl Stage for Counting<'_> {
        type Record = u32;
        fn name(&self) -> String {
            "count/one".into()
        }
        fn run(&self, _run: &RunDir) -> Result<u32> {
            self.calls.set(self.calls.get() + 1);
            Ok(self.calls.get())
        }
        fn always_runs(&self) -> bool {
            self.always
        }
        fn stale(&self, _run: &RunDir, done: &Done<u32>) -> Result<Option<String>> {
            Ok((done.record < self.fresh_from).then(|| format!("{} is old", done.record)))
        }
    }

    #[test]
    fn a_finished_stage_is_skipped_and_keeps_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path()).unwrap();
        let calls = Cell::new(0);
        let s = Counting {
            calls: &calls,
            always: false,
            fresh_from: 0,
        };
        assert_eq!(run_stage(&run, &s).unwrap().record, 1);
        assert_eq!(run_stage(&run, &s).unwrap().record, 1);
        assert_eq!(calls.get(), 1);
        let done = run.done::<u32>("count/one").unwrap().unwrap();
        assert_eq!(
            (done.format, done.stage.as_str()),
            (DONE_FORMAT, "count/one")
        );
        let again = Counting {
            calls: &calls,
            always: true,
            fresh_from: 0,
        };
        assert_eq!(run_stage(&run, &again).unwrap().record, 2);
        // a stale record runs the stage again, once: the new record is fresh
        let stale = Counting {
            calls: &calls,
            always: false,
            fresh_from: 3,
        };
        assert_eq!(run_stage(&run, &stale).unwrap().record, 3);
        assert_eq!(run_stage(&run, &stale).unwrap().record, 3);
        assert_eq!(calls.get(), 3);
    }

    struct Reads<'a> {
        calls: &'a Cell<u32>,
        name: &'static str,
        inputs: Vec<String>,
    }

    impl Stage for Reads<'_> {
        type Record = u32;
        fn name(&self) -> String {
            self.name.into()
        }
        fn inputs(&self) -> Vec<String> {
            self.inputs.clone()
        }
        fn run(&self, _run: &RunDir) -> Result<u32> {
            self.calls.set(self.calls.get() + 1);
            Ok(self.calls.get())
        }
    }

    #[test]
    fn a_stage_runs_again_when_an_input_finished_after_it_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path()).unwrap();
        let calls = Cell::new(0);
        let start = Reads {
            calls: &calls,
            name: "bc/one",
            inputs: vec![],
        };
        let refine = Reads {
            calls: &calls,
            name: "refine/one",
            inputs: vec!["bc/one".into(), "world_model".into()],
        };
        run_stage(&run, &start).unwrap();
        assert_eq!(run_stage(&run, &refine).unwrap().record, 2);
        // an input that never ran, and inputs older than the stage, leave it finished
        assert_eq!(run_stage(&run, &refine).unwrap().record, 2);
        // the start trained again (its done.json rewritten later): the refinement is stale, once
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::remove_file(dir.path().join("bc/one/done.json")).unwrap();
        assert_eq!(run_stage(&run, &start).unwrap().record, 3);
        assert_eq!(run_stage(&run, &refine).unwrap().record, 4);
        assert_eq!(run_stage(&run, &refine).unwrap().record, 4);
        assert_eq!(calls.get(), 4);
    }
}
