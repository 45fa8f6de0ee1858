//! Headless RGB frames of a Meta-World scene: MuJoCo's renderer through an EGL pbuffer context (Mesa's
//! software device works; no display, X server or GPU needed), from one of the scene's fixed cameras.
//!
//! The default quality is the cheap one measured in `research/environments.md` (no shadows, no multi-sample
//! anti-aliasing: about 10x faster than Meta-World's defaults on llvmpipe); [`RenderConfig::full_quality`]
//! restores the scene's own settings (4x MSAA, 4096 shadow map).

use mujoco_rs::prelude::*;
use mujoco_rs::renderer::MjRenderer;
use serde::{Deserialize, Serialize};

use super::{MetaWorld, MetaWorldError};

/// How frames are rendered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderConfig {
    /// Side of the square frame in pixels. Default 64.
    pub size: usize,
    /// Name of a fixed camera of the scene (`corner`, `corner2`, `corner3`, `topview`, `behindGripper`, ...).
    /// Default `corner`, the view of the World4RL paper's figures.
    pub camera: String,
    /// Flip the image vertically. Default `true`: Meta-World's `corner` camera renders upside down.
    pub flip_vertical: bool,
    /// Multi-sample anti-aliasing samples of the offscreen buffer (`vis.quality.offsamples`). Default 0.
    pub msaa_samples: u32,
    /// Side of the shadow map (`vis.quality.shadowsize`); 0 turns shadows off. Default 0.
    pub shadow_size: u32,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            size: 64,
            camera: "corner".into(),
            flip_vertical: true,
            msaa_samples: 0,
            shadow_size: 0,
        }
    }
}

impl RenderConfig {
    /// The cheap default quality at another size.
    pub fn with_size(size: usize) -> Self {
        RenderConfig {
            size,
            ..Self::default()
        }
    }

    /// Meta-World's own render settings (those of its scene files: 4x MSAA, shadows with a 4096 map); about
    /// 10x slower on a software renderer.
    pub fn full_quality(mut self) -> Self {
        self.msaa_samples = 4;
        self.shadow_size = 4096;
        self
    }

    /// Applies a named preset: `cheap` (the default) or `full` (Meta-World's settings).
    pub fn with_quality(self, name: &str) -> Result<Self, MetaWorldError> {
        match name {
            "cheap" => Ok(RenderConfig {
                msaa_samples: 0,
                shadow_size: 0,
                ..self
            }),
            "full" => Ok(self.full_quality()),
            other => Err(MetaWorldError::Config(format!(
                "render quality '{other}' is unknown; use 'cheap' or 'full'"
            ))),
        }
    }

    pub fn validate(&self) -> Result<(), MetaWorldError> {
        if !(8..=2048).contains(&self.size) {
            return Err(MetaWorldError::Config(format!(
                "frame size is {} but must be between 8 and 2048 pixels",
                self.size
            )));
        }
        if self.msaa_samples > 16 {
            return Err(MetaWorldError::Config(format!(
                "msaa_samples is {} but must be at most 16",
                self.msaa_samples
            )));
        }
        if self.shadow_size > 16384 {
            return Err(MetaWorldError::Config(format!(
                "shadow_size is {} but must be at most 16384",
                self.shadow_size
            )));
        }
        Ok(())
    }
}

/// An offscreen renderer for a [`MetaWorld`] scene. It owns an OpenGL context, so it is not `Send`: it stays on
/// the thread that made it (the [`crate::Env`] wrapper, [`super::MetaWorldEnv`], keeps both on a worker thread).
pub struct MetaWorldRenderer {
    inner: MjRenderer,
    size: usize,
    flip: bool,
}

impl MetaWorldRenderer {
    /// Sets the scene's visual quality, then creates the context and uploads the scene's meshes and textures.
    pub fn new(
        env: &mut MetaWorld,
        cfg: &RenderConfig,
    ) -> Result<MetaWorldRenderer, MetaWorldError> {
        cfg.validate()?;
        let sim = &mut env.sim;
        let cam = sim.camera(&cfg.camera)?;
        {
            let vis = sim.model_mut().vis_mut();
            vis.quality.offsamples = cfg.msaa_samples as i32;
            vis.quality.shadowsize = cfg.shadow_size as i32;
            let size = cfg.size as i32;
            vis.global.offwidth = vis.global.offwidth.max(size);
            vis.global.offheight = vis.global.offheight.max(size);
        }
        let inner = MjRenderer::builder()
            .width(cfg.size as u32)
            .height(cfg.size as u32)
            .rgb(true)
            .depth(false)
            .camera(MjvCamera::new_fixed(cam))
            .build(sim.model())
            .map_err(|e| MetaWorldError::Render(format!(
                "cannot create the offscreen OpenGL (EGL) context: {e}; install libegl1, libegl-mesa0 and \
                 libgl1-mesa-dri (scripts/setup-mujoco.sh does)"
            )))?;
        Ok(MetaWorldRenderer {
            inner,
            size: cfg.size,
            flip: cfg.flip_vertical,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Renders the current state of `env` (`size * size * 3` RGB bytes, row 0 at the top).
    pub fn render(&mut self, env: &mut MetaWorld) -> Result<Vec<u8>, MetaWorldError> {
        let mut out = Vec::with_capacity(self.size * self.size * 3);
        self.render_into(env, &mut out)?;
        Ok(out)
    }

    /// Renders into `out`, replacing its contents.
    pub fn render_into(
        &mut self,
        env: &mut MetaWorld,
        out: &mut Vec<u8>,
    ) -> Result<(), MetaWorldError> {
        let err = |e: mujoco_rs::renderer::RendererError| {
            MetaWorldError::Render(format!("rendering failed: {e}"))
        };
        self.inner.sync_data(&mut env.sim.data).map_err(err)?;
        self.inner.render().map_err(err)?;
        let rgb = self
            .inner
            .rgb_flat()
            .ok_or_else(|| MetaWorldError::Render("the renderer returned no RGB buffer".into()))?;
        let row = self.size * 3;
        out.clear();
        if self.flip {
            out.reserve(rgb.len());
            for r in rgb.chunks_exact(row).rev() {
                out.extend_from_slice(r);
            }
        } else {
            out.extend_from_slice(rgb);
        }
        Ok(())
    }
}
