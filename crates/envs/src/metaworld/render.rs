//! Headless RGB frames of a Meta-World scene: MuJoCo's renderer through an EGL pbuffer context (Mesa's
//! software device works; no display, X server or GPU needed), from one of the scene's fixed cameras.
//!
//! The default quality is the cheap one measured in `research/environments.md` (no shadows, no multi-sample
//! anti-aliasing: about 10x faster than Meta-World's defaults on llvmpipe); [`RenderConfig::full_quality`]
//! restores the scene's own settings (4x MSAA, 4096 shadow map). The `fast` quality also turns MuJoCo's planar
//! reflections off: every reflective plane or box (the floor, the tops of the table's retaining walls) makes
//! the renderer draw the whole scene once more, mirrored, and on llvmpipe, where 86 % of a step is spent,
//! that is a third of the frame's cost (button-press at 64x64: 55 -> 80 steps/s). The pixels of those
//! surfaces (and of the gripper pads) change.

use std::mem::ManuallyDrop;
use std::sync::Mutex;

use mujoco_rs::prelude::*;
use mujoco_rs::renderer::MjRenderer;
use serde::{Deserialize, Serialize};

use super::{MetaWorld, MetaWorldError};
use crate::RenderQuality;

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
    /// MuJoCo's planar reflections (materials' `reflectance`). Default `true`, as in Meta-World.
    pub reflections: bool,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            size: 64,
            camera: "corner".into(),
            flip_vertical: true,
            msaa_samples: 0,
            shadow_size: 0,
            reflections: true,
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
        self.reflections = true;
        self
    }

    /// Applies a quality preset: `cheap` (the default: no shadows, no MSAA), `fast` (cheap without
    /// reflections) or `full` (Meta-World's settings).
    pub fn with_quality(self, quality: RenderQuality) -> Self {
        let cheap = |reflections| RenderConfig {
            msaa_samples: 0,
            shadow_size: 0,
            reflections,
            ..self.clone()
        };
        match quality {
            RenderQuality::Cheap => cheap(true),
            RenderQuality::Fast => cheap(false),
            RenderQuality::Full => self.full_quality(),
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

/// An offscreen renderer for a [`MetaWorld`] scene, owning an EGL context.
///
/// An OpenGL context can be current on one thread at a time. Every method makes the context current on the
/// calling thread (mujoco-rs does so at each render) and releases it before returning, so the renderer can move
/// between threads (it is `Send`), as environments of a vectorised env do on rayon's pool.
///
/// Making a context and uploading a scene's meshes takes about half a second, so a dropped renderer goes to a
/// small process-wide pool, from which the next renderer of the same scene and settings is taken.
pub struct MetaWorldRenderer {
    inner: ManuallyDrop<MjRenderer>,
    key: PoolKey,
    size: usize,
    flip: bool,
}

/// Renderers are interchangeable between environments of the same scene file and render settings (the context
/// holds the scene's meshes and textures; body positions come from the data at each render).
type PoolKey = (&'static str, RenderConfig);

struct Pooled(PoolKey, MjRenderer);
// SAFETY: see `unsafe impl Send for MetaWorldRenderer`: a pooled renderer's context is not current anywhere.
unsafe impl Send for Pooled {}

/// At most this many idle renderers are kept.
const POOL_MAX: usize = 16;
static POOL: Mutex<Vec<Pooled>> = Mutex::new(Vec::new());

fn pool_take(key: &PoolKey) -> Option<MjRenderer> {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let i = pool.iter().position(|p| &p.0 == key)?;
    Some(pool.swap_remove(i).1)
}

/// Returns the renderer when the pool is full.
fn pool_put(key: PoolKey, r: MjRenderer) -> Option<MjRenderer> {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() >= POOL_MAX {
        return Some(r);
    }
    pool.push(Pooled(key, r));
    None
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
        if !cfg.reflections {
            // only the renderer reads material reflectance; the physics never does
            for r in sim.model_mut().mat_reflectance_mut() {
                *r = 0.0;
            }
        }
        let key: PoolKey = (env.spec.xml, cfg.clone());
        if let Some(inner) = pool_take(&key) {
            return Ok(MetaWorldRenderer {
                inner: ManuallyDrop::new(inner),
                key,
                size: cfg.size,
                flip: cfg.flip_vertical,
            });
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
        egl::release_current()?;
        Ok(MetaWorldRenderer {
            inner: ManuallyDrop::new(inner),
            key,
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
            MetaWorldError::Render(format!("rendering failed: {e} ({e:?})"))
        };
        self.inner.sync_data(&mut env.sim.data).map_err(err)?;
        egl::bind_gl_api()?;
        let rendered = self.inner.render().map_err(err);
        egl::release_current()?;
        rendered?;
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

impl Drop for MetaWorldRenderer {
    fn drop(&mut self) {
        // SAFETY: `inner` is not used after this.
        let inner = unsafe { ManuallyDrop::take(&mut self.inner) };
        if let Some(inner) = pool_put(self.key.clone(), inner) {
            // MjRenderer's own Drop makes its context current on this thread to free the GPU resources; release
            // it afterwards so the thread holds no stale context
            let _ = egl::bind_gl_api();
            drop(inner);
            let _ = egl::release_current();
        }
    }
}

// SAFETY: the only thread-affine part of MjRenderer is its EGL context (glutin marks it !Send for that reason).
// Every method of MetaWorldRenderer, its constructor and its Drop release the context before returning (see
// `egl::release_current`), so it is never current on a thread the renderer has left, and the next call makes it
// current on whichever thread holds the renderer. The remaining state (scene, buffers, MuJoCo's rendering
// context tables) is plain memory owned by the renderer; `&mut self` serialises all use.
unsafe impl Send for MetaWorldRenderer {}

/// Releases the calling thread's current EGL context, through the libEGL that glutin (mujoco-rs) loaded.
mod egl {
    use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
    use std::sync::OnceLock;

    use crate::metaworld::MetaWorldError;

    extern "C" {
        fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    }
    const RTLD_NOW: c_int = 2;
    const EGL_OPENGL_API: c_uint = 0x30A2;

    type GetCurrentDisplay = unsafe extern "C" fn() -> *mut c_void;
    type MakeCurrent =
        unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void, *mut c_void) -> c_uint;
    type BindApi = unsafe extern "C" fn(c_uint) -> c_uint;

    struct Fns {
        get_current_display: GetCurrentDisplay,
        make_current: MakeCurrent,
        bind_api: BindApi,
    }

    fn load() -> Option<Fns> {
        // SAFETY: plain dlopen/dlsym of libEGL's documented entry points with their C signatures.
        unsafe {
            let mut lib = std::ptr::null_mut();
            for name in [c"libEGL.so.1", c"libEGL.so"] {
                lib = dlopen(name.as_ptr(), RTLD_NOW);
                if !lib.is_null() {
                    break;
                }
            }
            if lib.is_null() {
                return None;
            }
            let sym = |n: &CStr| {
                let p = dlsym(lib, n.as_ptr());
                (!p.is_null()).then_some(p)
            };
            Some(Fns {
                get_current_display: std::mem::transmute::<*mut c_void, GetCurrentDisplay>(sym(
                    c"eglGetCurrentDisplay",
                )?),
                make_current: std::mem::transmute::<*mut c_void, MakeCurrent>(sym(
                    c"eglMakeCurrent",
                )?),
                bind_api: std::mem::transmute::<*mut c_void, BindApi>(sym(c"eglBindAPI")?),
            })
        }
    }

    fn fns() -> Result<&'static Fns, MetaWorldError> {
        static FNS: OnceLock<Option<Fns>> = OnceLock::new();
        FNS.get_or_init(load).as_ref().ok_or_else(|| {
            MetaWorldError::Render("cannot load libEGL.so.1 (install libegl1)".into())
        })
    }

    /// Selects desktop OpenGL as the calling thread's EGL client API (a per-thread setting, OpenGL ES by
    /// default), so that the renderer's context can be made current on a thread that did not create it.
    pub fn bind_gl_api() -> Result<(), MetaWorldError> {
        let f = fns()?;
        // SAFETY: eglBindAPI only changes the calling thread's EGL state.
        if unsafe { (f.bind_api)(EGL_OPENGL_API) } == 0 {
            return Err(MetaWorldError::Render(
                "eglBindAPI(EGL_OPENGL_API) failed".into(),
            ));
        }
        Ok(())
    }

    /// Releases the calling thread's current context, if any.
    pub fn release_current() -> Result<(), MetaWorldError> {
        let f = fns()?;
        // SAFETY: EGL calls on the calling thread's own state; releasing with EGL_NO_SURFACE/EGL_NO_CONTEXT is
        // always valid on the display of the current context, and a no-op when nothing is current.
        unsafe {
            (f.bind_api)(EGL_OPENGL_API);
            let display = (f.get_current_display)();
            if display.is_null() {
                return Ok(());
            }
            let null = std::ptr::null_mut();
            if (f.make_current)(display, null, null, null) == 0 {
                return Err(MetaWorldError::Render(
                    "eglMakeCurrent could not release the context".into(),
                ));
            }
        }
        Ok(())
    }
}
