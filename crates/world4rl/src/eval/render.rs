//! The render options of a run between the three places that hold them: the experiment config
//! (`[experiment] render`, `camera`), the dataset (`dataset.json`'s `render`) and every policy trained on
//! it (its checkpoint's spec), so a resumed run or a later `eval policy` renders the pixels training saw.

use anyhow::{Context, Result};
use w4rl_data::FrameRender;
use w4rl_envs::{RenderOptions, RenderQuality};

/// The record of `opts` in a dataset or a policy: empty fields for the suite's defaults, so a dataset
/// rendered with the defaults is written as before the record existed.
pub fn record(opts: &RenderOptions) -> FrameRender {
    FrameRender {
        quality: if opts.quality == RenderQuality::default() {
            String::new()
        } else {
            opts.quality.name().to_string()
        },
        camera: opts.camera.clone(),
    }
}

/// The environment's render options of a record (empty fields = the suite's defaults).
pub fn options(rec: &FrameRender) -> Result<RenderOptions> {
    let quality = if rec.quality.is_empty() {
        RenderQuality::default()
    } else {
        rec.quality
            .parse()
            .with_context(|| format!("the recorded render quality '{}'", rec.quality))?
    };
    Ok(RenderOptions {
        quality,
        camera: rec.camera.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_the_defaults_record_as_empty() {
        assert!(record(&RenderOptions::default()).is_default());
        let fast = RenderOptions {
            quality: RenderQuality::Fast,
            camera: "corner2".into(),
        };
        assert_eq!(options(&record(&fast)).unwrap(), fast);
        let bad = FrameRender {
            quality: "ultra".into(),
            camera: String::new(),
        };
        let e = format!("{:#}", options(&bad).unwrap_err());
        assert!(e.contains("'ultra'") && e.contains("'fast'"), "{e}");
    }
}
