//! Reload hazards found by a careless operator: a log file written beside `proxy.yaml`
//! must not cause reloads, a FIFO in `policies/` must neither freeze reloading nor block
//! shutdown, and after a broken edit is undone `/admin/policies` says it is over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;

const POLICY: &str = "policies:\n  - name: live\n    limits:\n      max_tokens: { max: 100, on_exceed: reject }\n";

fn reloads(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("warden_policy_reloads_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn metrics(proxy: &TestProxy) -> String {
    get(&proxy.admin_url("/metrics"), &[]).await.text()
}

#[tokio::test]
async fn files_that_are_not_config_cause_no_reload() {
    let cd = ConfigDir::new(&policy_config(), &[("live.yaml", POLICY)]);
    let proxy = TestProxy::start_from(&cd).await;
    let log = cd.dir.path().join("warden.log");
    let notes = cd.dir.path().join("policies").join("notes.txt");
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        std::fs::write(&log, format!("line {i}\n").repeat(i + 1)).unwrap();
        std::fs::write(&notes, format!("{i}")).unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reloads(&metrics(&proxy).await), 0, "{}", metrics(&proxy).await);
    // A real edit still reloads.
    cd.write_policy("live.yaml", &POLICY.replace("100", "200"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while reloads(&metrics(&proxy).await) == 0 {
        assert!(Instant::now() < deadline, "the policy edit was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}

#[tokio::test]
async fn a_fifo_in_the_policy_directory_is_reported_and_blocks_nothing() {
    let cd = ConfigDir::new(&policy_config(), &[("live.yaml", POLICY)]);
    let mut proxy = TestProxy::start_from(&cd).await;
    mkfifo(&cd.policy_path("trap.yaml"));
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let s = get(&proxy.admin_url("/admin/policies"), &[]).await.json();
        if s["last_result"] == "error" {
            break s;
        }
        assert!(Instant::now() < deadline, "the reload never finished: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = status["last_error"].as_str().unwrap();
    assert!(err.contains("trap.yaml") && err.contains("not a regular file"), "{err}");
    // The last good snapshot serves, and a later valid change still reloads.
    let r = post(&proxy.url("/v1/chat/completions"), &[BEARER], CHAT).await;
    assert_eq!(r.headers["x-warden-policy"], "live");
    std::fs::remove_file(cd.policy_path("trap.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = get(&proxy.admin_url("/admin/policies"), &[]).await.json();
        if s["last_error"].is_null() {
            assert_eq!(s["last_result"], "unchanged", "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "the recovery was not reported: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = proxy.running.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), running.shutdown()).await.expect("shutdown hung");
}

#[test]
fn check_reports_a_fifo_instead_of_hanging() {
    let cd = ConfigDir::new(&policy_config(), &[("live.yaml", POLICY)]);
    mkfifo(&cd.policy_path("trap.yaml"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["check", "--config"])
        .arg(cd.config_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("warden check hung on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trap.yaml:1:1: not a regular file"), "{err}");
}
