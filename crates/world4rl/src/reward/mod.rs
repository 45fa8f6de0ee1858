//! The reward classifier (World4RL §III-A, Eq. 3): model ([`classifier`]), training ([`train`]) and
//! metrics ([`metrics`]).

pub mod classifier;
pub mod metrics;
pub mod train;

pub use classifier::{Backbone, ClassifierConfig, RewardClassifier, RewardMode};
pub use metrics::{roc_auc, BinaryMetrics};
pub use train::{
    checkpoint_path, evaluate_frames, train_all, train_task, ClassifierReport, RewardConfig,
};
