//! The PPO loop: rollouts with auto-reset, GAE, clipped-surrogate updates, checkpoints.

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::gae::{explained_variance, gae};
use super::{Critic, IterationStats, PpoConfig, PpoOutput, PpoSummary, RolloutEnv};
use crate::policy::gaussian::{GaussianPolicy, ObsBatch, ObsHistory};

struct RolloutBuffer {
    obs: Vec<ObsBatch>,
    actions: Vec<Tensor>,
    logp: Vec<f32>,
    values: Vec<f32>,
    rewards: Vec<f32>,
    dones: Vec<bool>,
    std_sum: f64,
}

#[derive(Default)]
struct EpisodeTracker {
    ret: Vec<f64>,
    len: Vec<usize>,
    success: Vec<bool>,
    finished: Vec<(f64, usize, bool)>,
}

/// The episodes that finished in one rollout.
struct Finished {
    count: usize,
    success_rate: f64,
    mean_return: f64,
    mean_length: f64,
}

impl EpisodeTracker {
    fn new(n: usize) -> Self {
        Self {
            ret: vec![0.0; n],
            len: vec![0; n],
            success: vec![false; n],
            finished: Vec::new(),
        }
    }

    /// The episodes finished since the last call (NaN means when none did).
    fn take_finished(&mut self) -> Finished {
        let finished = std::mem::take(&mut self.finished);
        let k = finished.len();
        let avg = |f: &dyn Fn(&(f64, usize, bool)) -> f64| {
            if k == 0 {
                f64::NAN
            } else {
                finished.iter().map(f).sum::<f64>() / k as f64
            }
        };
        Finished {
            count: k,
            success_rate: avg(&|e| e.2 as u8 as f64),
            mean_return: avg(&|e| e.0),
            mean_length: avg(&|e| e.1 as f64),
        }
    }
}

/// GAE advantages and returns of a rollout, bootstrapped with V of the observations after it.
fn advantages(
    cfg: &PpoConfig,
    ro: &RolloutBuffer,
    policy: &GaussianPolicy,
    critic: &Critic,
    hist: &ObsHistory,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let last_v = tch::no_grad(|| critic.forward(&hist.batch(policy, None)?))?;
    let last_v = Vec::<f32>::try_from(last_v.to_device(Device::Cpu))?;
    Ok(gae(
        &ro.rewards,
        &ro.values,
        &ro.dones,
        &last_v,
        last_v.len(),
        cfg.gamma as f32,
        cfg.gae_lambda as f32,
    ))
}

/// A callback evaluating the current policy (for monitoring), returning a JSON record.
pub type Monitor<'h> = &'h mut dyn FnMut(&GaussianPolicy) -> Result<serde_json::Value>;

/// Hooks called by [`train`]: per-iteration logging, and optional monitoring of the current policy.
pub struct Hooks<'h> {
    /// Receives every iteration's record (the stats, plus whatever the monitor returned).
    pub log: &'h mut dyn FnMut(&serde_json::Value) -> Result<()>,
    /// Called every `monitor_every` iterations (0 = never) with the current policy; its JSON result is
    /// merged into the record under `monitor`. For monitoring only: it never selects checkpoints.
    pub monitor: Option<Monitor<'h>>,
    /// See `monitor`.
    pub monitor_every: usize,
}

/// Steps every environment `rollout_steps` times with actions sampled from the policy, resetting
/// finished episodes at once and bootstrapping truncated ones with V of their last observation.
fn rollout<E: RolloutEnv>(
    cfg: &PpoConfig,
    env: &mut E,
    policy: &GaussianPolicy,
    critic: &Critic,
    hist: &mut ObsHistory,
    tracker: &mut EpisodeTracker,
    rng: &mut ChaCha8Rng,
) -> Result<RolloutBuffer> {
    let n = env.num_envs();
    let gamma = cfg.gamma as f32;
    let mut ro = RolloutBuffer {
        obs: Vec::with_capacity(cfg.rollout_steps),
        actions: Vec::with_capacity(cfg.rollout_steps),
        logp: Vec::with_capacity(cfg.rollout_steps * n),
        values: Vec::with_capacity(cfg.rollout_steps * n),
        rewards: Vec::with_capacity(cfg.rollout_steps * n),
        dones: Vec::with_capacity(cfg.rollout_steps * n),
        std_sum: 0.0,
    };
    for _ in 0..cfg.rollout_steps {
        let ob = hist.batch(policy, None)?;
        let (a, logp, v, std) = tch::no_grad(|| -> Result<_> {
            let out = policy.forward(&ob, 0)?;
            let a = out.sample();
            let logp = out.log_prob(&a);
            let v = critic.forward(&ob)?;
            Ok((
                a,
                logp,
                v,
                out.log_std.exp().mean(Kind::Float).double_value(&[]),
            ))
        })?;
        ro.std_sum += std;
        let steps = env
            .step(&policy.to_env_actions(&a)?)
            .context("stepping the environments")?;
        ro.logp
            .extend(Vec::<f32>::try_from(logp.to_device(Device::Cpu))?);
        ro.values
            .extend(Vec::<f32>::try_from(v.to_device(Device::Cpu))?);
        ro.obs.push(ob);
        ro.actions.push(a);
        let base = ro.rewards.len();
        let mut trunc = Vec::new();
        let mut done_rows = Vec::new();
        for (i, st) in steps.into_iter().enumerate() {
            let done = st.terminated || st.truncated;
            ro.rewards.push(st.reward);
            ro.dones.push(done);
            tracker.ret[i] += st.reward as f64;
            tracker.len[i] += 1;
            tracker.success[i] |= st.info.success;
            if st.truncated && !st.terminated {
                trunc.push(i);
            }
            if done {
                tracker
                    .finished
                    .push((tracker.ret[i], tracker.len[i], tracker.success[i]));
                tracker.ret[i] = 0.0;
                tracker.len[i] = 0;
                tracker.success[i] = false;
                done_rows.push(i);
            }
            hist.push(i, st.obs);
        }
        // bootstrap truncated (not terminated) episodes with V of their last observation
        if !trunc.is_empty() {
            let vb = tch::no_grad(|| critic.forward(&hist.batch(policy, Some(&trunc))?))?;
            for (k, x) in Vec::<f32>::try_from(vb.to_device(Device::Cpu))?
                .into_iter()
                .enumerate()
            {
                ro.rewards[base + trunc[k]] += gamma * x;
            }
        }
        for i in done_rows {
            let o = env.reset_one(i, rng.gen())?;
            hist.reset(i, o);
        }
    }
    Ok(ro)
}

/// Refines `policy` with PPO in `env`. Writes `out.last` every `save_every` iterations and at the end,
/// and `out.best` whenever an iteration's success rate is the best so far, and a snapshot every
/// `out.snapshot_every` iterations. `extra` is stored in the checkpoints' metadata.
pub fn train<E: RolloutEnv>(
    cfg: &PpoConfig,
    env: &mut E,
    policy: &mut GaussianPolicy,
    out: &PpoOutput,
    extra: &serde_json::Value,
    hooks: Hooks<'_>,
) -> Result<PpoSummary> {
    cfg.validate()?;
    ensure!(
        env.num_envs() == cfg.num_envs,
        "the environment batch has {} envs but ppo.num_envs is {}",
        env.num_envs(),
        cfg.num_envs
    );
    let start = Instant::now();
    // checkpoints of an unfinished earlier attempt would be mistaken for this run's
    for p in [&out.best, &out.last] {
        remove_stale(p)?;
    }
    remove_stale_snapshots(out)?;
    tch::manual_seed(cfg.seed as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    policy.set_std_bounds(cfg.std_min, cfg.std_max)?;
    if cfg.residual_scale > 0.0 {
        policy.add_residual(cfg.residual_scale)?;
    }
    let critic = Critic::new(cfg, policy)?;
    let reference = if cfg.kl_to_initial > 0.0 {
        Some(policy.duplicate()?)
    } else {
        None
    };
    let mut actor_opt = nn::Adam::default().build(policy.var_store(), cfg.actor_lr.max(1e-12))?;
    let mut critic_opt = nn::Adam::default().build(critic.var_store(), cfg.critic_lr)?;

    let n = cfg.num_envs;
    let seeds: Vec<u64> = (0..n).map(|_| rng.gen()).collect();
    let mut hist = ObsHistory::new(policy.config().frame_stack, env.reset_all(&seeds)?);
    let mut tracker = EpisodeTracker::new(n);
    let batch = cfg.rollout_steps * n;
    let bar = crate::util::progress::bar(cfg.iterations as u64, "ppo");
    let mut summary = PpoSummary::starting();
    let min_episodes = (n / 4).max(1);
    let mut hooks = hooks;

    for iter in 1..=cfg.iterations as u64 {
        crate::util::interrupt::check("PPO refinement")?;
        if out_of_time(cfg, &start, iter) {
            break;
        }
        // ---- rollout
        let t0 = Instant::now();
        let ro = rollout(cfg, env, policy, &critic, &mut hist, &mut tracker, &mut rng)?;
        let (adv, ret) = advantages(cfg, &ro, policy, &critic, &hist)?;
        let rollout_seconds = t0.elapsed().as_secs_f64();

        // ---- episodes finished in this rollout: they measure the policy as it was before this
        // iteration's update, so the best checkpoint is written now, before the update
        let episodes = tracker.take_finished();
        let success_rate = episodes.success_rate;
        if episodes.count >= min_episodes && success_rate > summary.best_success_rate {
            summary.best_success_rate = success_rate;
            summary.best_iteration = iter - 1;
            policy.save(&out.best, tagged(extra, "best", iter - 1, success_rate))?;
        }

        // ---- update
        let t1 = Instant::now();
        if cfg.anneal_lr {
            let frac = lr_fraction(iter, cfg.iterations);
            actor_opt.set_lr(cfg.actor_lr.max(1e-12) * frac);
            critic_opt.set_lr(cfg.critic_lr * frac);
        }
        let update_actor = iter > cfg.critic_warmup_iters as u64;
        let u = update(
            cfg,
            policy,
            &critic,
            reference.as_ref(),
            (&mut actor_opt, &mut critic_opt),
            &ro,
            (&adv, &ret),
            update_actor,
        )
        .with_context(|| format!("ppo: the update of iteration {iter}"))?;
        let update_seconds = t1.elapsed().as_secs_f64();

        // ---- bookkeeping
        let stats = IterationStats {
            step: iter,
            env_steps: iter * batch as u64,
            episodes: episodes.count,
            success_rate,
            mean_return: episodes.mean_return,
            mean_length: episodes.mean_length,
            pg_loss: u.pg_loss,
            v_loss: u.v_loss,
            entropy: u.entropy,
            approx_kl: u.approx_kl,
            kl_initial: u.kl_initial,
            clip_frac: u.clip_frac,
            std: ro.std_sum / cfg.rollout_steps as f64,
            explained_variance: explained_variance(&ro.values, &ret),
            actor_updated: update_actor,
            rollout_seconds,
            update_seconds,
            elapsed: start.elapsed().as_secs_f64(),
        };
        if iter == 1 {
            summary.first_success_rate = stats.success_rate;
        }
        (summary.iterations, summary.env_steps) = (iter, stats.env_steps);
        summary.last_success_rate = stats.success_rate;
        hooks.record(&stats, policy)?;
        bar.inc(1);
        bar.set_prefix(format!("success {:.2}", stats.success_rate));

        // ---- checkpoints
        if out.snapshot_every > 0 && iter % out.snapshot_every as u64 == 0 {
            policy.save(
                &out.snapshot(iter),
                tagged(extra, "snapshot", iter, f64::NAN),
            )?;
        }
        if iter % cfg.save_every as u64 == 0 {
            policy.save(&out.last, tagged(extra, "last", iter, f64::NAN))?;
        }
    }
    bar.finish_and_clear();
    save_final(policy, out, extra, summary.iterations)?;
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// `extra` with the checkpoint's tag, the number of PPO updates behind it and its measured success rate.
fn tagged(
    extra: &serde_json::Value,
    tag: &str,
    updates: u64,
    success_rate: f64,
) -> serde_json::Value {
    let mut m = extra.clone();
    if let serde_json::Value::Object(o) = &mut m {
        o.insert("checkpoint".into(), tag.into());
        o.insert("updates".into(), updates.into());
        o.insert("success_rate".into(), success_rate.into());
    }
    m
}

/// True (and said) when the time budget is used up before iteration `iter`.
fn out_of_time(cfg: &PpoConfig, start: &Instant, iter: u64) -> bool {
    let over = cfg.time_budget_secs > 0.0 && start.elapsed().as_secs_f64() >= cfg.time_budget_secs;
    if over {
        tracing::info!(
            "ppo: time budget of {} s reached after {} iterations",
            cfg.time_budget_secs,
            iter - 1
        );
    }
    over
}

impl PpoSummary {
    /// Before the first iteration.
    fn starting() -> Self {
        Self {
            iterations: 0,
            env_steps: 0,
            seconds: 0.0,
            first_success_rate: f64::NAN,
            best_success_rate: f64::NEG_INFINITY,
            best_iteration: 0,
            last_success_rate: f64::NAN,
        }
    }
}

/// Removes a checkpoint left by an unfinished earlier attempt.
fn remove_stale(p: &std::path::Path) -> Result<()> {
    if p.exists() {
        std::fs::remove_file(p)
            .with_context(|| format!("removing the stale checkpoint {}", p.display()))?;
    }
    Ok(())
}

/// Removes the `iter-<k>.safetensors` snapshots beside `out.last` left by an earlier attempt.
fn remove_stale_snapshots(out: &PpoOutput) -> Result<()> {
    let Some(dir) = out.last.parent().filter(|d| d.is_dir()) else {
        return Ok(());
    };
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for e in entries {
        let path = e?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("iter-") && name.ends_with(".safetensors") {
            remove_stale(&path)?;
        }
    }
    Ok(())
}

/// Writes the last checkpoint, and the best one when no iteration finished enough episodes to rank
/// (the final policy stands in).
fn save_final(
    policy: &GaussianPolicy,
    out: &PpoOutput,
    extra: &serde_json::Value,
    iterations: u64,
) -> Result<()> {
    policy.save(&out.last, tagged(extra, "last", iterations, f64::NAN))?;
    if !out.best.exists() {
        policy.save(&out.best, tagged(extra, "best", iterations, f64::NAN))?;
    }
    Ok(())
}

impl Hooks<'_> {
    /// Logs an iteration's record, with the monitor's result when it is due.
    fn record(&mut self, stats: &IterationStats, policy: &GaussianPolicy) -> Result<()> {
        let mut rec = serde_json::to_value(stats)?;
        if self.monitor_every > 0 && stats.step.is_multiple_of(self.monitor_every as u64) {
            if let Some(m) = self.monitor.as_mut() {
                rec["monitor"] = m(policy)?;
            }
        }
        (self.log)(&rec)?;
        tracing::debug!("ppo iteration {}: {rec}", stats.step);
        Ok(())
    }
}

/// The losses of one update.
struct UpdateStats {
    pg_loss: f64,
    v_loss: f64,
    entropy: f64,
    approx_kl: f64,
    kl_initial: f64,
    clip_frac: f64,
}

/// `update_epochs` passes of minibatch updates over one rollout: the critic always, the actor when
/// `update_actor`; stops early when the approximate KL passes `target_kl`.
#[allow(clippy::too_many_arguments)]
fn update(
    cfg: &PpoConfig,
    policy: &GaussianPolicy,
    critic: &Critic,
    reference: Option<&GaussianPolicy>,
    (actor_opt, critic_opt): (&mut nn::Optimizer, &mut nn::Optimizer),
    ro: &RolloutBuffer,
    (adv, ret): (&[f32], &[f32]),
    update_actor: bool,
) -> Result<UpdateStats> {
    let batch = ro.rewards.len();
    let dev = policy.device();
    let b_obs = ObsBatch::cat(&ro.obs);
    let b_act = Tensor::cat(&ro.actions, 0);
    let b_logp = Tensor::from_slice(&ro.logp).to_device(dev);
    let b_adv = Tensor::from_slice(adv).to_device(dev);
    let b_ret = Tensor::from_slice(ret).to_device(dev);
    let (mut pg_l, mut v_l, mut ent, mut kl, mut clips, mut nclip) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0usize);
    let mut kl_initial = 0.0;
    'epochs: for _ in 0..cfg.update_epochs {
        let perm = Tensor::randperm(batch as i64, (Kind::Int64, dev));
        let mut s = 0;
        while s < batch {
            let len = cfg.minibatch_size.min(batch - s) as i64;
            let idx = perm.narrow(0, s as i64, len);
            s += len as usize;
            let mb_obs = b_obs.select(&idx);
            // critic
            let v = critic.forward(&mb_obs)?;
            let v_loss = (v - b_ret.index_select(0, &idx)).square().mean(Kind::Float) * 0.5;
            critic_opt.zero_grad();
            v_loss.backward();
            critic_opt.clip_grad_norm(cfg.max_grad_norm);
            critic_opt.step();
            v_l = v_loss.double_value(&[]);
            if !update_actor {
                continue;
            }
            // actor
            let o = policy.forward(&mb_obs, 0)?;
            let logratio = o.log_prob(&b_act.index_select(0, &idx)) - b_logp.index_select(0, &idx);
            let ratio = logratio.exp();
            let mut mb_adv = b_adv.index_select(0, &idx);
            if cfg.norm_adv && len > 1 {
                mb_adv = (&mb_adv - mb_adv.mean(Kind::Float)) / (mb_adv.std(true) + 1e-8);
            }
            let pg1 = -&mb_adv * &ratio;
            let pg2 = -&mb_adv * ratio.clamp(1.0 - cfg.clip_coef, 1.0 + cfg.clip_coef);
            let pg_loss = pg1.maximum(&pg2).mean(Kind::Float);
            let entropy = o.entropy().mean(Kind::Float);
            let mut loss = &pg_loss - cfg.ent_coef * &entropy;
            if let Some(r) = reference {
                let r_out = tch::no_grad(|| r.forward(&mb_obs, 0))?;
                let kl_ref = o.kl_to(&r_out).mean(Kind::Float);
                kl_initial = kl_ref.double_value(&[]);
                // out of place: the autograd graph keeps both terms
                loss = loss.g_add(&(kl_ref * cfg.kl_to_initial));
            }
            actor_opt.zero_grad();
            loss.backward();
            actor_opt.clip_grad_norm(cfg.max_grad_norm);
            actor_opt.step();
            let approx_kl = tch::no_grad(|| {
                ((&ratio - 1.0) - &logratio)
                    .mean(Kind::Float)
                    .double_value(&[])
            });
            pg_l = pg_loss.double_value(&[]);
            ent = entropy.double_value(&[]);
            kl = approx_kl;
            clips += tch::no_grad(|| {
                (&ratio - 1.0)
                    .abs()
                    .gt(cfg.clip_coef)
                    .to_kind(Kind::Float)
                    .mean(Kind::Float)
                    .double_value(&[])
            });
            nclip += 1;
            ensure!(
                pg_l.is_finite() && v_l.is_finite(),
                "ppo: a loss became non-finite; lower the learning rates"
            );
            if cfg.target_kl > 0.0 && approx_kl > cfg.target_kl {
                break 'epochs;
            }
        }
    }
    Ok(UpdateStats {
        pg_loss: pg_l,
        v_loss: v_l,
        entropy: ent,
        approx_kl: kl,
        kl_initial,
        clip_frac: if nclip > 0 { clips / nclip as f64 } else { 0.0 },
    })
}

/// The learning-rate fraction of iteration `iter` (1-based) of `iterations` under linear annealing:
/// 1 at the first iteration, `1 / iterations` at the last.
fn lr_fraction(iter: u64, iterations: usize) -> f64 {
    1.0 - (iter.saturating_sub(1) as f64) / (iterations.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::lr_fraction;

    #[test]
    fn annealed_learning_rate_falls_linearly_from_full_to_one_step() {
        assert_eq!(lr_fraction(1, 30), 1.0);
        assert!((lr_fraction(16, 30) - 0.5).abs() < 1e-12);
        assert!((lr_fraction(30, 30) - 1.0 / 30.0).abs() < 1e-12);
        let f: Vec<f64> = (1..=30).map(|i| lr_fraction(i, 30)).collect();
        assert!(f.windows(2).all(|w| w[1] < w[0]) && f[29] > 0.0);
    }
}
