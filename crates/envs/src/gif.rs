//! Animated GIFs of episodes (nearest-neighbour upscaling so small frames stay crisp).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use crate::{make, make_expert, rollout, EnvConfig, EnvError, Rollout};

/// Writes RGB frames (`size * size * 3` bytes each, concatenated) as a looping GIF, each frame upscaled
/// `scale` times and shown for `delay_cs` hundredths of a second.
pub fn write_gif(
    path: &Path,
    frames: &[u8],
    size: usize,
    scale: usize,
    delay_cs: u16,
) -> Result<(), EnvError> {
    write_gif_rect(path, frames, size, size, scale, delay_cs)
}

/// [`write_gif`] for frames of `width × height` pixels (e.g. two views side by side).
pub fn write_gif_rect(
    path: &Path,
    frames: &[u8],
    width: usize,
    height: usize,
    scale: usize,
    delay_cs: u16,
) -> Result<(), EnvError> {
    let gif_err = |message: String| EnvError::Gif {
        path: path.to_path_buf(),
        message,
    };
    let n = width * height * 3;
    if frames.is_empty() || frames.len().checked_rem(n) != Some(0) {
        return Err(gif_err(format!(
            "{} bytes is not a whole number of {width}x{height} RGB frames",
            frames.len()
        )));
    }
    let scale = scale.max(1);
    let big_side = |side: usize| -> Result<(usize, u16), EnvError> {
        let s = side
            .checked_mul(scale)
            .filter(|&s| s <= 4096)
            .ok_or_else(|| {
                gif_err(format!(
                    "{side} pixels upscaled {scale} times exceeds 4096 pixels; use a smaller scale"
                ))
            })?;
        Ok((s, s as u16))
    };
    let (w, w16) = big_side(width)?;
    let (h, h16) = big_side(height)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| EnvError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let file = File::create(path).map_err(|source| EnvError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut enc = ::gif::Encoder::new(BufWriter::new(file), w16, h16, &[])
        .map_err(|e| gif_err(e.to_string()))?;
    enc.set_repeat(::gif::Repeat::Infinite)
        .map_err(|e| gif_err(e.to_string()))?;
    let mut big = vec![0u8; w * h * 3];
    for f in frames.chunks_exact(n) {
        for y in 0..h {
            let src = &f[(y / scale) * width * 3..(y / scale + 1) * width * 3];
            let dst = &mut big[y * w * 3..(y + 1) * w * 3];
            for x in 0..w {
                dst[x * 3..x * 3 + 3].copy_from_slice(&src[(x / scale) * 3..(x / scale) * 3 + 3]);
            }
        }
        let mut frame = ::gif::Frame::from_rgb_speed(w16, h16, &big, 10);
        frame.delay = delay_cs;
        enc.write_frame(&frame)
            .map_err(|e| gif_err(e.to_string()))?;
    }
    Ok(())
}

/// What [`expert_gif`] recorded.
#[derive(Clone, Debug)]
pub struct GifSummary {
    /// The full episode.
    pub episode: Rollout,
    /// Frames written.
    pub frames_written: usize,
    /// Every `stride`-th frame was written.
    pub stride: usize,
}

/// Records an expert episode of `task` from `seed` at `size` pixels and writes it as a GIF.
///
/// The GIF stops 5 frames after the first success. With `max_frames = Some(m)` frames are subsampled
/// evenly (the last one kept) so that at most `m` are written; the frame delay grows accordingly, so the GIF
/// still plays in real time (10 control steps per second).
pub fn expert_gif(
    task: &str,
    seed: u64,
    size: usize,
    scale: usize,
    max_frames: Option<usize>,
    path: &Path,
) -> Result<GifSummary, EnvError> {
    let mut env = make(task, &EnvConfig::with_size(size))?;
    let mut expert = make_expert(task)?;
    let ep = rollout(env.as_mut(), expert.as_mut(), seed)?;
    let last = match ep.first_success {
        Some(t) => (t + 5).min(ep.steps),
        None => ep.steps,
    };
    let count = last + 1;
    let stride = match max_frames {
        Some(m) if m >= 2 && count > m => count.div_ceil(m),
        _ => 1,
    };
    let mut idx: Vec<usize> = (0..count).step_by(stride).collect();
    if idx.last() != Some(&last) {
        if idx.len() >= max_frames.unwrap_or(usize::MAX) {
            idx.pop();
        }
        idx.push(last);
    }
    let mut frames = Vec::with_capacity(idx.len() * size * size * 3);
    for &t in &idx {
        frames.extend_from_slice(ep.frame(t));
    }
    let delay = u16::try_from(10 * stride).unwrap_or(u16::MAX);
    write_gif(path, &frames, size, scale, delay)?;
    Ok(GifSummary {
        frames_written: idx.len(),
        episode: ep,
        stride,
    })
}
