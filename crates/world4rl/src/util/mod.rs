//! What every layer uses: the allocator's settings, peak memory, checkpoints, devices, frame layouts, the three
//! disjoint seed sets, the optimiser, logs, progress bars and clean stops.

pub mod alloc;
pub mod checkpoint;
pub mod device;
pub mod frames;
pub mod interrupt;
pub mod json_float;
pub mod memory;
pub mod metrics_log;
pub mod optim;
pub mod progress;
pub mod seeds;
