//! The spend ledger against `kill -9`: ten times, a `warden serve` process is killed in the
//! middle of non-streamed and streamed load, and restarted on the same ledger. Afterwards
//! the ledger holds at least the cost of every response a client received whole (a
//! response's last bytes wait for its settlement to be committed), and not much more (only
//! responses cut by the kill may be charged without being received).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_warden");
/// Picodollars per token: input $1 and output $1,000 per million (`priced_config`).
const IN_PICO: u64 = 1_000_000;
const OUT_PICO: u64 = 1_000_000_000;

fn start(dir: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--config", dir.join("proxy.yaml").to_str().unwrap()])
        .env("WARDEN_LOG", "warn,warden=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on api=").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
            }
        }
    });
    let api = rx.recv_timeout(Duration::from_secs(20)).expect("no listening line");
    (child, api)
}

/// Sends requests until the process dies; adds the cost of every response received whole.
async fn client(api: String, stream: bool, received: Arc<AtomicU64>, sent: Arc<AtomicU64>) {
    let url = format!("http://{api}/v1/chat/completions");
    let body = if stream {
        r#"{"model":"mock-1","max_tokens":20,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#
    } else {
        r#"{"model":"mock-1","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}"#
    };
    let headers = [("authorization", "Bearer sk-warden-demo"), ("x-mock", "tokens=20,chunks=5,delay=5ms")];
    loop {
        sent.fetch_add(1, Ordering::Relaxed);
        let req = request(http::Method::POST, &url, &headers, body.to_string());
        let Ok(resp) = client_for_crash().request(req).await else { return };
        if resp.status() != 200 {
            return;
        }
        use http_body_util::BodyExt;
        let Ok(collected) = resp.into_body().collect().await else { return };
        let text = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
        let usage = if stream {
            if !text.ends_with("data: [DONE]\n\n") {
                return;
            }
            let last = sse_data(&text).into_iter().rev().find(|d| d.contains("\"usage\":{")).unwrap();
            serde_json::from_str::<serde_json::Value>(&last).unwrap()["usage"].clone()
        } else {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return };
            v["usage"].clone()
        };
        let cost = usage["prompt_tokens"].as_u64().unwrap() * IN_PICO
            + usage["completion_tokens"].as_u64().unwrap() * OUT_PICO;
        received.fetch_add(cost, Ordering::Relaxed);
    }
}

fn client_for_crash() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
> {
    common::client()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_received_whole_is_in_the_ledger_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    // Each process runs on the same ledger; ports are chosen anew each start.
    std::fs::write(dir.path().join("proxy.yaml"), priced_config("ledger: { path: data/spend.redb }")).unwrap();
    std::fs::write(
        dir.path().join("policies/b.yaml"),
        "policies:\n  - name: caps\n    budgets:\n      - { name: all, per: global, window: month, usd: 100000 }\n",
    )
    .unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    for round in 0..10 {
        let (mut child, api) = start(dir.path());
        let clients: Vec<_> =
            (0..8).map(|i| tokio::spawn(client(api.clone(), i % 2 == 1, received.clone(), sent.clone()))).collect();
        tokio::time::sleep(Duration::from_millis(150 + 37 * round)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for c in clients {
            c.await.unwrap();
        }
    }
    let (_ledger, rows) = warden::ledger::Ledger::open(&dir.path().join("data/spend.redb")).unwrap();
    let stored: u64 = rows.iter().map(|(_, cost, _)| cost).sum();
    let got = received.load(Ordering::Relaxed);
    assert!(got > 0, "no response completed");
    assert!(stored >= got, "the ledger lost spend: {stored} stored, {got} received whole");
    // Charged but not received: only the responses in flight at each kill (8 clients).
    let one = 20 * OUT_PICO + 100 * IN_PICO;
    assert!(stored <= got + 10 * 8 * one, "charged far more than was received: {stored} against {got}");
}
