//! Neural network modules of the world model: DIAMOND-style blocks and the frame-stacking U-Net
//! used as `F_θ` in the EDM denoiser (World4RL §III-A, Eq. 4 and 6).

pub mod blocks;
pub mod unet;

pub use unet::{ActionEmbedding, InnerModel, InnerModelConfig, UNet, UNetConfig};
