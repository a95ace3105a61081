//! The official `openai` and `anthropic` Python SDKs against warden over real HTTP: chat,
//! streaming chat, embeddings, responses, messages, streaming messages, count_tokens, and
//! typed exceptions for 401 and 429, one answer where warden retried a 429 or 529, and for streams that fail after their 200 (cut,
//! stalled, garbage, no final event), garbage 200s, and structured output refused by a
//! `schema` policy, streamed or not (tests/sdk/test_sdk.py).
//!
//! The SDKs come from PyPI: `.ci/run` installs them; on a machine without them this test
//! installs them into a virtualenv under `target/` on first run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn python_with_sdks() -> PathBuf {
    let has_sdks = |py: &Path| {
        Command::new(py).args(["-c", "import openai, anthropic"]).output().is_ok_and(|o| o.status.success())
    };
    let system = PathBuf::from("python3");
    if has_sdks(&system) {
        return system;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/sdk-venv");
    let py = venv.join("bin/python");
    if !has_sdks(&py) {
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success());
        assert!(ok, "python3 -m venv failed: install python3 (with venv) to run the SDK tests");
        let ok = Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(root.join("tests/sdk/requirements.txt"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pip install -r tests/sdk/requirements.txt failed");
    }
    py
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdks_work_through_warden() {
    let py = tokio::task::spawn_blocking(python_with_sdks).await.unwrap();
    let mock = TestMock::start().await;
    // Output validation for the mock's models: only requests that declare a schema are
    // checked, so the other cases are unaffected.
    let policy = "policies:\n  - name: structured\n    match: { models: [\"mock-*\"] }\n    schema:\n      output: { on_invalid: reject, stream: passthrough }\n";
    let cd = ConfigDir::new(&standard_config(mock.addr), &[("schema.yaml", policy)]);
    std::env::set_var("UPSTREAM_KEY", UPSTREAM_SECRET);
    std::env::set_var("MOCK_ONLY_KEY", "sk-mock-only");
    let proxy = TestProxy::start_from(&cd).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/test_sdk.py");
    let url = format!("http://{}", proxy.api);
    let out = tokio::process::Command::new(&py)
        .arg(script)
        .env("WARDEN_URL", url)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_BASE_URL")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "SDK tests failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("sdk: 22 passed, 0 failed"), "{stdout}\n{stderr}");
}
