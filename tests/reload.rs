//! Hot reload under load: clients send requests without pause while the policy file is
//! rewritten over 100 times (two valid versions alternating, an invalid one between each,
//! written in place and by rename). No request fails or hangs, every response is decided
//! wholly by one snapshot, invalid edits change nothing, and the last good version is live at
//! the end. Reload latency (write to first response decided by the new version) is printed:
//! `cargo test --test reload -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn version_text(name: &str, max: u32) -> String {
    format!("policies:\n  - name: {name}\n    limits:\n      max_tokens: {{ max: {max}, on_exceed: reject }}\n")
}

const INVALID: [&str; 3] = [
    "policies:\n  - name: broken\n    limits: { max_tokens: { max: -1 } }\n",
    "policies:\n  - name: broken\n    limits: [\n",
    "policies:\n  - name: broken\n    budgets: {}\n",
];

/// A request asking for 150 tokens: version A (ceiling 100) refuses it, B (200) lets it pass.
const BODY: &str = r#"{"model":"mock-1","max_tokens":150,"messages":[{"role":"user","content":"hi"}]}"#;

#[derive(Default)]
struct Seen {
    ok: u64,
    /// policy version → policy name that decided it.
    versions: HashMap<String, String>,
    failures: Vec<String>,
}

fn check(seen: &Mutex<Seen>, r: &Resp) {
    let mut s = seen.lock().unwrap();
    let version = r.headers.get("x-warden-policy-version").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let name = r.headers.get("x-warden-policy").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let consistent = match (name.as_str(), r.status.as_u16()) {
        ("ver-a", 400) => r.text().contains("blocked by policy `ver-a`"),
        ("ver-b", 200) => true,
        _ => false,
    };
    if !consistent {
        s.failures.push(format!("version {version} policy {name:?} status {} body {}", r.status, r.text()));
        return;
    }
    if let Some(prev) = s.versions.insert(version.clone(), name.clone()) {
        if prev != name {
            s.failures.push(format!("version {version} decided by both {prev} and {name}"));
        }
    }
    s.ok += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_never_drops_a_request() {
    let cd = ConfigDir::new(&policy_config(), &[("live.yaml", &version_text("ver-a", 100))]);
    let proxy = TestProxy::start_from(&cd).await;
    let url = proxy.url("/v1/chat/completions");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));

    let mut clients = Vec::new();
    for _ in 0..4 {
        let (url, seen, stop, sent) = (url.clone(), seen.clone(), stop.clone(), sent.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // `post` fails the test on a hang (10 s) or a transport error.
                let r = post(&url, &[BEARER], BODY).await;
                sent.fetch_add(1, Ordering::Relaxed);
                check(&seen, &r);
            }
        }));
    }

    let admin = proxy.admin_url("/admin/policies");
    let mut latencies = Vec::new();
    let mut writes = 0;
    let mut expected = "ver-a";
    for i in 0..50 {
        // An invalid edit: it must be rejected and leave the live version alone.
        let errors_before = reload_errors(&proxy).await;
        write(&cd, INVALID[i % INVALID.len()], i % 2 == 0);
        writes += 1;
        let deadline = Instant::now() + Duration::from_secs(5);
        while reload_errors(&proxy).await == errors_before {
            assert!(Instant::now() < deadline, "invalid edit {i} was never reported");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let live = get(&admin, &[]).await.json();
        assert_eq!(live["policies"][0], expected, "an invalid edit changed the live policies");
        assert_eq!(live["last_result"], "error");
        assert!(live["last_error"].as_str().unwrap().contains("live.yaml:"), "{live}");

        // A valid edit to the other version, alternately in place and by rename.
        let (next, max) = if expected == "ver-a" { ("ver-b", 200) } else { ("ver-a", 100) };
        let written = Instant::now();
        write(&cd, &version_text(next, max), i % 2 == 1);
        writes += 1;
        loop {
            let r = post(&url, &[BEARER], BODY).await;
            check(&seen, &r);
            if r.headers.get("x-warden-policy").is_some_and(|v| v == next) {
                latencies.push(written.elapsed());
                break;
            }
            assert!(written.elapsed() < Duration::from_secs(5), "edit {i} to {next} never went live");
        }
        expected = next;
        // A few requests on the new version before the next edit.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(Duration::from_secs(15), c).await.expect("a client hung").unwrap();
    }
    let live = get(&admin, &[]).await.json();
    let s = seen.lock().unwrap();
    assert!(s.failures.is_empty(), "{} inconsistent responses, first: {}", s.failures.len(), s.failures[0]);
    assert_eq!(live["policies"][0], expected, "the last good version must be live");
    assert_eq!(live["version"], 51, "one swap per valid edit, none for invalid ones");

    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "reload: {} edits ({} valid), {} requests answered during them; write→serving latency p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        writes,
        latencies.len(),
        s.ok,
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() * 9 / 10]),
        ms(*latencies.last().unwrap())
    );
    assert!(writes >= 100 && sent.load(Ordering::Relaxed) > 100);
}

/// Writes the policy file in place, or to a temporary name then renamed over it (as editors
/// and `kubectl cp` do).
fn write(cd: &ConfigDir, text: &str, by_rename: bool) {
    let target = cd.policy_path("live.yaml");
    if by_rename {
        let tmp = cd.policy_path(".live.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &target).unwrap();
    } else {
        std::fs::write(&target, text).unwrap();
    }
}

async fn reload_errors(proxy: &TestProxy) -> u64 {
    let m = get(&proxy.admin_url("/metrics"), &[]).await.text();
    m.lines()
        .find(|l| l.starts_with(r#"warden_policy_reloads_total{result="error"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A Kubernetes ConfigMap volume: files are symlinks into `..data`, itself a symlink to a
/// timestamped directory, and an update swaps `..data` atomically by rename.
#[tokio::test]
async fn configmap_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let cd = ConfigDir::new(&policy_config(), &[]);
    let dir = cd.dir.path().join("policies");
    let publish = |generation: u32, text: &str| {
        let data = dir.join(format!("..2026_11_24_{generation}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("live.yaml"), text).unwrap();
        let tmp = dir.join("..data_tmp");
        symlink(data.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
    };
    publish(1, &version_text("ver-a", 100));
    symlink("..data/live.yaml", dir.join("live.yaml")).unwrap();
    let proxy = TestProxy::start_from(&cd).await;
    let url = proxy.url("/v1/chat/completions");
    assert_eq!(post(&url, &[BEARER], BODY).await.headers["x-warden-policy"], "ver-a");

    publish(2, &version_text("ver-b", 200));
    let start = Instant::now();
    loop {
        let r = post(&url, &[BEARER], BODY).await;
        if r.headers["x-warden-policy"] == "ver-b" {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the symlink swap was never picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
