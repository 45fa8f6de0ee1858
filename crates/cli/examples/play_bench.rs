//! How many imagined frames per second `world4rl play` sustains: connects to a running server
//! (`world4rl play --run RUN --fps 0 --port P`), lets the session run unpaused for the given seconds and
//! reports the frames that reached the page per second and the median milliseconds per step.
//!
//! `cargo run --release -p world4rl-cli --example play_bench -- 127.0.0.1:P [SECONDS] [DRIVER]`

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .expect("usage: play_bench HOST:PORT [SECONDS] [DRIVER]");
    let secs: f64 = args.next().map_or(20.0, |s| s.parse().expect("SECONDS"));
    let driver = args.next().unwrap_or_else(|| "human".into());
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/ws")).expect("connects");
    let send = |ws: &mut tungstenite::WebSocket<_>, v: Value| {
        ws.send(Message::text(v.to_string())).expect("sends")
    };
    send(&mut ws, json!({"type": "driver", "driver": driver}));
    send(&mut ws, json!({"type": "action", "action": [0.5, 0.0]}));
    send(&mut ws, json!({"type": "reset"}));
    send(&mut ws, json!({"type": "pause", "paused": false}));
    // warm-up: one second
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(1) {
        ws.read().expect("reads");
    }
    let t = Instant::now();
    let (mut frames, mut ms) = (0usize, Vec::new());
    let mut first_step = None;
    let mut last_step = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        match ws.read().expect("reads") {
            Message::Binary(_) => frames += 1,
            Message::Text(s) => {
                let v: Value = serde_json::from_str(s.as_str()).expect("JSON");
                if v["type"] == "state" {
                    let step = v["step"].as_u64().unwrap_or(0);
                    first_step.get_or_insert(step);
                    last_step = step;
                    ms.push(v["step_ms"].as_f64().unwrap_or(0.0));
                } else if v["type"] == "error" {
                    panic!("server error: {v}");
                }
            }
            _ => {}
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    send(&mut ws, json!({"type": "pause", "paused": true}));
    ms.sort_by(|a, b| a.total_cmp(b));
    let steps = last_step.saturating_sub(first_step.unwrap_or(0));
    println!(
        "{:.1} imagined steps/s, {:.1} frames/s at the page, median {:.1} ms per step ({} steps in {elapsed:.1} s, driver {driver})",
        steps as f64 / elapsed,
        frames as f64 / elapsed,
        ms.get(ms.len() / 2).copied().unwrap_or(0.0),
        steps
    );
}
