//! A screenshot of a running `world4rl play` page in headless Chromium (for the README): lets the
//! given driver play for a few seconds from a fresh start, then saves the page as PNG.
//!
//! `chromedriver --port=9515 &` then
//! `cargo run --release -p world4rl-cli --example play_screenshot -- 127.0.0.1:PORT OUT.png [DRIVER] [SECONDS]`

use std::time::Duration;

use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .expect("usage: play_screenshot HOST:PORT OUT.png [DRIVER] [SECONDS]");
    let out = args.next().expect("OUT.png");
    let driver = args.next().unwrap_or_else(|| "refined".into());
    let secs: f64 = args.next().map_or(4.0, |s| s.parse().expect("SECONDS"));
    let webdriver = std::env::var("WEBDRIVER").unwrap_or_else(|_| "http://127.0.0.1:9515".into());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1040,900"]}),
    );
    let c =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&webdriver)
            .await
            .expect("a WebDriver session");
    c.goto(&format!("http://{addr}/")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.execute(
        &format!(
            "const ws = new WebSocket(`ws://${{location.host}}/ws`); ws.onopen = () => {{ \
             ws.send(JSON.stringify({{type: 'driver', driver: '{driver}'}})); \
             ws.send(JSON.stringify({{type: 'reset'}})); }};"
        ),
        vec![],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let png = c.screenshot().await.unwrap();
    std::fs::write(&out, png).unwrap();
    c.close().await.unwrap();
    println!("wrote {out}");
}
