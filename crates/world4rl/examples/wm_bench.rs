//! Times the world model: training steps (Eq. 7 loss, backward, AdamW) and imagination steps on
//! random data, for a preset or for the bake-off spike's reference U-Net.
//!
//! ```text
//! cargo run --release -p world4rl --example wm_bench -- [--preset tiny|cpu|paper | --spike]
//!     [--size PX] [--batch B] [--steps N] [--warmup W] [--threads T] [--channels 32,32,64,64] [--depth D]
//!     [--precision f32|bf16] [--train-precision f32|bf16] [--channels-last] [--train-channels-last] [--train-only]
//! ```
//!
//! `--spike` is the configuration of ../shared/spikes/bakeoff (channels [32,64,64,128], 2 res blocks
//! per level, no level attention, cond 256, 64×64, batch 32, 4 context frames), used by
//! `scripts/bench_world_model.sh` to compare with the PyTorch reference. Prints one JSON line.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};
use world4rl::util::optim::{AdamW, AdamWConfig};
use world4rl::world_model::train::TrainPasses;
use world4rl::world_model::{Batch, Precision, WorldModel, WorldModelConfig};

/// The median; NaN (printed as null) when nothing was timed.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> Result<()> {
    // as the CLI does (WORLD4RL_MALLOC=system measures glibc's defaults)
    let malloc = world4rl::util::alloc::keep_freed_memory()?.label();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let mut cfg = if args.iter().any(|a| a == "--spike") {
        let mut c = WorldModelConfig::cpu();
        c.image_size = 64;
        c.unet.channels = vec![32, 64, 64, 128];
        c.unet.depths = vec![2; 4];
        c.unet.attention = vec![false; 4];
        c.unet.cond_channels = 256;
        c
    } else {
        WorldModelConfig::preset(&get("--preset").unwrap_or_else(|| "cpu".into()))?
    };
    if let Some(s) = get("--size") {
        cfg.image_size = s.parse().context("--size")?;
    }
    if let Some(c) = get("--channels") {
        cfg.unet.channels = c
            .split(',')
            .map(|x| x.parse())
            .collect::<Result<_, _>>()
            .context("--channels")?;
        let n = cfg.unet.channels.len();
        cfg.unet.depths.resize(n, 1);
        cfg.unet.attention.resize(n, false);
    }
    if let Some(d) = get("--depth") {
        let d: usize = d.parse().context("--depth")?;
        cfg.unet.depths = vec![d; cfg.unet.channels.len()];
    }
    if let Some(a) = get("--attention") {
        cfg.unet.attention = a.split(',').map(|x| x == "1" || x == "true").collect();
    }
    let batch: i64 = get("--batch").map(|b| b.parse()).transpose()?.unwrap_or(32);
    let steps: usize = get("--steps").map(|b| b.parse()).transpose()?.unwrap_or(7);
    let warm: usize = get("--warmup").map(|b| b.parse()).transpose()?.unwrap_or(2);
    let threads: i32 = get("--threads")
        .map(|b| b.parse())
        .transpose()?
        .unwrap_or(1);
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    tch::set_num_threads(threads);
    tch::set_num_interop_threads(1);
    tch::manual_seed(0);
    let dev = Device::Cpu;
    let a = 2usize;
    let mut wm = WorldModel::new(cfg.clone(), a, dev)?;
    let mut opt = AdamW::new(wm.var_store(), AdamWConfig::default());
    // `--train-precision bf16`: mixed precision as `world_model.precision = "bf16"` trains
    let train_precision: Precision = get("--train-precision")
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or_default();
    // `--train-channels-last`: the training step on channels-last activations too
    wm.set_channels_last(args.iter().any(|a| a == "--train-channels-last"));
    let mut passes = TrainPasses::new(&wm, train_precision)?;
    let s = cfg.image_size as i64;
    let l = cfg.context as i64;
    let opts = (Kind::Float, dev);
    let batch_t = Batch {
        context: Tensor::rand([batch, l, 3, s, s], opts) * 2.0 - 1.0,
        actions: Tensor::rand([batch, l, a as i64], opts) * 2.0 - 1.0,
        mask: Tensor::ones([batch, l], (Kind::Bool, dev)),
        next: Tensor::rand([batch, 3, s, s], opts) * 2.0 - 1.0,
        after: None,
    };
    let mut train = vec![];
    for i in 0..warm + steps {
        let t0 = Instant::now();
        opt.zero_grad();
        passes.loss_backward(&wm, &batch_t, &Default::default())?;
        opt.clip_grad_norm(1.0);
        opt.step();
        if i >= warm {
            train.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    // the forward and imagination timings use `--precision`
    let precision: Precision = get("--precision")
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or_default();
    wm.set_precision(precision);
    // `--channels-last`: the f32 U-Net on NHWC-strided activations (`refine.world_model_channels_last`)
    let channels_last = args.iter().any(|a| a == "--channels-last");
    wm.set_channels_last(channels_last);
    let mut fwd = vec![];
    let mut img = vec![];
    // `--train-only`: skip the forward and imagination timings (scripts/bench/training.sh)
    let passes_after = if args.iter().any(|a| a == "--train-only") {
        0
    } else {
        warm + steps
    };
    for i in 0..passes_after {
        let t0 = Instant::now();
        tch::no_grad(|| -> Result<()> {
            let _ = wm.loss(&batch_t)?.loss.double_value(&[]);
            Ok(())
        })?;
        let f = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let _ = wm
            .imagine_step(&batch_t.context, &batch_t.actions)?
            .sum(Kind::Float)
            .double_value(&[]);
        let im = t1.elapsed().as_secs_f64() * 1e3;
        if i >= warm {
            fwd.push(f);
            img.push(im);
        }
    }
    let out = serde_json::json!({
        "params": wm.param_count(),
        "image_size": cfg.image_size,
        "channels": cfg.unet.channels,
        "depths": cfg.unet.depths,
        "batch": batch,
        "threads": threads,
        "malloc": malloc,
        "peak_rss_mib": world4rl::util::memory::peak_mib(),
        "train_precision": train_precision,
        "train_channels_last": args.iter().any(|a| a == "--train-channels-last"),
        "train_step_ms_median": median(&mut train),
        "forward_ms_median": median(&mut fwd),
        "imagine_step_ms_median": median(&mut img),
        "sampler_steps": cfg.sampler.steps,
        "precision": precision,
        "channels_last": channels_last,
        "imagine_ms_per_frame": median(&mut img) / batch as f64,
    });
    println!("{out}");
    Ok(())
}
