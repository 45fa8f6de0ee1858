//! Clean stops: SIGINT (Ctrl-C) and SIGTERM end the running stage at its next safe point.
//!
//! The command-line tool installs the signal handler; the first signal only raises a flag
//! ([`request_stop`]). Every long loop looks at it ([`stop_requested`]) where stopping loses nothing a
//! resume cannot redo exactly, and then returns [`Interrupted`]:
//! * world-model training at its next checkpoint (a resume from a checkpoint draws exactly what the
//!   uninterrupted run draws, because the random streams are re-seeded there);
//! * collection between two episodes (each episode is committed on its own);
//! * the other learners (BC, classifier, PPO) at once: they restart their task on resume.
//!
//! A second signal exits at once; the data are then as safe as after a SIGKILL (every write is
//! atomic).

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Asks the running stage to stop at its next safe point.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// True once a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Forgets a stop request (tests).
pub fn clear() {
    STOP.store(false, Ordering::SeqCst);
}

/// The error a stage returns when it stopped on request.
#[derive(Debug, thiserror::Error)]
#[error("interrupted: {stage} stopped {at}; run the same command again to resume")]
pub struct Interrupted {
    /// The stage that stopped.
    pub stage: String,
    /// Where it stopped (e.g. "at its checkpoint of step 1500").
    pub at: String,
}

/// `Err(Interrupted)` when a stop was requested: for the loops of stages that restart on resume.
pub fn check(stage: &str) -> Result<(), Interrupted> {
    check_at(stage, "before finishing (it starts over on resume)")
}

/// `Err(Interrupted)` saying where `stage` stopped, when a stop was requested.
pub fn check_at(stage: &str, at: &str) -> Result<(), Interrupted> {
    if stop_requested() {
        return Err(Interrupted {
            stage: stage.to_string(),
            at: at.to_string(),
        });
    }
    Ok(())
}

/// True when `err` (or an error it wraps) is an [`Interrupted`].
pub fn is_interrupted(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<Interrupted>())
}
