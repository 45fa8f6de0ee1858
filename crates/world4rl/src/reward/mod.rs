//! The reward classifier (World4RL §III-A, Eq. 3): model ([`classifier`]), training ([`train`]) and
//! metrics ([`metrics`]).

pub mod classifier;
mod config;
pub mod metrics;
pub mod train;

pub use classifier::{Backbone, ClassifierConfig, RewardClassifier, RewardMode};
pub use metrics::{roc_auc, BinaryMetrics};
pub use train::{evaluate_frames, train_task, ClassifierReport, RewardConfig};
