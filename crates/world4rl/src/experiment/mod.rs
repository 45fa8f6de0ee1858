//! The experiment layer: the config, the typed list of stages and the rule that runs one, the run
//! directory, the machine a stage ran on, replicates and the report. The stages themselves are in `crate::stages`.

pub mod config;
pub mod gates;
pub mod machine;
pub mod pipeline;
pub mod replicate;
pub mod report;
pub mod run;
pub mod stage;
pub mod stage_id;
