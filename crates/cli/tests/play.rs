//! `world4rl play` driven over its WebSocket, on a tiny run: reset, 20 steps by hand, the policy takes
//! over for 20 more, a malformed message is answered with an error and the session goes on, a GIF is
//! recorded and served; and the refusals (no world model, unknown task, port in use) are one sentence.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::world4rl;
use fantoccini::actions::InputSource;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

fn ok(o: Output) {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tabletop-tiny.toml")
}

/// A tiny run with a world model, classifiers and BC policies (no refinement).
fn tiny_run(dir: &Path) -> PathBuf {
    let cfg = tiny();
    let cfg = cfg.to_str().unwrap();
    let ds = dir.join("ds");
    let run = dir.join("run");
    ok(world4rl(&[
        "--threads",
        "1",
        "collect",
        "--config",
        cfg,
        "--out",
        ds.to_str().unwrap(),
    ]));
    for stage in ["world-model", "reward", "bc"] {
        ok(world4rl(&[
            "--threads",
            "1",
            "train",
            stage,
            "--config",
            cfg,
            "--data",
            ds.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ]));
    }
    run
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(run: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_world4rl"))
        .args(["--threads", "1", "play", "--run"])
        .arg(run)
        .args(["--config", tiny().to_str().unwrap(), "--port", "0"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    let port: u16 = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Server { child, port }
}

/// A plain HTTP GET; returns (status line, body).
fn get(port: u16, path: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    (
        head.lines().next().unwrap().to_string(),
        buf[split + 4..].to_vec(),
    )
}

struct Page {
    ws: WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    frame: Vec<u8>,
}

impl Page {
    fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).unwrap();
    }

    /// Reads messages until a JSON one satisfying `want` arrives (keeping the newest frame).
    fn until(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        let t = Instant::now();
        loop {
            assert!(t.elapsed() < Duration::from_secs(60), "timed out");
            match self.ws.read().unwrap() {
                Message::Binary(b) => self.frame = b.to_vec(),
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if want(&v) {
                        return v;
                    }
                }
                _ => {}
            }
        }
    }

    fn state_at(&mut self, step: u64) -> Value {
        self.until(|v| v["type"] == "state" && v["step"] == step)
    }
}

#[test]
fn the_playground_runs_over_its_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let server = serve(&run, &["--policy", "none", "--real"]);

    let (status, body) = get(server.port, "/");
    assert!(status.contains("200"), "{status}");
    assert!(String::from_utf8_lossy(&body).contains("id=\"imagined\""));

    let (ws, _) = tungstenite::connect(format!("ws://127.0.0.1:{}/ws", server.port)).unwrap();
    let mut page = Page {
        ws,
        frame: Vec::new(),
    };
    let first = page.until(|v| v["type"] == "state");
    assert_eq!(first["driver"], "human");
    assert_eq!(first["tasks"], json!(["push-block", "slide-handle"]));
    assert_eq!(first["policies"], json!(["bc"]));
    let side = first["size"].as_u64().unwrap() as usize;
    assert_eq!(side, 16, "the tiny world model's frames");

    page.send(json!({"type": "pause", "paused": true}));
    page.until(|v| v["type"] == "state" && v["paused"] == true);
    page.send(json!({"type": "reset"}));
    page.state_at(0);
    let start = page.frame.clone();

    // by hand: push right for 20 steps
    page.send(json!({"type": "action", "action": [1.0, 0.0]}));
    for k in 1..=20u64 {
        page.send(json!({"type": "step"}));
        let s = page.state_at(k);
        assert_eq!(s["action"], json!([1.0, 0.0]));
        let f = &page.frame;
        assert_eq!(&f[..3], b"W4\x01");
        assert_eq!(f[3] & 1, 1, "a real frame follows with --real");
        assert_eq!(u16::from_le_bytes([f[4], f[5]]) as usize, side);
        let real = u16::from_le_bytes([f[6], f[7]]) as usize;
        assert_eq!(real, 32, "the real env renders at the dataset's size");
        assert_eq!(u32::from_le_bytes([f[8], f[9], f[10], f[11]]) as u64, k);
        assert_eq!(f.len(), 12 + side * side * 3 + real * real * 3);
        assert!(s["prob"].as_f64().unwrap() >= 0.0 && s["prob"].as_f64().unwrap() <= 1.0);
    }
    assert_ne!(page.frame, start, "the imagined and real frames moved");

    // a malformed message is answered, and the session goes on
    page.ws.send(Message::text("{not json")).unwrap();
    let e = page.until(|v| v["type"] == "error");
    assert!(e["message"].as_str().unwrap().contains("malformed"), "{e}");
    page.send(json!({"type": "jump", "height": 3}));
    page.until(|v| v["type"] == "error");
    page.send(json!({"type": "action", "action": [0.5]}));
    let e = page.until(|v| v["type"] == "error");
    assert!(e["message"].as_str().unwrap().contains("2"), "{e}");
    page.send(json!({"type": "driver", "driver": "refined"}));
    let e = page.until(|v| v["type"] == "error");
    assert!(
        e["message"].as_str().unwrap().contains("no refined policy"),
        "{e}"
    );

    // the policy takes over
    page.send(json!({"type": "reset"}));
    page.state_at(0);
    page.send(json!({"type": "driver", "driver": "bc"}));
    page.until(|v| v["type"] == "state" && v["driver"] == "bc");
    for k in 1..=20u64 {
        page.send(json!({"type": "step"}));
        let s = page.state_at(k);
        assert_eq!(s["driver"], "bc");
        assert_eq!(s["action"].as_array().unwrap().len(), 2);
    }

    // a GIF of the episode, served back
    page.send(json!({"type": "record"}));
    let r = page.until(|v| v["type"] == "recorded");
    assert_eq!(r["frames"], 21);
    let (status, gif) = get(server.port, r["url"].as_str().unwrap());
    assert!(status.contains("200"), "{status}");
    assert_eq!(&gif[..6], b"GIF89a");
    let (status, _) = get(server.port, "/recordings/..%2Fconfig.toml");
    assert!(!status.contains("200"), "{status}");

    // task switch, then running on its own
    page.send(json!({"type": "task", "task": "slide-handle"}));
    page.until(|v| v["type"] == "state" && v["task"] == "slide-handle" && v["step"] == 0);
    page.send(json!({"type": "pause", "paused": false}));
    page.state_at(5);
}

fn refused(args: &[&str]) -> String {
    let o = world4rl(args);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn the_playground_refuses_what_it_cannot_play() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = refused(&["play", "--run", empty.to_str().unwrap()]);
    assert!(err.contains("no world model"), "{err}");
    let err = refused(&["play", "--run", dir.path().join("nope").to_str().unwrap()]);
    assert!(err.contains("does not exist"), "{err}");

    // a port in use is named before anything is loaded
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    std::fs::create_dir_all(empty.join("world_model")).unwrap();
    std::fs::write(empty.join("world_model/model.safetensors"), b"x").unwrap();
    std::fs::create_dir_all(empty.join("reward/push-block")).unwrap();
    std::fs::write(empty.join("reward/push-block/classifier.safetensors"), b"x").unwrap();
    // suite-qualified task names nest one folder deeper
    std::fs::create_dir_all(empty.join("reward/metaworld/door-lock")).unwrap();
    std::fs::write(
        empty.join("reward/metaworld/door-lock/classifier.safetensors"),
        b"x",
    )
    .unwrap();
    let err = refused(&["play", "--run", empty.to_str().unwrap(), "--port", &port]);
    assert!(err.contains("in use") && err.contains(&port), "{err}");
    let err = refused(&[
        "play",
        "--run",
        empty.to_str().unwrap(),
        "--task",
        "open-door",
    ]);
    assert!(
        err.contains("unknown task 'open-door'") && err.contains("metaworld/door-lock, push-block"),
        "{err}"
    );
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `chromedriver` on a free port, killed on drop.
fn chromedriver() -> Server {
    let port = free_port();
    let program = std::env::var("WORLD4RL_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let child = Command::new(&program)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {program} ({e}): install chromium and chromium-driver (scripts/setup.sh does with WORLD4RL_BROWSER=1)")
        });
    // wait until it answers
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, port }
}

/// The page in headless Chromium: it loads and shows frames, a held key moves the pusher (the action
/// sent is the key's and the imagined frame changes), the driver menu hands control to the BC policy,
/// and a screenshot is saved as a test artefact (`target/test-artifacts/play.png`).
#[test]
fn the_page_plays_in_a_headless_browser() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let server = serve(&run, &["--policy", "none", "--real"]);
    let driver = chromedriver();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1000"]}),
        );
        let c = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session in headless chromium");
        c.goto(&format!("http://127.0.0.1:{}/", server.port))
            .await
            .unwrap();
        let js = |c: &fantoccini::Client, s: &'static str| {
            let c = c.clone();
            async move { c.execute(s, vec![]).await.unwrap() }
        };
        let wait = |c: &fantoccini::Client, s: &'static str| {
            let c = c.clone();
            async move {
                let t = Instant::now();
                loop {
                    if c.execute(s, vec![]).await.unwrap() == json!(true) {
                        return;
                    }
                    assert!(t.elapsed() < Duration::from_secs(60), "timed out waiting for {s}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        // the page connects, unpauses and draws frames
        wait(&c, "return window.w4rl.frames > 3 && window.w4rl.state && !window.w4rl.state.paused").await;
        // pause with the button, then hold the right arrow and step once with N
        c.find(fantoccini::Locator::Id("pause"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait(&c, "return window.w4rl.state.paused === true").await;
        c.find(fantoccini::Locator::Id("reset")).await.unwrap().click().await.unwrap();
        wait(&c, "return window.w4rl.state.step === 0").await;
        let before = js(&c, "return document.getElementById('imagined').toDataURL()").await;
        let keys = fantoccini::actions::KeyActions::new("keys".into())
            .then(fantoccini::actions::KeyAction::Down { value: '\u{E014}' })
            .then(fantoccini::actions::KeyAction::Down { value: 'n' })
            .then(fantoccini::actions::KeyAction::Up { value: 'n' });
        c.perform_actions(keys).await.unwrap();
        wait(&c, "return window.w4rl.state.step === 1").await;
        let action = js(&c, "return window.w4rl.state.action").await;
        let action: Vec<f64> = action
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(action, [1.0, 0.0], "the right arrow is action +1 on the first axis");
        let after = js(&c, "return document.getElementById('imagined').toDataURL()").await;
        assert_ne!(before, after, "the imagined frame changed");
        c.release_actions().await.unwrap();
        // the policy takes the controls from the driver menu
        c.find(fantoccini::Locator::Css("#driver option[value='bc']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait(&c, "return window.w4rl.state.driver === 'bc'").await;
        c.find(fantoccini::Locator::Id("pause")).await.unwrap().click().await.unwrap();
        wait(&c, "return window.w4rl.state.step >= 10 && window.w4rl.state.driver === 'bc'").await;
        let png = c.screenshot().await.unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("play.png"), &png).unwrap();
        let errors = js(&c, "return window.w4rl.errors").await;
        assert_eq!(errors, json!([]), "the page saw no error messages");
        c.close().await.unwrap();
    });
    drop(driver);
}
