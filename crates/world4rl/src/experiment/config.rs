//! Experiment configuration: one TOML file describes a whole experiment (see `configs/`).
//!
//! Every section rejects unknown keys; an error names the file, the line and the key. Sections left out
//! take their documented defaults. Each stage defines its own section struct at the top of its file;
//! this module only composes them.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::eval::collect::CollectConfig;
use crate::eval::evaluate::EvalConfig;
use crate::policy::BcConfig;
use crate::reward::RewardConfig;
use crate::stages::refine::RefineConfig;
use crate::world_model::fidelity::FidelityConfig;
use crate::world_model::train::WorldModelTrainConfig;
use w4rl_envs::{EnvConfig, RenderOptions, RenderQuality};

/// `[experiment]`: what is run and where.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentSection {
    /// Name shown in the report.
    pub name: String,
    /// Suite of the tasks (`tabletop` or `metaworld`).
    pub suite: String,
    /// Tasks of the experiment; the world model is trained on all of them pooled.
    pub tasks: Vec<String>,
    /// Master seed; every stage derives its own seeds from it.
    pub seed: u64,
    /// Side length of the frames the environments render and the dataset stores.
    pub image_size: usize,
    /// The horizon of every real episode the run plays: collection, the validation and test scenes,
    /// the refinement's monitor, the ceilings and the GIFs (0 = each task's own step limit: 50 on the
    /// tabletop, 500 on Meta-World). `collect.max_steps` and `eval.max_steps` are taken from it.
    pub max_steps: usize,
    /// Render quality of the real frames: `cheap` (default), `fast` or `full` (Meta-World; the tabletop
    /// has one renderer). Recorded in the dataset and every policy, which later evaluations render with.
    pub render: RenderQuality,
    /// Camera of the real frames (Meta-World: `corner`, `corner2`, `topview`, ...); empty (the default) =
    /// the suite's own (`corner`).
    pub camera: String,
}

impl ExperimentSection {
    /// The render options of every real environment of the run.
    pub fn render_options(&self) -> RenderOptions {
        RenderOptions {
            quality: self.render,
            camera: self.camera.trim().to_string(),
        }
    }

    /// The run's real environment: frame size, horizon (of a resolved config, where `max_steps` holds
    /// it) and render options; episodes do not end on success (collection's and the ceilings' rule).
    pub fn env_config(&self) -> EnvConfig {
        EnvConfig {
            image_size: self.image_size,
            max_steps: (self.max_steps > 0).then_some(self.max_steps),
            render: self.render_options(),
            ..EnvConfig::default()
        }
    }
}

impl Default for ExperimentSection {
    fn default() -> Self {
        Self {
            name: "world4rl".into(),
            suite: "tabletop".into(),
            tasks: Vec::new(),
            seed: 0,
            image_size: 64,
            max_steps: 0,
            render: RenderQuality::default(),
            camera: String::new(),
        }
    }
}

/// A whole experiment.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentConfig {
    /// What is run.
    pub experiment: ExperimentSection,
    /// The data recipe.
    pub collect: CollectConfig,
    /// The diffusion world model and its training (stage 1).
    pub world_model: WorldModelTrainConfig,
    /// The success classifier (stage 1).
    pub reward: RewardConfig,
    /// The Gaussian BC policy (stage 1).
    pub bc: BcConfig,
    /// PPO in imagination (stage 2).
    pub refine: RefineConfig,
    /// Real-environment evaluation of policies.
    pub eval: EvalConfig,
    /// Open-loop fidelity of the world model (PSNR/SSIM per horizon).
    pub fidelity: FidelityConfig,
}

/// An experiment with every stage value derived once ([`ExperimentConfig::resolve`]): what every
/// stage trains with. Only `resolve` makes one, so a stage can neither receive a file's raw values
/// nor derive them twice (the seeds are mixed with XOR, which a second pass would undo).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ResolvedConfig(ExperimentConfig);

impl std::ops::Deref for ResolvedConfig {
    type Target = ExperimentConfig;
    fn deref(&self) -> &ExperimentConfig {
        &self.0
    }
}

impl ResolvedConfig {
    /// The resolved values as a plain config (for the learners' sections).
    pub fn into_inner(self) -> ExperimentConfig {
        self.0
    }
}

/// The paper's ablation switches (Table IV, Fig. 5) and their values in this config, for the report.
pub fn ablation_switches(cfg: &ExperimentConfig) -> Vec<(String, String)> {
    let p = &cfg.refine.ppo;
    vec![
        (
            "action encoding (world_model.model.action_encoding)".into(),
            format!(
                "{} (K = {})",
                crate::world_model::encoding_name(cfg.world_model.model.action_encoding.kind),
                cfg.world_model.model.action_encoding.bins
            ),
        ),
        (
            "random-action data (collect.random_episodes)".into(),
            if cfg.collect.random_episodes == 0
                && cfg.collect.per_task.values().all(|c| c.random == 0)
            {
                "off".into()
            } else {
                format!("on ({} per task)", cfg.collect.random_episodes)
            },
        ),
        (
            "σ cap (refine.ppo.std_max)".into(),
            if p.std_max >= 1e6 {
                "off".into()
            } else {
                format!("σ ≤ {} (log σ ≤ {:.2})", p.std_max, p.std_max.ln())
            },
        ),
    ]
}

/// Formats a TOML error as "FILE: line L, column C: message".
fn describe(path: &Path, text: &str, err: &toml::de::Error) -> String {
    let msg = err.message().trim().to_string();
    match err.span() {
        Some(span) => {
            let upto = &text[..span.start.min(text.len())];
            let line = upto.matches('\n').count() + 1;
            let col = upto.len() - upto.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            let src = text.lines().nth(line - 1).unwrap_or("").trim();
            format!(
                "{}: line {line}, column {col}: {msg} (in `{src}`)",
                path.display()
            )
        }
        None => format!("{}: {msg}", path.display()),
    }
}

impl ExperimentConfig {
    /// `[eval]` with the experiment's seed as the base of its seeds: the validation and test scenes
    /// every stage that reads a policy in the real environment uses.
    pub fn eval_config(&self) -> EvalConfig {
        EvalConfig {
            seed: self.experiment.seed,
            ..self.eval.clone()
        }
    }

    /// Parses a config file. Unknown keys and wrong types are errors naming the file, line and key.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let cfg = Self::parse_sections(text, path)?;
        cfg.validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    /// The resolved `[world_model]` section of a config file, parsed as [`ExperimentConfig::load`]
    /// parses it (a file holding only that section is fine: `world4rl train world-model` needs no
    /// tasks).
    /// `seed` replaces `experiment.seed` (the `--seed` of the commands).
    pub fn load_world_model(
        path: impl AsRef<Path>,
        seed: Option<u64>,
    ) -> Result<WorldModelTrainConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut cfg = Self::parse_sections(&text, path)?;
        if let Some(s) = seed {
            cfg.experiment.seed = s;
        }
        cfg.world_model
            .validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(cfg.resolve().into_inner().world_model)
    }

    /// Every section, typed, before the checks across sections.
    fn parse_sections(text: &str, path: &Path) -> Result<Self> {
        let mut cfg: Self =
            toml::from_str(text).map_err(|e| anyhow::anyhow!(describe(path, text, &e)))?;
        if cfg.world_model.preset.is_some() {
            // `[world_model] preset = "..."`: the section's keys go on top of the named preset (the
            // typed parse above has already checked every key and type, with line numbers)
            let table: toml::Table =
                toml::from_str(text).map_err(|e| anyhow::anyhow!(describe(path, text, &e)))?;
            let section = match table.get("world_model") {
                Some(toml::Value::Table(t)) => t.clone(),
                _ => toml::Table::new(),
            };
            cfg.world_model = WorldModelTrainConfig::from_table(section)
                .with_context(|| format!("{}", path.display()))?;
        }
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.experiment.image_size >= 8,
            "experiment.image_size must be at least 8"
        );
        anyhow::ensure!(
            !self.experiment.tasks.is_empty(),
            "experiment.tasks is empty: name at least one task (see `world4rl env list`)"
        );
        let horizons: Vec<(&str, usize)> = [
            ("experiment.max_steps", self.experiment.max_steps),
            ("collect.max_steps", self.collect.max_steps),
            ("eval.max_steps", self.eval.max_steps),
        ]
        .into_iter()
        .filter(|(_, h)| *h > 0)
        .collect();
        if let Some((key, h)) = horizons.iter().find(|(_, h)| *h != horizons[0].1) {
            anyhow::bail!(
                "{} = {} and {key} = {h} differ: an experiment has one horizon; set experiment.max_steps alone",
                horizons[0].0,
                horizons[0].1
            );
        }
        self.reward.validate()?;
        self.refine.validate()?;
        anyhow::ensure!(
            self.eval.std_cap > 0.0 && self.eval.std_cap.is_finite(),
            "eval.std_cap must be a positive number (got {})",
            self.eval.std_cap
        );
        anyhow::ensure!(
            self.refine.start != crate::stages::refine::RefineStart::BcFiltered
                || self.bc.filtered_control,
            "refine.start = \"bc-filtered\" refines the filtered BC: set bc.filtered_control = true"
        );
        // the world model that imagines the classifier's training frames is refinement's:
        // `resolve` copies these three from `[refine]`, so a different value written in `[reward]`
        // would be silently replaced
        let (r, d) = (&self.reward, RewardConfig::default());
        anyhow::ensure!(
            r.world_model_precision == d.world_model_precision
                || r.world_model_precision == self.refine.world_model_precision,
            "reward.world_model_precision is taken from refine.world_model_precision; set that instead"
        );
        anyhow::ensure!(
            r.world_model_channels_last == d.world_model_channels_last
                || r.world_model_channels_last == self.refine.world_model_channels_last,
            "reward.world_model_channels_last is taken from refine.world_model_channels_last; set that instead"
        );
        anyhow::ensure!(
            r.world_model_sampler.is_none() || r.world_model_sampler == self.refine.sampler,
            "[reward.world_model_sampler] is taken from [refine.sampler]; set that instead"
        );
        Ok(())
    }

    /// The values every stage trains with, derived once from the file's: the classifier's, BC's and
    /// PPO's and the world model's seeds mixed with `experiment.seed` (XOR), a policy-side `image_size` of 0 replaced by the
    /// world model's frame size (the policy and the classifier then see at deployment the frames they
    /// see in imagination), and the sampler, precision and layout of the world model that imagines the
    /// classifier's training frames set to the ones refinement imagines with. The stage commands and `world4rl run`
    /// both train from this, so one file trains the same models either way; `world4rl config check`
    /// prints it.
    pub fn resolve(&self) -> ResolvedConfig {
        let mut c = self.clone();
        let wm_size = c.world_model.model.image_size;
        let size = |s: usize| if s == 0 { wm_size } else { s };
        c.reward.image_size = size(c.reward.image_size);
        c.bc.image_size = size(c.bc.image_size);
        c.reward.seed ^= c.experiment.seed;
        c.bc.seed ^= c.experiment.seed;
        c.refine.ppo.seed ^= c.experiment.seed;
        c.world_model.seed ^= c.experiment.seed;
        c.reward.world_model_precision = c.refine.world_model_precision;
        c.reward.world_model_channels_last = c.refine.world_model_channels_last;
        c.reward.world_model_sampler = c.refine.sampler.clone();
        // one horizon (`validate` refuses two different ones): every real environment plays it
        let horizon = [
            c.experiment.max_steps,
            c.collect.max_steps,
            c.eval.max_steps,
        ]
        .into_iter()
        .find(|&h| h > 0)
        .unwrap_or(0);
        c.experiment.max_steps = horizon;
        c.collect.max_steps = horizon;
        c.eval.max_steps = horizon;
        ResolvedConfig(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_derives_every_stage_value_once() {
        let text = "[experiment]\ntasks = [\"push-block\"]\nseed = 5\n\n[world_model.model]\nimage_size = 24\n\n[bc]\nimage_size = 0\nseed = 1\n\n[reward]\nimage_size = 20\n\n[refine]\nworld_model_precision = \"bf16\"\nworld_model_channels_last = true\n\n[refine.sampler]\nsteps = 1\n";
        let cfg = ExperimentConfig::parse(text, Path::new("t.toml")).unwrap();
        let r = cfg.resolve();
        assert_eq!(r.bc.seed, 1 ^ 5);
        assert_eq!(r.reward.seed, cfg.reward.seed ^ 5);
        assert_eq!(r.refine.ppo.seed, cfg.refine.ppo.seed ^ 5);
        assert_eq!(r.world_model.seed, cfg.world_model.seed ^ 5);
        assert_eq!(r.bc.image_size, 24, "0 becomes the world model's size");
        assert_eq!(r.reward.image_size, 20, "a size given stays");
        assert_eq!(
            r.reward.world_model_precision,
            crate::world_model::Precision::Bf16
        );
        assert!(r.reward.world_model_channels_last && !cfg.reward.world_model_channels_last);
        assert_eq!(
            r.reward.world_model_sampler.as_ref().map(|s| s.steps),
            Some(1)
        );
        assert!(cfg.reward.world_model_sampler.is_none());
    }

    #[test]
    fn an_experiment_has_one_horizon_for_every_real_environment() {
        let base = "[experiment]\ntasks = [\"push-block\"]\n";
        let parse =
            |extra: &str| ExperimentConfig::parse(&format!("{base}{extra}"), Path::new("t.toml"));
        // the collection's horizon, as older configs wrote it, is the evaluation's too
        let c = parse("\n[collect]\nmax_steps = 20\n").unwrap().resolve();
        assert_eq!(
            (
                c.experiment.max_steps,
                c.collect.max_steps,
                c.eval.max_steps
            ),
            (20, 20, 20)
        );
        let c = parse("max_steps = 30\n\n[eval]\nmax_steps = 30\n")
            .unwrap()
            .resolve();
        assert_eq!((c.collect.max_steps, c.eval.max_steps), (30, 30));
        // unset: every environment keeps the task's own limit
        let c = parse("").unwrap().resolve();
        assert_eq!((c.collect.max_steps, c.eval.max_steps), (0, 0));
        let e = format!(
            "{:#}",
            parse("\n[collect]\nmax_steps = 20\n\n[eval]\nmax_steps = 50\n").unwrap_err()
        );
        assert!(
            e.contains("collect.max_steps = 20 and eval.max_steps = 50 differ"),
            "{e}"
        );
    }

    #[test]
    fn reward_keys_derived_from_refine_are_refused_when_they_differ() {
        let base = "[experiment]\ntasks = [\"push-block\"]\n\n[refine]\nworld_model_precision = \"bf16\"\nworld_model_channels_last = false\n\n";
        let parse =
            |extra: &str| ExperimentConfig::parse(&format!("{base}{extra}"), Path::new("t.toml"));
        // the file as a run folder stores it (defaults written out) and the same value are fine
        assert!(parse("[reward]\nworld_model_precision = \"f32\"\n").is_ok());
        assert!(parse("[reward]\nworld_model_precision = \"bf16\"\n").is_ok());
        let e = format!(
            "{:#}",
            parse("[reward]\nworld_model_channels_last = true\n").unwrap_err()
        );
        assert!(e.contains("refine.world_model_channels_last"), "{e}");
        let e = format!(
            "{:#}",
            parse("[reward.world_model_sampler]\nsteps = 1\n").unwrap_err()
        );
        assert!(e.contains("[refine.sampler]"), "{e}");
        // a run's config.toml (the unresolved file, serialised) parses back
        let cfg = parse("[refine.sampler]\nsteps = 1\n").unwrap();
        let text = toml::to_string_pretty(&cfg).unwrap();
        assert!(ExperimentConfig::parse(&text, Path::new("run.toml")).is_ok());
        // and so does the resolved one
        let text = toml::to_string_pretty(&cfg.resolve()).unwrap();
        assert!(ExperimentConfig::parse(&text, Path::new("resolved.toml")).is_ok());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text =
            "[experiment]\nname = \"x\"\ntasks = [\"push-t\"]\n\n[collect]\nexpert_episodse = 3\n";
        let err = ExperimentConfig::parse(text, Path::new("cfg.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cfg.toml"), "{err}");
        assert!(err.contains("line 6"), "{err}");
        assert!(err.contains("expert_episodse"), "{err}");
    }

    #[test]
    fn acceptance_check_without_episodes_is_refused_at_load() {
        let text = "[experiment]\ntasks = [\"push-block\"]\n\n[refine]\naccept = \"imagined-gain\"\naccept_episodes = 0\n";
        let err = format!(
            "{:#}",
            ExperimentConfig::parse(text, Path::new("c.toml")).unwrap_err()
        );
        assert!(err.contains("accept_episodes"), "{err}");
    }

    #[test]
    fn a_reading_cap_that_is_not_a_positive_sigma_is_refused_at_load() {
        for bad in ["0.0", "-0.25", "nan", "inf"] {
            let text =
                format!("[experiment]\ntasks = [\"push-block\"]\n\n[eval]\nstd_cap = {bad}\n");
            let err = format!(
                "{:#}",
                ExperimentConfig::parse(&text, Path::new("c.toml")).unwrap_err()
            );
            assert!(err.contains("eval.std_cap"), "{bad}: {err}");
        }
    }

    /// The recipe lives in the code's defaults: the demo's file may only name the experiment (tasks,
    /// seed, sizes, budgets, demonstrations per task), so a field's documented default is what the
    /// demo trains with.
    #[test]
    fn the_demo_config_holds_the_experiment_and_the_code_holds_the_recipe() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tabletop-cpu.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().count() <= 40,
            "configs/tabletop-cpu.toml grew past 40 lines"
        );
        let allowed = [
            "experiment.name",
            "experiment.suite",
            "experiment.tasks",
            "experiment.seed",
            "experiment.image_size",
            "collect.expert_episodes",
            "collect.policy_episodes",
            "collect.random_episodes",
            "world_model.max_steps",
            "bc.demos",
            "bc.image_size",
            "bc.demos_per_task.",
            "reward.image_size",
            "refine.ppo.iterations",
            "eval.episodes",
            "eval.validation_episodes",
        ];
        fn keys(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
            for (k, v) in t {
                match v {
                    toml::Value::Table(sub) => keys(sub, &format!("{prefix}{k}."), out),
                    _ => out.push(format!("{prefix}{k}")),
                }
            }
        }
        let mut found = Vec::new();
        keys(&text.parse::<toml::Table>().unwrap(), "", &mut found);
        for key in &found {
            assert!(
                allowed
                    .iter()
                    .any(|a| key == a || (a.ends_with('.') && key.starts_with(a))),
                "configs/tabletop-cpu.toml sets `{key}`: a recipe value belongs in the code's defaults"
            );
        }
        // and the code's defaults are the recipe the docs state
        let cfg = ExperimentConfig::load(&path).unwrap().resolve();
        let (p, i) = (&cfg.refine.ppo, &cfg.refine.imagination);
        assert_eq!(
            cfg.refine.start,
            crate::stages::refine::RefineStart::BcFiltered
        );
        assert_eq!(
            (p.iterations, p.actor_lr, p.target_kl, p.std_min, p.std_max),
            (30, 5e-5, 0.02, 0.02, 1.0)
        );
        assert_eq!(cfg.eval.std_cap, 0.25);
        assert!(p.anneal_lr && p.time_budget_secs == 0.0);
        assert_eq!((i.horizon, i.start_max_step, i.success_frames), (15, 49, 3));
        assert_eq!((cfg.bc.steps, cfg.bc.checkpoint_every), (16000, 2000));
        assert!(cfg.bc.filtered_control);
        assert_eq!(cfg.reward.world_model_frames, 0);
        assert_eq!(cfg.world_model.autoregressive_steps, 1);
    }

    #[test]
    fn reward_members_parse_and_a_misspelt_member_key_is_refused() {
        let text = "[experiment]\ntasks = [\"push-block\"]\n\n[reward]\nworld_model_horizon = 50\n\n[[reward.members]]\nworld_model_horizon = 4\nworld_model_frames = 4000\n";
        let cfg = ExperimentConfig::parse(text, Path::new("c.toml")).unwrap();
        assert_eq!(cfg.reward.members.len(), 1);
        let m = cfg.reward.member(0);
        assert_eq!((m.world_model_horizon, m.world_model_frames), (4, 4000));
        assert_eq!(m.world_model_open_loop_frames, 0);
        assert_eq!(m.seed, cfg.reward.seed.wrapping_add(1));
        assert!(m.members.is_empty());
        let bad = text.replace("world_model_frames = 4000", "world_model_frame = 4000");
        let err = ExperimentConfig::parse(&bad, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("world_model_frame"), "{err}");
        assert!(err.contains("line 9"), "{err}");
        let zero = text.replace("world_model_horizon = 4", "world_model_horizon = 0");
        let err = format!(
            "{:#}",
            ExperimentConfig::parse(&zero, Path::new("c.toml")).unwrap_err()
        );
        assert!(err.contains("members[0]"), "{err}");
    }

    #[test]
    fn wrong_type_names_line() {
        let text = "[experiment]\ntasks = [\"push-t\"]\nseed = \"zero\"\n";
        let err = ExperimentConfig::parse(text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn world_model_preset_under_the_sections_keys() {
        let text = "[experiment]\ntasks = [\"push-t\"]\n\n[world_model]\npreset = \"paper\"\nmax_minutes = 5.0\n";
        let cfg = ExperimentConfig::parse(text, Path::new("c.toml")).unwrap();
        let paper = WorldModelTrainConfig::preset("paper").unwrap();
        assert_eq!(cfg.world_model.model, paper.model);
        assert_eq!(cfg.world_model.max_minutes, 5.0);
        assert_eq!(cfg.world_model.preset, None);
        let back =
            ExperimentConfig::parse(&toml::to_string(&cfg).unwrap(), Path::new("c.toml")).unwrap();
        assert_eq!(cfg, back);
        let bad = "[experiment]\ntasks = [\"push-t\"]\n\n[world_model]\npreset = \"huge\"\n";
        assert!(ExperimentConfig::parse(bad, Path::new("c.toml")).is_err());
    }

    #[test]
    fn every_shipped_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                ExperimentConfig::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
                n += 1;
            }
        }
        assert!(n >= 4, "configs/ holds {n} experiment files");
    }

    #[test]
    fn defaults_round_trip() {
        let text = "[experiment]\ntasks = [\"push-t\"]\n";
        let cfg = ExperimentConfig::parse(text, Path::new("c.toml")).unwrap();
        let back =
            ExperimentConfig::parse(&toml::to_string(&cfg).unwrap(), Path::new("c.toml")).unwrap();
        assert_eq!(cfg, back);
    }

    #[test]
    fn world_model_section_presets_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[experiment]\nname = \"x\"\n\n[world_model]\npreset = \"tiny\"\nmax_steps = 7\nmodel.action_encoding.kind = \"linear\"\n").unwrap();
        let c = ExperimentConfig::load_world_model(&p, None).unwrap();
        let mut want = WorldModelTrainConfig::preset("tiny").unwrap();
        want.max_steps = 7;
        want.model.action_encoding.kind = crate::world_model::action_encoding::EncodingKind::Linear;
        assert_eq!(c, want);
        std::fs::write(&p, "[world_model]\n\nbatch_sise = 3\n").unwrap();
        let e = format!(
            "{:#}",
            ExperimentConfig::load_world_model(&p, None).unwrap_err()
        );
        assert!(
            e.contains("batch_sise") && e.contains("c.toml") && e.contains("line"),
            "{e}"
        );
        std::fs::write(&p, "[world_model]\nmodel.unet.channels = \"wide\"\n").unwrap();
        assert!(ExperimentConfig::load_world_model(&p, None).is_err());
        std::fs::write(&p, "[experiment]\nname = \"x\"\n").unwrap();
        assert_eq!(
            ExperimentConfig::load_world_model(&p, None).unwrap(),
            WorldModelTrainConfig::default()
        );
        // the resolved config round-trips through TOML
        let text = toml::to_string(&want).unwrap();
        let back: WorldModelTrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, want);
    }
}
