//! `warden test [DIR]`: policy test cases written in YAML beside the policies
//! (`*_test.yaml`), run through the same decision code as live requests, like `opa test`.
//!
//! ```yaml
//! tests:
//!   - name: the public team cannot use gpt-4o
//!     key: public-web                 # a key name from proxy.yaml
//!     route: chat_completions         # endpoint; default chat_completions
//!     request: { model: gpt-4o, messages: [{ role: user, content: hi }] }
//!     expect: { decision: block, policy: strict-public, rule: limits.models, status: 403 }
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use super::compile::Facts;
use super::evaluate::evaluate;
use crate::config::{Diagnostic, Snapshot};
use crate::provider::Endpoint;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    pub tests: Vec<TestCase>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// A key name from proxy.yaml.
    pub key: String,
    /// The endpoint (default chat_completions).
    pub route: Option<String>,
    /// The request path, for `route: other` (default `/v1/other`).
    pub path: Option<String>,
    /// The request body.
    pub request: serde_json::Value,
    pub expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    /// Forwarded, with no rule objecting.
    Allow,
    /// Refused by an enforcing rule.
    Block,
    /// Forwarded, but a monitor-mode rule would have blocked it.
    WouldBlock,
}

impl Expected {
    /// The word the YAML uses.
    fn label(&self) -> &'static str {
        match self {
            Expected::Allow => "allow",
            Expected::Block => "block",
            Expected::WouldBlock => "would_block",
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub decision: Expected,
    /// The policy that blocked (or would have).
    pub policy: Option<String>,
    /// The rule that blocked (or would have), e.g. `limits.max_tokens`.
    pub rule: Option<String>,
    /// The HTTP status of a block (400 or 403).
    pub status: Option<u16>,
    /// The output-token limit forwarded after clamping or a default.
    pub max_tokens: Option<u64>,
    /// Exactly these policies applied, in order.
    pub policies: Option<Vec<String>>,
}

/// Runs every `*_test.yaml` in `dir` against `snap`. Returns the report and whether all passed.
pub fn run_dir(snap: &Snapshot, dir: &Path) -> Result<(String, bool), Vec<Diagnostic>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            vec![Diagnostic {
                file: dir.display().to_string(),
                line: 1,
                col: 1,
                message: format!("cannot read: {e}"),
                hint: None,
            }]
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("_test.yaml") || n.ends_with("_test.yml"))
        })
        .collect();
    paths.sort();
    let mut report = String::new();
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut diags = Vec::new();
    for path in &paths {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let file: TestFile = match serde_saphyr::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                diags.push(Diagnostic::from_yaml(&display, &e));
                continue;
            }
        };
        for case in &file.tests {
            match run_case(snap, case) {
                Ok(()) => {
                    passed += 1;
                    let _ = writeln!(report, "ok    {display}: {}", case.name);
                }
                Err(why) => {
                    failed += 1;
                    let _ = writeln!(report, "FAIL  {display}: {}\n      {why}", case.name);
                }
            }
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    if passed + failed == 0 {
        let _ = writeln!(report, "no test cases found in {} (files named *_test.yaml)", dir.display());
        return Ok((report, false));
    }
    let _ = writeln!(report, "policy tests: {passed} passed, {failed} failed");
    Ok((report, failed == 0))
}

fn run_case(snap: &Snapshot, case: &TestCase) -> Result<(), String> {
    let key = snap.key_by_name(&case.key).ok_or_else(|| format!("unknown key `{}`", case.key))?;
    let route = case.route.as_deref().unwrap_or("chat_completions");
    let endpoint = Endpoint::from_label(route).ok_or_else(|| format!("unknown route `{route}`"))?;
    let model = case.request.get("model").and_then(serde_json::Value::as_str);
    let routed = model.and_then(|m| snap.route(m));
    let upstream = routed.as_ref().map(|r| r.upstream_model).filter(|u| Some(*u) != model);
    let provider = routed.as_ref().map(|r| r.provider.name.as_str());
    let path = case.path.as_deref().or(endpoint.canonical_path()).unwrap_or("/v1/other");
    let facts = Facts { key: Some(key), endpoint, model, upstream_model: upstream, provider, path };
    let body = serde_json::to_vec(&case.request).map_err(|e| e.to_string())?;
    let view = crate::provider::request::view(endpoint, &http::Method::POST, &body).map_err(|e| e.to_string())?;
    let d = evaluate(snap, &facts, &view, &body).map_err(|e| e.to_string())?.decision;
    let e = &case.expect;
    let (got, culprit) = match (&d.block, d.would_block.first()) {
        (Some(v), _) => (Expected::Block, Some(v)),
        (None, Some(v)) => (Expected::WouldBlock, Some(v)),
        (None, None) => (Expected::Allow, None),
    };
    let describe = |v: Option<&super::verdict::Violation>| {
        v.map_or_else(
            || "no rule objected".to_string(),
            |v| format!("policy `{}` rule `{}`: {}", v.policy, v.rule, v.message),
        )
    };
    if got != e.decision {
        return Err(format!("expected {}, got {} ({})", e.decision.label(), got.label(), describe(culprit)));
    }
    if let (Some(want), Some(v)) = (&e.policy, culprit) {
        if &v.policy != want {
            return Err(format!("expected policy `{want}`, got {}", describe(culprit)));
        }
    }
    if let (Some(want), Some(v)) = (&e.rule, culprit) {
        if v.rule != want {
            return Err(format!("expected rule `{want}`, got {}", describe(culprit)));
        }
    }
    if let (Some(want), Some(v)) = (e.status, culprit) {
        let status = if v.forbidden { 403 } else { 400 };
        if status != want {
            return Err(format!("expected status {want}, got {status}"));
        }
    }
    if let Some(want) = e.max_tokens {
        // The limit set on the request object itself (a batch's nested ones sit further in).
        let top = d.edits.iter().filter(|e| e.rule == "limits.max_tokens").min_by_key(|e| e.edit.object);
        let got = top.and_then(|e| e.edit.value.parse::<u64>().ok());
        let original =
            endpoint.max_tokens_fields().iter().find_map(|f| case.request.get(*f).and_then(serde_json::Value::as_u64));
        if got.or(original) != Some(want) {
            return Err(format!("expected max_tokens {want} forwarded, got {:?}", got.or(original)));
        }
    }
    if let Some(want) = &e.policies {
        if &d.applied != want {
            return Err(format!("expected policies {want:?}, got {:?}", d.applied));
        }
    }
    Ok(())
}
