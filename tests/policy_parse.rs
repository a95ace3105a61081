//! Policy parsing and compilation errors: each kind reported as `file:line:col: message`
//! with the exact position of the offending value, and a hint where one helps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::*;
use warden::policy::{compile_policies, parse, LoadedFile};

fn config() -> warden::config::Snapshot {
    warden::config::load_str("proxy.yaml", &policy_config(), Path::new("."), &test_env).unwrap()
}

/// The first diagnostic for a policy file's text, rendered.
fn error_of(text: &str) -> String {
    let file = match parse("p.yaml", text) {
        Ok(f) => f,
        Err(d) => return d.to_string(),
    };
    let loaded = vec![LoadedFile { path: "p.yaml".into(), display: "p.yaml".into(), file }];
    match compile_policies(&loaded, String::new(), &config()) {
        Ok(_) => "compiled".into(),
        Err(d) => d[0].to_string(),
    }
}

#[test]
fn valid_file_compiles() {
    let text = "policies:\n  - name: a\n    match: { keys: [demo], models: [\"mock-*\"] }\n    limits:\n      max_tokens: { max: 100 }\n";
    assert_eq!(error_of(text), "compiled");
}

#[test]
fn yaml_syntax_error() {
    let e = error_of("policies:\n  - name: a\n    match: { keys: [demo\n");
    assert!(e.starts_with("p.yaml:4:1: ") || e.starts_with("p.yaml:3:"), "{e}");
}

#[test]
fn unknown_field_with_hint() {
    let e = error_of("policies:\n  - name: a\n    limit:\n      max_n: { max: 1 }\n");
    assert!(e.starts_with("p.yaml:3:5: unknown field `limit`"), "{e}");
    assert!(e.contains("hint: did you mean `limits`?"), "{e}");
}

#[test]
fn section_typos_and_bad_values_are_errors_with_hints() {
    let e = error_of("policies:\n  - name: a\n    injection: { action: shred }\n");
    assert!(e.starts_with("p.yaml:3:26: ") && e.contains("shred"), "{e}");
    let e = error_of("policies:\n  - name: a\n    injection: { families: { roleplay: false } }\n");
    assert!(e.contains("unknown family `roleplay`") && e.contains("roleplay_jailbreak"), "{e}");
    let e = error_of("policies:\n  - name: a\n    injection: { scan: [users] }\n");
    assert!(e.contains("unknown role `users`"), "{e}");
    let e = error_of("policies:\n  - name: a\n    retrie: {}\n");
    assert!(e.contains("did you mean `retries`?"), "{e}");
    let e = error_of("policies:\n  - name: a\n    budget: []\n");
    assert!(e.contains("did you mean `budgets`?"), "{e}");
}

#[test]
fn wrong_type() {
    let e = error_of("policies:\n  - name: a\n    limits:\n      max_n: { max: lots }\n");
    assert!(e.starts_with("p.yaml:4:21: "), "{e}");
}

#[test]
fn negative_and_zero_ceilings() {
    let e = error_of("policies:\n  - name: a\n    limits:\n      max_tokens: { max: -5 }\n");
    assert_eq!(e, "p.yaml:4:26: max_tokens.max must be at least 1, got -5");
    let e = error_of("policies:\n  - name: a\n    limits:\n      max_tool_iterations:\n        max: 0\n");
    assert_eq!(e, "p.yaml:5:14: max_tool_iterations.max must be at least 1, got 0");
}

#[test]
fn range_the_wrong_way_round() {
    let e = error_of("policies:\n  - name: a\n    limits:\n      temperature: { min: 1.5, max: 0.5 }\n");
    assert_eq!(e, "p.yaml:4:27: temperature range is the wrong way round: min 1.5 is above max 0.5");
    let e = error_of("policies:\n  - name: a\n    limits:\n      top_p: { max: 3 }\n");
    assert_eq!(e, "p.yaml:4:21: top_p bounds must be between 0 and 1, got 3");
}

#[test]
fn default_above_max() {
    let e = error_of("policies:\n  - name: a\n    limits:\n      max_tokens: { max: 100, default: 200 }\n");
    assert_eq!(e, "p.yaml:4:40: max_tokens.default 200 is above max_tokens.max 100");
}

#[test]
fn bad_glob() {
    let e = error_of("policies:\n  - name: a\n    match: { models: [\"gpt *\"] }\n");
    assert_eq!(e, "p.yaml:3:23: model pattern `gpt *` contains whitespace");
}

#[test]
fn unknown_key_team_provider_model_and_route() {
    let e = error_of("policies:\n  - name: a\n    match:\n      keys: [demmo]\n");
    assert_eq!(
        e,
        "p.yaml:4:14: unknown key `demmo`: proxy.yaml defines no key by that name\n  hint: did you mean `demo`?"
    );
    let e = error_of("policies:\n  - name: a\n    match:\n      teams: [pubic]\n");
    assert_eq!(
        e,
        "p.yaml:4:15: unknown team `pubic`: no key in proxy.yaml has that team\n  hint: did you mean `public`?"
    );
    let e = error_of("policies:\n  - name: a\n    match:\n      providers: [locl]\n");
    assert_eq!(e, "p.yaml:4:19: unknown provider `locl`\n  hint: did you mean `local`?");
    let e = error_of("policies:\n  - name: a\n    match:\n      models: [cheep]\n");
    assert_eq!(
        e,
        "p.yaml:4:16: unknown model or alias `cheep`: no route in proxy.yaml matches it\n  hint: did you mean `cheap`?"
    );
    let e = error_of("policies:\n  - name: a\n    match:\n      routes: [chat_completion]\n");
    assert_eq!(e, "p.yaml:4:16: unknown route `chat_completion`\n  hint: did you mean `chat_completions`?");
}

#[test]
fn duplicate_policy_name_across_files() {
    let a = parse("a.yaml", "policies:\n  - name: same\n").unwrap();
    let b = parse("b.yaml", "policies:\n  - name: other\n  - name: same\n").unwrap();
    let loaded = vec![
        LoadedFile { path: "a.yaml".into(), display: "a.yaml".into(), file: a },
        LoadedFile { path: "b.yaml".into(), display: "b.yaml".into(), file: b },
    ];
    let e = compile_policies(&loaded, String::new(), &config()).err().unwrap()[0].to_string();
    assert_eq!(e, "b.yaml:3:11: duplicate policy name `same`\n  hint: first defined at a.yaml:2:11");
}

#[test]
fn shipped_policies_and_their_tests_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["test", "--config"])
        .arg(root.join("proxy.yaml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    for file in ["default.yaml", "strict-public.yaml", "rollout-monitor.yaml", "cache.yaml"] {
        let text = std::fs::read_to_string(root.join("policies").join(file)).unwrap();
        assert!(text.starts_with("# yaml-language-server: $schema=./policy.schema.json"), "{file}");
    }
}

#[test]
fn warden_test_fails_on_a_failing_case() {
    let cd = ConfigDir::new(
        &policy_config(),
        &[("p.yaml", "policies:\n  - name: cap\n    limits:\n      max_n: { max: 1 }\n")],
    );
    cd.write_policy(
        "p_test.yaml",
        "tests:\n  - name: wrong expectation\n    key: demo\n    request: { model: mock-1, n: 3, messages: [] }\n    expect: { decision: allow }\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["test", "--config"])
        .arg(cd.config_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL") && stdout.contains("expected allow, got block"), "{stdout}");
    assert!(stdout.contains("policy tests: 0 passed, 1 failed"), "{stdout}");
}

#[test]
fn check_reports_policy_errors_with_location() {
    let cd = ConfigDir::new(
        &policy_config(),
        &[("bad.yaml", "policies:\n  - name: a\n    limits:\n      max_n: { max: -1 }\n")],
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["check", "--config"])
        .arg(cd.config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}:4:21: max_n.max must be at least 1, got -1", cd.policy_path("bad.yaml").display());
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn policy_names_must_be_header_and_label_safe() {
    let e = error_of("policies:\n  - name: \"my policy\"\n");
    assert_eq!(e, "p.yaml:2:11: policy names may use only letters, digits, `-`, `_` and `.`");
}

#[test]
fn a_key_whose_variable_is_unset_can_still_be_named_by_a_policy() {
    let config = policy_config()
        .replace("keys:\n", "keys:\n  - { name: batch, key: \"${WARDEN_TEST_UNSET_KEY}\", team: jobs }\n");
    let snap = warden::config::load_str("proxy.yaml", &config, Path::new("."), &test_env).unwrap();
    let file = parse("p.yaml", "policies:\n  - name: a\n    match: { keys: [batch], teams: [jobs] }\n").unwrap();
    let loaded = vec![LoadedFile { path: "p.yaml".into(), display: "p.yaml".into(), file }];
    assert!(compile_policies(&loaded, String::new(), &snap).is_ok());
}
