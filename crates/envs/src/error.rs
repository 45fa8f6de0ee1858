//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong when making or stepping an environment.
///
/// Every variant renders as one sentence saying what went wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The action vector has the wrong number of components.
    #[error("action has {got} components but task `{task}` expects {expected}; pass a vector of length {expected}")]
    ActionDim {
        /// Task name.
        task: String,
        /// Expected action dimension.
        expected: usize,
        /// Received action dimension.
        got: usize,
    },
    /// A component of the action is NaN or infinite.
    #[error("action component {index} of task `{task}` is {value}, not a finite number; actions must be finite (out-of-range finite values are clipped to [-1, 1])")]
    NonFiniteAction {
        /// Task name.
        task: String,
        /// Index of the offending component.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// `step` was called after the episode ended.
    #[error("episode of task `{task}` is over (terminated or truncated at step {steps}); call reset before stepping again")]
    EpisodeOver {
        /// Task name.
        task: String,
        /// Steps taken in the episode.
        steps: usize,
    },
    /// The task name is not in the registry.
    #[error("unknown task `{task}`; known tasks: {}", known.join(", "))]
    UnknownTask {
        /// The requested name.
        task: String,
        /// Every registered task.
        known: Vec<String>,
    },
    /// A configuration value is out of range.
    #[error("invalid environment configuration: {0}")]
    Config(String),
    /// A batched call received the wrong number of items.
    #[error("batch has {got} items but the vectorised env has {expected} environments; pass one item per environment")]
    BatchSize {
        /// Number of environments.
        expected: usize,
        /// Number of items received.
        got: usize,
    },
    /// An environment index past the end of a vectorised env.
    #[error(
        "environment index {index} is out of range: the vectorised env has {len} environments"
    )]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// Number of environments.
        len: usize,
    },
    /// Environments of one vectorised env disagree (image size or action spec).
    #[error("cannot batch these environments: {0}")]
    Mismatch(String),
    /// Writing an output file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A simulator that is not a physics engine failed (the world model of an imagined environment);
    /// `source` keeps its own error type.
    #[error("{env} failed: {source}")]
    Backend {
        /// Which environment.
        env: String,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Encoding a GIF failed.
    #[error("cannot encode GIF {}: {message}", path.display())]
    Gif {
        /// The file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
}
