//! Progress bars (indicatif). Bars draw on a terminal only; in logs and CI they stay silent and
//! stages report through `tracing` instead.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A bar of `len` steps with a message, hidden when standard error is not a terminal.
pub fn bar(len: u64, msg: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), draw_target());
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>18} [{bar:32.cyan/blue}] {pos}/{len} {per_sec} eta {eta} {prefix}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(msg.into());
    pb
}

fn draw_target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() && std::env::var_os("WORLD4RL_NO_PROGRESS").is_none() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}
