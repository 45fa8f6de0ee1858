// Scratch experiments (not part of the project; deleted before hand-off).
use anyhow::Result;
use std::path::Path;
use w4rl_data::Dataset;
use world4rl::evaluate::{evaluate_policy, EvalConfig};
use world4rl::policy::bc::{self, BcConfig};
use world4rl::reward::{self, RewardConfig};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let threads: i32 = std::env::var("T")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    tch::set_num_threads(threads);
    tch::set_num_interop_threads(1);
    let ds = Dataset::open(std::env::var("DATA").unwrap_or("/tmp/w4/data".into()))?;
    match args[1].as_str() {
        "bc" => {
            let task = &args[2];
            let n: usize = args[3].parse()?;
            let steps: usize = args[4].parse()?;
            let size: usize = args.get(5).map(|s| s.parse().unwrap()).unwrap_or(32);
            let mut cfg = BcConfig {
                demos: n,
                steps,
                image_size: size,
                seed: 1,
                ..Default::default()
            };
            if std::env::var("SS").is_ok() {
                cfg.policy.encoder.spatial_softmax = true;
                cfg.policy.encoder.strides = vec![2, 2, 1];
            }
            if std::env::var("NODI").is_ok() {
                cfg.dihedral = Some(false);
            }
            if std::env::var("STATE").is_ok() {
                cfg.policy.use_state = true;
                cfg.policy.use_image = false;
            }
            if let Ok(k) = std::env::var("FS") {
                cfg.policy.frame_stack = k.parse().unwrap();
            }
            if let Ok(l) = std::env::var("LR") {
                cfg.lr = l.parse().unwrap();
            }
            let (p, r) = bc::train_task(&cfg, &ds, task, tch::Device::Cpu, |v| {
                eprintln!("{v}");
                Ok(())
            })?;
            println!("{}", serde_json::to_string(&r)?);
            p.save(
                Path::new(&format!("/tmp/w4/bc-{task}-{n}.safetensors")),
                serde_json::json!({}),
            )?;
            let e = evaluate_policy(
                &p,
                task,
                &EvalConfig {
                    episodes: 100,
                    ..Default::default()
                },
            )?;
            println!("{}", serde_json::to_string(&e)?);
        }
        "eval" => {
            let (p, _) =
                world4rl::policy::GaussianPolicy::load(Path::new(&args[2]), tch::Device::Cpu)?;
            let e = evaluate_policy(
                &p,
                &args[3],
                &EvalConfig {
                    episodes: 100,
                    ..Default::default()
                },
            )?;
            println!("{}", serde_json::to_string(&e)?);
        }
        "reward" => {
            let task = &args[2];
            let size: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(32);
            let steps: usize = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(1500);
            let mut cfg = RewardConfig {
                image_size: size,
                steps,
                ..Default::default()
            };
            if let Ok(p) = std::env::var("POOL") {
                cfg.classifier.encoder.pool = p.parse().unwrap();
            }
            if let Ok(l) = std::env::var("LR") {
                cfg.lr = l.parse().unwrap();
            }
            if std::env::var("NODI").is_ok() {
                cfg.dihedral = Some(false);
            }
            if let Ok(k) = std::env::var("KINDS") {
                cfg.kinds = k.split(',').map(|x| x.parse().unwrap()).collect();
            }
            let (_c, r) = reward::train_task(&cfg, &ds, task, tch::Device::Cpu, |v| {
                eprintln!("{v}");
                Ok(())
            })?;
            println!("{}", serde_json::to_string(&r)?);
        }
        "wmspeed" => {
            let b: i64 = args[2].parse()?;
            let mut cfg = world4rl::world_model::WorldModelConfig::cpu();
            if let Some(st) = args.get(3) {
                cfg.sampler.steps = st.parse()?;
            }
            let wm = world4rl::world_model::WorldModel::new(cfg, 2, tch::Device::Cpu)?;
            let ctx = tch::Tensor::zeros([b, 4, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
            let a = tch::Tensor::zeros([b, 4, 2], (tch::Kind::Float, tch::Device::Cpu));
            let _ = wm.imagine_step(&ctx, &a)?;
            let t = std::time::Instant::now();
            for _ in 0..5 {
                let _ = wm.imagine_step(&ctx, &a)?;
            }
            let dt = t.elapsed().as_secs_f64() / 5.0;
            println!(
                "batch {b}: {dt:.3} s/step, {:.1} frames/s, params {}",
                b as f64 / dt,
                wm.param_count()
            );
        }
        "ppo-real" => {
            let (mut p, _) =
                world4rl::policy::GaussianPolicy::load(Path::new(&args[2]), tch::Device::Cpu)?;
            let task = &args[3];
            let secs: f64 = args[4].parse()?;
            let mut cfg = world4rl::ppo::PpoConfig {
                time_budget_secs: secs,
                ..Default::default()
            };
            if let Ok(v) = std::env::var("NENV") {
                cfg.num_envs = v.parse()?;
            }
            if let Ok(v) = std::env::var("RSTEPS") {
                cfg.rollout_steps = v.parse()?;
            }
            if let Ok(v) = std::env::var("ALR") {
                cfg.actor_lr = v.parse()?;
            }
            if let Ok(v) = std::env::var("CLIP") {
                cfg.clip_coef = v.parse()?;
            }
            if let Ok(v) = std::env::var("EPOCHS") {
                cfg.update_epochs = v.parse()?;
            }
            if let Ok(v) = std::env::var("SMIN") {
                cfg.std_min = v.parse()?;
            }
            if let Ok(v) = std::env::var("MB") {
                cfg.minibatch_size = v.parse()?;
            }
            let e0 = evaluate_policy(
                &p,
                task,
                &EvalConfig {
                    episodes: 100,
                    ..Default::default()
                },
            )?;
            println!("before {}", serde_json::to_string(&e0)?);
            let env_cfg = w4rl_envs::EnvConfig {
                image_size: p.spec().render_size(),
                terminate_on_success: true,
                reward: w4rl_envs::RewardKind::Sparse,
                max_steps: None,
            };
            let mut env = w4rl_envs::SyncVecEnv::make(task, cfg.num_envs, &env_cfg)?;
            let out = world4rl::ppo::output_in(Path::new("/tmp/w4"));
            let mut log = |v: &serde_json::Value| {
                eprintln!("{}", v);
                Ok(())
            };
            let hooks = world4rl::ppo::Hooks {
                log: &mut log,
                monitor: None,
                monitor_every: 0,
            };
            let s =
                world4rl::ppo::train(&cfg, &mut env, &mut p, &out, &serde_json::json!({}), hooks)?;
            println!("{}", serde_json::to_string(&s)?);
            let e1 = evaluate_policy(
                &p,
                task,
                &EvalConfig {
                    episodes: 100,
                    ..Default::default()
                },
            )?;
            println!("after {}", serde_json::to_string(&e1)?);
        }
        "bench" => {
            use tch::nn::OptimizerConfig;
            let size: usize = args[2].parse()?;
            let b: i64 = args[3].parse()?;
            let mut cfg = world4rl::policy::PolicyConfig::default();
            if std::env::var("SMALL").is_ok() {
                cfg.encoder = world4rl::policy::EncoderConfig {
                    channels: vec![16, 32, 32],
                    strides: vec![2, 2, 1],
                    spatial_softmax: true,
                    pool: 4,
                    features: 64,
                };
                cfg.hidden = 64;
            }
            if std::env::var("SS").is_ok() {
                cfg.encoder.spatial_softmax = true;
                cfg.encoder.strides = vec![2, 2, 1];
            }
            let spec = world4rl::policy::PolicySpec {
                image_size: size,
                action_dim: 2,
                state_dim: 0,
                action_low: vec![-1.0; 2],
                action_high: vec![1.0; 2],
                task: String::new(),
                render_size: 0,
            };
            let p = world4rl::policy::GaussianPolicy::new(&cfg, &spec, tch::Device::Cpu)?;
            let mut opt = tch::nn::Adam::default().build(p.var_store(), 1e-4)?;
            let img = tch::Tensor::randint(
                255,
                [b, 6, size as i64, size as i64],
                (tch::Kind::Uint8, tch::Device::Cpu),
            );
            let obs = world4rl::policy::ObsBatch {
                image: Some(img),
                state: None,
            };
            let a = tch::Tensor::zeros([b, 2], (tch::Kind::Float, tch::Device::Cpu));
            for pad in [0i64, 2] {
                let t = std::time::Instant::now();
                for _ in 0..20 {
                    let o = p.forward(&obs, pad)?;
                    let l = -o.log_prob(&a).mean(tch::Kind::Float);
                    opt.backward_step(&l);
                }
                println!("pad {pad}: {:.1} ms/step", t.elapsed().as_secs_f64() * 50.0);
            }
            let t = std::time::Instant::now();
            for _ in 0..20 {
                let _ = world4rl::policy::obs::dihedral(
                    obs.image.as_ref().unwrap(),
                    &world4rl::policy::obs::random_dihedral_picks(b),
                );
            }
            println!("dihedral: {:.1} ms", t.elapsed().as_secs_f64() * 50.0);
            let t = std::time::Instant::now();
            for _ in 0..20 {
                let _ = tch::no_grad(|| p.forward(&obs, 0));
            }
            println!("fwd: {:.1} ms", t.elapsed().as_secs_f64() * 50.0);
        }
        "clfwm" => {
            let run = Path::new(&args[2]);
            let task = &args[3];
            let (wm, _) = world4rl::world_model::WorldModel::load(
                &run.join("world_model/model.safetensors"),
                tch::Device::Cpu,
            )?;
            let (clf, _) = world4rl::reward::RewardClassifier::load(
                &run.join(format!("reward/{task}/classifier.safetensors")),
                tch::Device::Cpu,
            )?;
            let eps: Vec<_> = ds
                .load_where(|m| &m.task == task && m.kind != w4rl_data::EpisodeKind::Random)?
                .into_iter()
                .take(12)
                .collect();
            let refs: Vec<_> = eps.iter().collect();
            let t = std::time::Instant::now();
            let m = world4rl::imagined_env::classifier_on_world_model(&wm, &clf, &refs, 64)?;
            println!(
                "{} ({:.0} s)",
                serde_json::to_string(&m)?,
                t.elapsed().as_secs_f64()
            );
        }
        _ => anyhow::bail!("?"),
    }
    Ok(())
}
