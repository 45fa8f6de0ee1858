//! EDM diffusion for next-frame prediction: the preconditioned denoiser and its loss (World4RL
//! Eq. 4, 6, 7) and the Euler/Heun samplers on the EDM noise schedule.

pub mod denoiser;
pub mod sampler;

pub use denoiser::{
    conditioners, Conditioners, Denoiser, DenoiserBatch, DenoiserConfig, LossOutput,
};
pub use sampler::{sample, sigmas, SamplerConfig, SamplerKind};
