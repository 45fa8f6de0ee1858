//! The world model's held-out episodes: the split (stratified per task, reproducible from a seed) and
//! `holdout.json`, which names them so that evaluation finds them again.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use w4rl_data::{Dataset, Episode, EpisodeKind};

use super::train::WorldModelFiles;

/// A held-out episode, by identity (stable across dataset re-opens).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EpisodeId {
    pub task: String,
    pub kind: EpisodeKind,
    pub index: usize,
}

impl EpisodeId {
    pub fn of(ep: &Episode) -> Self {
        Self {
            task: ep.meta.task.clone(),
            kind: ep.meta.kind,
            index: ep.meta.index,
        }
    }
}

/// Splits a dataset into (train, held-out) episodes, as the training does (stratified per task,
/// reproducible from `seed`). Loads every episode.
pub fn split_dataset(
    data: &Dataset,
    holdout_fraction: f64,
    seed: u64,
) -> Result<(Vec<Episode>, Vec<Episode>)> {
    let episodes = data
        .load_where(|_| true)
        .with_context(|| format!("loading the episodes of {}", data.dir().display()))?;
    ensure!(
        !episodes.is_empty(),
        "{} holds no episodes",
        data.dir().display()
    );
    let tasks: Vec<&str> = episodes.iter().map(|e| e.meta.task.as_str()).collect();
    let (train_idx, held_idx) = w4rl_data::holdout_split(&tasks, holdout_fraction, seed);
    let mut slots: Vec<Option<Episode>> = episodes.into_iter().map(Some).collect();
    let train = train_idx.iter().filter_map(|&i| slots[i].take()).collect();
    let held = held_idx.iter().filter_map(|&i| slots[i].take()).collect();
    Ok((train, held))
}

/// Loads the held-out episodes recorded in the training folder `dir` (`holdout.json`).
pub fn load_holdout(dir: &Path, data: &Dataset) -> Result<Vec<Episode>> {
    let paths = WorldModelFiles::in_dir(dir);
    let text = std::fs::read_to_string(&paths.holdout).with_context(|| {
        format!(
            "reading {} (train the world model into this run first)",
            paths.holdout.display()
        )
    })?;
    let ids: Vec<EpisodeId> = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", paths.holdout.display()))?;
    let want: std::collections::BTreeSet<EpisodeId> = ids.into_iter().collect();
    let eps = data.load_where(|m| {
        want.contains(&EpisodeId {
            task: m.task.clone(),
            kind: m.kind,
            index: m.index,
        })
    })?;
    ensure!(
        eps.len() == want.len(),
        "{} lists {} held-out episodes but {} has only {} of them",
        paths.holdout.display(),
        want.len(),
        data.dir().display(),
        eps.len()
    );
    Ok(eps)
}
