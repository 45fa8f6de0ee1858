//! `world4rl play`: play inside the run's world model from a browser page.
//!
//! One thread owns the [`PlaySession`] (every tensor); the HTTP server (axum, on a small tokio runtime)
//! serves the page, compiled into the binary, and one WebSocket per page. The page sends small JSON
//! messages; the session answers with its newest view through a `watch` channel, so a slow browser
//! skips frames instead of queueing them. A view goes out as one binary message (the frames) followed
//! by one JSON message (step, classifier probability, ...).
//!
//! Binary frame message: `b"W4"`, version `1`, flags (bit 0: a real frame follows), imagined side
//! (u16 LE), real side (u16 LE, 0 without), step (u32 LE), then the imagined frame's RGB bytes and the
//! real frame's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Args;
use serde_json::json;
use tch::Device;
use tokio::sync::{oneshot, watch};
use w4rl_data::Dataset;
use world4rl::experiment::config::ExperimentConfig;
use world4rl::experiment::run::RunDir;
use world4rl::experiment::stage_id::StageId;
use world4rl::playground::{Driver, PlaySession, PlayTask};
use world4rl::policy::GaussianPolicy;

use crate::play_engine::{engine, ClientMsg, Command, Update};

const PAGE: &str = include_str!("play.html");

/// `world4rl play`.
#[derive(Debug, Args)]
pub struct PlayArgs {
    /// Run directory holding a world model and at least one classifier.
    #[arg(long)]
    pub run: PathBuf,
    /// Task to start on (default: the first task with a classifier).
    #[arg(long)]
    pub task: Option<String>,
    /// Who drives at the start: bc, refined, or none (the person; default refined, else bc, else none).
    #[arg(long)]
    pub policy: Option<String>,
    /// Show the real environment beside the dream, fed the same actions.
    #[arg(long)]
    pub real: bool,
    /// Port (0: any free port; the URL is printed).
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Address to bind (127.0.0.1 keeps the page on this machine).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// Experiment config (default: the run's own config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Dataset whose episodes start the imagined ones (default: the run's held-out rollouts, else its
    /// training dataset).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Most imagined frames per second while running (0: as fast as the machine goes).
    #[arg(long, default_value_t = 15.0)]
    pub fps: f64,
}

#[derive(Clone)]
struct AppState {
    commands: mpsc::Sender<Command>,
    updates: watch::Receiver<Arc<Update>>,
    recordings: PathBuf,
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn recording(State(app): State<AppState>, UrlPath(name): UrlPath<String>) -> Response {
    let ok = name.ends_with(".gif")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.');
    if !ok {
        return (StatusCode::BAD_REQUEST, "bad recording name").into_response();
    }
    match tokio::fs::read(app.recordings.join(&name)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "image/gif")], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no such recording").into_response(),
    }
}

async fn ws(ws: WebSocketUpgrade, State(app): State<AppState>) -> Response {
    ws.on_upgrade(move |socket| session_socket(socket, app))
}

async fn send_update(socket: &mut WebSocket, u: &Update) -> bool {
    socket
        .send(Message::Binary(u.frames.clone().into()))
        .await
        .is_ok()
        && socket
            .send(Message::Text(u.state.clone().into()))
            .await
            .is_ok()
}

async fn send_json(socket: &mut WebSocket, v: serde_json::Value) -> bool {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

async fn session_socket(mut socket: WebSocket, app: AppState) {
    let mut updates = app.updates.clone();
    let first = updates.borrow_and_update().clone();
    if !send_update(&mut socket, &first).await {
        return;
    }
    loop {
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                // newest wins: whatever was published while the last send was under way is skipped
                let u = updates.borrow_and_update().clone();
                if !send_update(&mut socket, &u).await {
                    return;
                }
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.as_str().to_string(),
                    Some(Ok(Message::Binary(_))) => {
                        if !send_json(&mut socket, json!({"type": "error", "message": "binary messages are not understood; send JSON text"})).await {
                            return;
                        }
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let reply = match serde_json::from_str::<ClientMsg>(&text) {
                    Err(e) => Err(format!("malformed message ({e}): expected e.g. {{\"type\": \"step\"}}")),
                    Ok(msg) => {
                        let (tx, rx) = oneshot::channel();
                        if app.commands.send(Command { msg, reply: tx }).is_err() {
                            return;
                        }
                        rx.await.unwrap_or_else(|_| Err("the session stopped".into()))
                    }
                };
                let out = match reply {
                    Ok(Some(v)) => Some(v),
                    Ok(None) => None,
                    Err(message) => Some(json!({"type": "error", "message": message})),
                };
                if let Some(v) = out {
                    if !send_json(&mut socket, v).await {
                        return;
                    }
                }
            }
        }
    }
}

/// The task names with a classifier in `RUN/reward/`, sorted.
fn classifier_tasks(run: &RunDir) -> Vec<String> {
    let mut out = Vec::new();
    let dir = run.path().join(StageId::Reward.name());
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out;
    };
    // a task is a folder holding a classifier; suite-qualified names (`metaworld/door-lock`) nest
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if run.classifier(&name).is_file() {
            out.push(name);
        } else if let Ok(inner) = std::fs::read_dir(e.path()) {
            for f in inner.flatten() {
                let nested = format!("{name}/{}", f.file_name().to_string_lossy());
                if run.classifier(&nested).is_file() {
                    out.push(nested);
                }
            }
        }
    }
    out.sort();
    out
}

/// Loads one task's classifier, policies, start episodes and (with `real`) environment.
fn load_task(
    run: &RunDir,
    cfg: &ExperimentConfig,
    task: &str,
    data: &Path,
    real: bool,
    device: Device,
) -> Result<PlayTask> {
    let classifier = world4rl::stages::refine::load_classifier(&cfg.refine, run, task, device)?;
    let mut policies = Vec::new();
    let candidates = [
        ("bc", run.bc_policy(task)),
        ("refined", run.refined_policy(task)),
    ];
    for (name, path) in candidates {
        if path.is_file() {
            let (p, _) = GaussianPolicy::load(&path, device)
                .with_context(|| format!("loading {}", path.display()))?;
            policies.push((name.to_string(), p));
        }
    }
    let ds = Dataset::open(data).with_context(|| format!("opening {}", data.display()))?;
    let mut starts = Vec::new();
    for (i, e) in ds.entries().iter().enumerate() {
        if e.meta.task == task && e.meta.steps > 0 && starts.len() < 100 {
            starts.push(ds.load(i)?);
        }
    }
    if starts.is_empty() {
        bail!(
            "the dataset {} has no episode of '{task}' to start from (pass --data DATASET)",
            data.display()
        );
    }
    let real = if real {
        let env_cfg = w4rl_envs::EnvConfig {
            image_size: ds.spec().image_size,
            render: world4rl::eval::render::options(&ds.spec().render)?,
            ..Default::default()
        };
        Some(
            w4rl_envs::make(task, &env_cfg)
                .with_context(|| format!("--real: '{task}' has no world4rl environment"))?,
        )
    } else {
        None
    };
    Ok(PlayTask {
        name: task.to_string(),
        classifier,
        policies,
        starts,
        real,
    })
}

/// The run's tasks with a classifier, `first` (when given) first.
fn play_tasks(run: &RunDir, first: Option<&str>) -> Result<Vec<String>> {
    let mut tasks = classifier_tasks(run);
    if tasks.is_empty() {
        bail!(
            "the run {} has no success classifier (RUN/reward/<task>/classifier.safetensors): train one first (world4rl train reward)",
            run.path().display()
        );
    }
    if let Some(t) = first {
        let Some(i) = tasks.iter().position(|x| x == t) else {
            bail!(
                "unknown task '{t}': the run {} has classifiers for {}",
                run.path().display(),
                tasks.join(", ")
            );
        };
        tasks.swap(0, i);
    }
    Ok(tasks)
}

/// Listens on `ip:port`; a port in use says what to do.
fn bind(ip: std::net::IpAddr, port: u16) -> Result<std::net::TcpListener> {
    std::net::TcpListener::bind(SocketAddr::new(ip, port)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "port {port} on {ip} is in use: choose another with --port (0 picks a free one)"
            )
        } else {
            anyhow::anyhow!("cannot listen on {ip}:{port}: {e}")
        }
    })
}

/// `world4rl play`.
pub fn play(args: PlayArgs, device: Device) -> Result<()> {
    if !args.run.is_dir() {
        bail!("the run directory {} does not exist", args.run.display());
    }
    let run = RunDir::open(&args.run)?;
    // resolved as the stages that trained the run resolved it
    let cfg = match &args.config {
        Some(c) => ExperimentConfig::load(c)?,
        None if run.path().join("config.toml").is_file() => {
            ExperimentConfig::load(run.path().join("config.toml"))?
        }
        None => ExperimentConfig::default(),
    }
    .resolve();
    let wm_path = run.world_model();
    if !wm_path.is_file() {
        bail!(
            "the run {} has no world model ({} is missing): train one first (world4rl train world-model, or world4rl run)",
            run.path().display(),
            wm_path.display()
        );
    }
    let tasks = play_tasks(&run, args.task.as_deref())?;
    let ip: std::net::IpAddr = args
        .bind
        .parse()
        .with_context(|| format!("--bind '{}' is not an IP address", args.bind))?;
    if !(args.fps >= 0.0 && args.fps.is_finite()) {
        bail!("--fps must be 0 or positive (got {})", args.fps);
    }
    // bind first: a port in use is reported before minutes of loading
    let listener = bind(ip, args.port)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;

    let wm = world4rl::stages::refine::load_world_model(&cfg.refine, &run, device)?;
    let heldout = run.heldout();
    let mut play_tasks = Vec::new();
    for task in &tasks {
        let data = match &args.data {
            Some(d) => d.clone(),
            None if heldout.is_dir() => heldout.clone(),
            None => crate::cmd_refine::start_dataset_of(&run, task)?,
        };
        play_tasks.push(load_task(&run, &cfg, task, &data, args.real, device)?);
    }
    let has = |name: &str| play_tasks[0].policies.iter().any(|(n, _)| n == name);
    let driver = match args.policy.as_deref() {
        None if has("refined") => Driver::Policy("refined".into()),
        None if has("bc") => Driver::Policy("bc".into()),
        None | Some("none") | Some("human") => Driver::Human,
        Some(p @ ("bc" | "refined")) => Driver::Policy(p.to_string()),
        Some(other) => bail!("--policy '{other}': expected bc, refined or none"),
    };
    let session = PlaySession::new(
        wm,
        play_tasks,
        driver,
        cfg.refine.imagination.success_frames,
    )?;

    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (pub_tx, pub_rx) = watch::channel(Arc::new(Update {
        frames: Vec::new(),
        state: "{}".into(),
    }));
    let recordings = run.path().join("play");
    let rec = recordings.clone();
    let fps = args.fps;
    let engine_thread = std::thread::Builder::new()
        .name("play-session".into())
        .spawn(move || engine(session, cmd_rx, pub_tx, rec, fps))?;

    let app = Router::new()
        .route("/", get(page))
        .route("/ws", get(ws))
        .route("/recordings/{name}", get(recording))
        .with_state(AppState {
            commands: cmd_tx,
            updates: pub_rx,
            recordings,
        });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!("world4rl play: open http://{addr}/ (Ctrl-C stops)");
    use std::io::Write;
    std::io::stdout().flush()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                while !world4rl::util::interrupt::stop_requested() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await
            .context("the playground server failed")
    })?;
    drop(engine_thread);
    Ok(())
}
