//! LeRobot datasets in and out of world4rl (no torch).
//!
//! * [`import::import`] reads a LeRobot dataset folder (format v3.0, or v2.0/v2.1) and writes world4rl
//!   episodes: one camera as square RGB frames (images decoded from the parquet, videos by the
//!   `ffmpeg` program), the action, an optional state, and success flags from a chosen source.
//! * [`export::export`] writes a world4rl dataset as a LeRobot v3.0 folder that `lerobot`'s
//!   `LeRobotDataset(repo_id, root=DIR)` loads offline.
//!
//! Nothing is fetched from a hub: both ends are local folders.

pub mod columns;
pub mod export;
pub mod frames;
pub mod import;
pub mod info;
mod plan;
mod source;
mod stats;

pub use export::{export, ExportOptions, ExportReport};
pub use import::{import, task_name, ImportOptions, ImportReport, SuccessSource};
pub use info::{Info, Layout};
