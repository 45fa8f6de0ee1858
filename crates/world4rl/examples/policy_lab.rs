// Scratch experiments (not part of the project; deleted before hand-off).
use std::path::Path;
use anyhow::Result;
use w4rl_data::Dataset;
use world4rl::evaluate::{evaluate_policy, EvalConfig};
use world4rl::policy::bc::{self, BcConfig};
use world4rl::reward::{self, RewardConfig};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let threads: i32 = std::env::var("T").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    tch::set_num_threads(threads);
    tch::set_num_interop_threads(1);
    let ds = Dataset::open("/tmp/w4/data")?;
    match args[1].as_str() {
        "bc" => {
            let task = &args[2];
            let n: usize = args[3].parse()?;
            let steps: usize = args[4].parse()?;
            let size: usize = args.get(5).map(|s| s.parse().unwrap()).unwrap_or(32);
            let mut cfg = BcConfig { demos: n, steps, image_size: size, seed: 1, ..Default::default() };
            if std::env::var("SS").is_ok() { cfg.policy.encoder.spatial_softmax = true; cfg.policy.encoder.strides = vec![2, 2, 1]; }
            if std::env::var("NODI").is_ok() { cfg.dihedral = Some(false); }
            if let Ok(l) = std::env::var("LR") { cfg.lr = l.parse().unwrap(); }
            let (p, r) = bc::train_task(&cfg, &ds, task, tch::Device::Cpu, |v| { eprintln!("{v}"); Ok(()) })?;
            println!("{}", serde_json::to_string(&r)?);
            p.save(Path::new(&format!("/tmp/w4/bc-{task}-{n}.safetensors")), serde_json::json!({}))?;
            let e = evaluate_policy(&p, task, &EvalConfig { episodes: 100, ..Default::default() })?;
            println!("{}", serde_json::to_string(&e)?);
        }
        "eval" => {
            let (p, _) = world4rl::policy::GaussianPolicy::load(Path::new(&args[2]), tch::Device::Cpu)?;
            let e = evaluate_policy(&p, &args[3], &EvalConfig { episodes: 100, ..Default::default() })?;
            println!("{}", serde_json::to_string(&e)?);
        }
        "reward" => {
            let task = &args[2];
            let size: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(32); let steps: usize = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(1500); let mut cfg = RewardConfig { image_size: size, steps, ..Default::default() }; if let Ok(p) = std::env::var("POOL") { cfg.classifier.encoder.pool = p.parse().unwrap(); } if let Ok(l) = std::env::var("LR") { cfg.lr = l.parse().unwrap(); } if std::env::var("NODI").is_ok() { cfg.dihedral = Some(false); } if let Ok(k) = std::env::var("KINDS") { cfg.kinds = k.split(',').map(|x| x.parse().unwrap()).collect(); }
            let (_c, r) = reward::train_task(&cfg, &ds, task, tch::Device::Cpu, |v| { eprintln!("{v}"); Ok(()) })?;
            println!("{}", serde_json::to_string(&r)?);
        }
        "wmspeed" => {
            let b: i64 = args[2].parse()?;
            let mut cfg = world4rl::world_model::WorldModelConfig::cpu();
            if let Some(st) = args.get(3) { cfg.sampler.steps = st.parse()?; }
            let wm = world4rl::world_model::WorldModel::new(cfg, 2, tch::Device::Cpu)?;
            let ctx = tch::Tensor::zeros([b, 4, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
            let a = tch::Tensor::zeros([b, 4, 2], (tch::Kind::Float, tch::Device::Cpu));
            let _ = wm.imagine_step(&ctx, &a)?;
            let t = std::time::Instant::now();
            for _ in 0..5 { let _ = wm.imagine_step(&ctx, &a)?; }
            let dt = t.elapsed().as_secs_f64() / 5.0;
            println!("batch {b}: {dt:.3} s/step, {:.1} frames/s, params {}", b as f64 / dt, wm.param_count());
        }
        _ => anyhow::bail!("?"),
    }
    Ok(())
}
