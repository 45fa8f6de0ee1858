//! Camera frames into world4rl's square RGB frames: images decoded from their PNG/JPEG bytes, videos
//! decoded by the `ffmpeg` program (a subprocess, so no C library is needed at build time). A frame
//! that is not square is cropped to its centre square, then resized when its side differs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use image::imageops::FilterType;
use image::RgbImage;

/// Decodes one encoded image (PNG, JPEG) into `size × size × 3` bytes.
pub fn decode_image(bytes: &[u8], size: usize, what: &str) -> Result<Vec<u8>> {
    let img = image::load_from_memory(bytes)
        .with_context(|| format!("{what}: the image bytes are not a readable PNG or JPEG"))?
        .to_rgb8();
    Ok(square(img, size).into_raw())
}

/// Centre square of `img`, resized to `size` when needed.
pub fn square(img: RgbImage, size: usize) -> RgbImage {
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let img = if w != h {
        image::imageops::crop_imm(&img, (w - side) / 2, (h - side) / 2, side, side).to_image()
    } else {
        img
    };
    if side as usize == size {
        img
    } else {
        image::imageops::resize(&img, size as u32, size as u32, FilterType::Triangle)
    }
}

/// The `ffmpeg` program: `WORLD4RL_FFMPEG` when set, else `ffmpeg` on the PATH.
pub fn ffmpeg_program() -> Result<PathBuf> {
    let prog = std::env::var_os("WORLD4RL_FFMPEG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("ffmpeg"));
    match Command::new(&prog).arg("-version").output() {
        Ok(o) if o.status.success() => Ok(prog),
        _ => bail!(
            "this dataset stores a camera as video, and decoding it needs the ffmpeg program, which was not \
             found ({}): install it (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg) or \
             point WORLD4RL_FFMPEG at it",
            prog.display()
        ),
    }
}

/// Every frame of a video file, decoded once.
pub struct VideoFrames {
    /// The file.
    pub path: PathBuf,
    /// Side of the square frames.
    pub size: usize,
    /// `count × size × size × 3` bytes.
    pub data: Vec<u8>,
}

impl VideoFrames {
    /// Number of frames.
    pub fn count(&self) -> usize {
        self.data.len() / (self.size * self.size * 3)
    }

    /// Frame `i`.
    pub fn frame(&self, i: usize) -> &[u8] {
        let n = self.size * self.size * 3;
        &self.data[i * n..(i + 1) * n]
    }
}

/// Decodes every frame of the first video stream of `path` (one output frame per stored frame, no
/// frame-rate conversion) into `size × size` RGB. `source_hw` is the stream's height and width when
/// known: a square stream already at `size` is converted to RGB without any scaling filter.
pub fn decode_video(
    ffmpeg: &Path,
    path: &Path,
    size: usize,
    source_hw: Option<(usize, usize)>,
) -> Result<VideoFrames> {
    ensure!(
        path.is_file(),
        "the video file {} does not exist",
        path.display()
    );
    let mut cmd = Command::new(ffmpeg);
    cmd.args(["-nostdin", "-v", "error", "-i"]).arg(path).args([
        "-map",
        "0:v:0",
        "-fps_mode",
        "passthrough",
    ]);
    if source_hw != Some((size, size)) {
        cmd.arg("-vf").arg(format!(
            "crop='min(iw,ih)':'min(iw,ih)',scale={size}:{size}:flags=area"
        ));
    }
    cmd.args(["-pix_fmt", "rgb24", "-f", "rawvideo", "-"]);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", ffmpeg.display()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        bail!(
            "ffmpeg could not decode {}: {}",
            path.display(),
            msg.lines().last().unwrap_or("no message").trim()
        );
    }
    let n = size * size * 3;
    ensure!(
        out.stdout.len() % n == 0,
        "ffmpeg returned {} bytes for {}, not a whole number of {size}x{size} RGB frames",
        out.stdout.len(),
        path.display()
    );
    Ok(VideoFrames {
        path: path.to_path_buf(),
        size,
        data: out.stdout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_square_images_are_centre_cropped() {
        // 4 wide, 2 high: columns 0 and 3 are red, the centre 2x2 green
        let mut img = RgbImage::new(4, 2);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if x == 0 || x == 3 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 255, 0])
            };
        }
        let sq = square(img, 2);
        assert_eq!(sq.dimensions(), (2, 2));
        assert!(sq.pixels().all(|p| p.0 == [0, 255, 0]));
    }

    #[test]
    fn corrupt_image_bytes_are_refused() {
        let err = decode_image(b"not a png", 8, "frame 3").unwrap_err();
        assert!(format!("{err:#}").contains("frame 3"));
    }
}
