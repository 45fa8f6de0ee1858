//! The playground's engine thread: it owns the [`PlaySession`], applies the pages' messages, steps
//! while running and publishes every view (binary frames and a JSON state) to the pages.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{oneshot, watch};
use world4rl::playground::{Driver, PlaySession, View};

/// A message from the page.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ClientMsg {
    /// Start a new imagined episode.
    Reset,
    /// The person's current action (held keys or pointer drag).
    Action { action: Vec<f32> },
    /// One step (meant for when paused).
    Step,
    /// Pause or run.
    Pause { paused: bool },
    /// `human`, or the name of one of the task's policies.
    Driver { driver: String },
    /// Switch task (and reset).
    Task { task: String },
    /// Write the current episode as a GIF.
    Record,
}

/// What the session publishes after each change.
pub(crate) struct Update {
    pub(crate) frames: Vec<u8>,
    pub(crate) state: String,
}

pub(crate) struct Command {
    pub(crate) msg: ClientMsg,
    pub(crate) reply: oneshot::Sender<std::result::Result<Option<serde_json::Value>, String>>,
}

fn frame_message(v: &View) -> Vec<u8> {
    let (real_side, real_bytes) = match &v.real {
        Some((b, s)) => (*s, b.as_slice()),
        None => (0, &[][..]),
    };
    let mut out = Vec::with_capacity(12 + v.imagined.len() + real_bytes.len());
    out.extend_from_slice(b"W4");
    out.push(1);
    out.push(u8::from(v.real.is_some()));
    out.extend_from_slice(&(v.size as u16).to_le_bytes());
    out.extend_from_slice(&(real_side as u16).to_le_bytes());
    out.extend_from_slice(&(v.step as u32).to_le_bytes());
    out.extend_from_slice(&v.imagined);
    out.extend_from_slice(real_bytes);
    out
}

/// The engine: owns the session, applies commands, steps while running, publishes every view.
pub(crate) fn engine(
    session: PlaySession,
    commands: mpsc::Receiver<Command>,
    publish: watch::Sender<Arc<Update>>,
    recordings: PathBuf,
    fps: f64,
) {
    let mut e = Engine {
        session,
        publish,
        recordings,
        period: if fps > 0.0 {
            Duration::from_secs_f64(1.0 / fps)
        } else {
            Duration::ZERO
        },
        paused: true,
        human: None,
        next_tick: Instant::now(),
        recent: Default::default(),
        records: 0,
        last_error: None,
    };
    e.publish_state();
    loop {
        let cmd = if e.paused {
            match commands.recv() {
                Ok(c) => Some(c),
                Err(_) => return,
            }
        } else {
            match commands.recv_timeout(e.next_tick.saturating_duration_since(Instant::now())) {
                Ok(c) => Some(c),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        };
        let mut stepped = false;
        if let Some(Command { msg, reply }) = cmd {
            let result = e
                .handle(msg, &mut stepped)
                .map_err(|err| format!("{err:#}"));
            e.last_error = result.as_ref().err().cloned();
            let _ = reply.send(result);
        } else if !e.paused {
            stepped = e.tick();
        }
        if stepped {
            e.recent.push_back(Instant::now());
            while e.recent.len() > 30 {
                e.recent.pop_front();
            }
        }
        e.publish_state();
    }
}

/// The engine thread's state.
struct Engine {
    session: PlaySession,
    publish: watch::Sender<Arc<Update>>,
    recordings: PathBuf,
    /// Time between two steps when running (0: as fast as it goes).
    period: Duration,
    paused: bool,
    /// The last action the page sent (the human driver's).
    human: Option<Vec<f32>>,
    next_tick: Instant,
    /// When the last steps were taken (for the measured frame rate).
    recent: std::collections::VecDeque<Instant>,
    records: usize,
    last_error: Option<String>,
}

impl Engine {
    /// Steps per second over the recent steps.
    fn measured_fps(&self) -> f64 {
        let (Some(first), Some(last)) = (self.recent.front(), self.recent.back()) else {
            return 0.0;
        };
        let span = last.duration_since(*first).as_secs_f64();
        if self.recent.len() >= 2 && span > 0.0 {
            (self.recent.len() - 1) as f64 / span
        } else {
            0.0
        }
    }

    /// Sends the current frames and state to every page.
    fn publish_state(&self) {
        let session = &self.session;
        let v = session.view();
        let (low, high) = session.action_box();
        let state = json!({
            "type": "state",
            "task": session.task(),
            "tasks": session.tasks(),
            "policies": session.policies(),
            "driver": match session.driver() { Driver::Human => "human".to_string(), Driver::Policy(p) => p.clone() },
            "paused": self.paused,
            "step": v.step,
            "horizon": v.horizon,
            "prob": v.prob,
            "threshold": v.threshold,
            "success": v.success,
            "real_success": v.real_success,
            "action": v.action,
            "action_low": low,
            "action_high": high,
            "size": v.size,
            "step_ms": v.step_ms,
            "fps": self.measured_fps(),
            "start_episode": v.start_episode,
            "error": self.last_error,
        });
        self.publish.send_replace(Arc::new(Update {
            frames: frame_message(v),
            state: state.to_string(),
        }));
    }

    /// Carries out one message of a page; `Some` is a reply of its own (a recording's address).
    fn handle(&mut self, msg: ClientMsg, stepped: &mut bool) -> Result<Option<serde_json::Value>> {
        match msg {
            ClientMsg::Reset => {
                self.session.reset()?;
                self.recent.clear();
            }
            ClientMsg::Action { action } => {
                self.human = Some(self.session.check_action(&action)?);
            }
            ClientMsg::Step => {
                self.session.step(self.human.as_deref())?;
                *stepped = true;
            }
            ClientMsg::Pause { paused } => {
                self.paused = paused;
                self.next_tick = Instant::now();
                self.recent.clear();
            }
            ClientMsg::Driver { driver } => {
                let d = if driver == "human" {
                    Driver::Human
                } else {
                    Driver::Policy(driver)
                };
                self.session.set_driver(d)?;
            }
            ClientMsg::Task { task } => {
                self.session.set_task(&task)?;
                self.recent.clear();
            }
            ClientMsg::Record => {
                self.records += 1;
                let name = format!(
                    "{}-{:03}.gif",
                    self.session.task().replace('/', "__"),
                    self.records
                );
                let n = self.session.write_gif(&self.recordings.join(&name))?;
                return Ok(Some(json!({
                    "type": "recorded",
                    "frames": n,
                    "path": self.recordings.join(&name),
                    "url": format!("/recordings/{name}"),
                })));
            }
        }
        Ok(None)
    }

    /// One step of a running episode; a failing step pauses rather than repeat forever.
    fn tick(&mut self) -> bool {
        let ok = match self.session.step(self.human.as_deref()) {
            Ok(_) => true,
            Err(e) => {
                self.paused = true;
                self.last_error = Some(format!("{e:#}"));
                false
            }
        };
        self.next_tick += self.period;
        if self.next_tick < Instant::now() {
            self.next_tick = Instant::now();
        }
        ok
    }
}
