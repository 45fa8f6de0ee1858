//! The Gaussian policy π(a|x) (World4RL Eq. 1), its image encoder, frame preprocessing and behaviour
//! cloning (Eq. 2).

pub mod bc;
pub mod encoder;
pub mod export;
pub mod gaussian;
pub mod obs;
mod obs_batch;
pub mod trunk;

pub use bc::{BcConfig, BcReport, LrSchedule};
pub use encoder::{ConvEncoder, EncoderConfig};
pub use gaussian::{GaussianOut, GaussianPolicy, ObsBatch, ObsHistory, PolicyConfig, PolicySpec};
