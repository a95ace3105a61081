//! The `schema` section: its YAML shape, its compiled form (JSON Schemas compiled once per
//! reload, files read beside the policy), and the request rules' decision: pointers that
//! must be present, pointers that must be absent, and a JSON Schema for the whole body.
//! The output half is compiled here and applied to responses by the pipeline's schema stage.

use std::path::Path;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::compile::{Policy, Report};
use super::verdict::{Verdict, Violation};
use super::Mode;
use crate::config::jsonschema::{compile, select, valid_pointer, Compiled};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSchema {
    /// `monitor` for both halves.
    pub mode: Option<Mode>,
    /// Rules for the request body.
    pub request: Option<RawRequestSchema>,
    /// Validation of the model's structured output.
    pub output: Option<RawOutputSchema>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRequestSchema {
    /// JSON pointers that must be present (not `null`); `*` matches every item.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub require: Vec<Spanned<String>>,
    /// JSON pointers that must be absent (or `null`); `*` matches every item.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub forbid: Vec<Spanned<String>>,
    /// A JSON Schema for the whole body: an inline object, or a file beside the policy.
    #[schemars(with = "Option<Value>")]
    pub json_schema: Option<Spanned<Value>>,
    pub mode: Option<Mode>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOutputSchema {
    /// The schema of the output when the request declares none: an inline object, or a
    /// file beside the policy.
    #[schemars(with = "Option<Value>")]
    pub json_schema: Option<Spanned<Value>>,
    /// Domain rules: JSON Schema layered on top of the declared or policy schema (allOf).
    #[schemars(with = "Option<Value>")]
    pub rules: Option<Spanned<Value>>,
    /// A number the output must carry at least this high, where it carries the field.
    pub min_confidence: Option<RawMinConfidence>,
    /// What an invalid output does (default `reject`).
    #[serde(default)]
    pub on_invalid: OnInvalid,
    /// Retries after the first attempt, for `on_invalid: retry` (default 2, at most 5).
    #[schemars(with = "Option<i64>")]
    pub max_retries: Option<Spanned<i64>>,
    /// A retry adds a message quoting the violations (default true).
    #[serde(default = "yes")]
    pub repair: bool,
    /// Streamed requests: `buffer` (validate, then stream; default) or `passthrough`.
    #[serde(default)]
    pub stream: StreamMode,
    pub mode: Option<Mode>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMinConfidence {
    /// Where the confidence sits in the output (`/confidence`).
    #[schemars(with = "String")]
    pub pointer: Spanned<String>,
    #[schemars(with = "f64")]
    pub threshold: Spanned<f64>,
}

/// What an output that breaks its schema does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// Ask the upstream again, up to `max_retries` times; then reject.
    Retry,
    /// A 502 in the caller's format listing the violations.
    #[default]
    Reject,
    /// Pass it through with `x-warden-schema: invalid`.
    Flag,
}

impl OnInvalid {
    pub fn as_str(self) -> &'static str {
        match self {
            OnInvalid::Retry => "retry",
            OnInvalid::Reject => "reject",
            OnInvalid::Flag => "flag",
        }
    }
}

/// How output validation meets a streamed request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamMode {
    /// Collect the whole stream, validate, then send it (or retry, or refuse it).
    #[default]
    Buffer,
    /// Stream live; at the end, an invalid output's final events become the API's error event.
    Passthrough,
}

/// A compiled `schema` section.
#[derive(Debug, Clone, Default)]
pub struct SchemaPolicy {
    pub request: Option<RequestRules>,
    pub output: Option<Arc<OutputRules>>,
}

#[derive(Debug, Clone)]
pub struct RequestRules {
    pub require: Vec<String>,
    pub forbid: Vec<String>,
    pub json_schema: Option<Compiled>,
    pub mode: Mode,
}

#[derive(Debug)]
pub struct OutputRules {
    pub policy: Arc<str>,
    pub json_schema: Option<Compiled>,
    pub rules: Option<Compiled>,
    pub min_confidence: Option<(String, f64)>,
    pub on_invalid: OnInvalid,
    pub max_retries: u32,
    pub repair: bool,
    pub stream: StreamMode,
    pub mode: Mode,
}

/// Retries are bounded: every one is a paid upstream call.
pub const MAX_SCHEMA_RETRIES: u32 = 5;

/// Compiles a `schema` section. `dir`: the policy file's directory, where schema files sit.
pub fn compile_schema(
    r: &mut impl Report,
    raw: &RawSchema,
    name: &Spanned<String>,
    policy_mode: Mode,
    dir: &Path,
) -> SchemaPolicy {
    let section = raw.mode.unwrap_or(policy_mode);
    let request = raw.request.as_ref().map(|q| {
        let mut pointers = |list: &[Spanned<String>]| -> Vec<String> {
            for p in list.iter().filter(|p| !valid_pointer(&p.value) || p.value.is_empty()) {
                r.report(p, format!("`{}` is not a JSON pointer such as `/response_format`", p.value));
            }
            list.iter().map(|p| p.value.clone()).collect()
        };
        let (require, forbid) = (pointers(&q.require), pointers(&q.forbid));
        if require.is_empty() && forbid.is_empty() && q.json_schema.is_none() {
            r.report(name, "`schema.request` needs `require`, `forbid` or `json_schema`".to_string());
        }
        RequestRules {
            require,
            forbid,
            json_schema: q.json_schema.as_ref().and_then(|s| load(r, s, dir, "schema.request.json_schema")),
            mode: q.mode.unwrap_or(section),
        }
    });
    let output = raw.output.as_ref().map(|o| {
        let max_retries = match &o.max_retries {
            Some(v) if !(0..=i64::from(MAX_SCHEMA_RETRIES)).contains(&v.value) => {
                r.report(v, format!("`max_retries` must be between 0 and {MAX_SCHEMA_RETRIES}, got {}", v.value));
                0
            }
            Some(v) => v.value as u32,
            None => 2,
        };
        let min_confidence = o.min_confidence.as_ref().map(|m| {
            if !valid_pointer(&m.pointer.value) {
                r.report(&m.pointer, format!("`{}` is not a JSON pointer such as `/confidence`", m.pointer.value));
            }
            if !m.threshold.value.is_finite() {
                r.report(&m.threshold, "`threshold` must be a number".to_string());
            }
            (m.pointer.value.clone(), m.threshold.value)
        });
        Arc::new(OutputRules {
            policy: name.value.as_str().into(),
            json_schema: o.json_schema.as_ref().and_then(|s| load(r, s, dir, "schema.output.json_schema")),
            rules: o.rules.as_ref().and_then(|s| load(r, s, dir, "schema.output.rules")),
            min_confidence,
            on_invalid: o.on_invalid,
            max_retries,
            repair: o.repair,
            stream: o.stream,
            mode: o.mode.unwrap_or(section),
        })
    });
    SchemaPolicy { request, output }
}

/// A schema given inline, or as the name of a file beside the policy.
fn load(r: &mut impl Report, at: &Spanned<Value>, dir: &Path, what: &str) -> Option<Compiled> {
    let value = match &at.value {
        Value::String(name) => {
            let path = dir.join(name);
            let text = match crate::config::read_file(&path) {
                Ok(t) => t,
                Err(e) => {
                    r.report(at, format!("`{what}`: {}: {e}", path.display()));
                    return None;
                }
            };
            match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    r.report(at, format!("`{what}`: {} is not JSON: {e}", path.display()));
                    return None;
                }
            }
        }
        v @ (Value::Object(_) | Value::Bool(_)) => v.clone(),
        _ => {
            r.report(at, format!("`{what}` must be a JSON Schema object or the name of a file beside the policy"));
            return None;
        }
    };
    match compile(&value) {
        Ok(c) => Some(c),
        Err(e) => {
            r.report(at, format!("`{what}` is not a JSON Schema warden can use: {e}"));
            None
        }
    }
}

/// The request rules of every matching policy, against the body (`None`: not JSON).
pub fn decide(policies: &[&Policy], body: &[u8]) -> Verdict {
    let mut verdict = Verdict::default();
    let rules: Vec<(&Policy, &RequestRules)> =
        policies.iter().filter_map(|p| Some((*p, p.schema.request.as_ref()?))).collect();
    if rules.is_empty() || body.iter().all(u8::is_ascii_whitespace) {
        return verdict;
    }
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    for (p, rules) in rules {
        let object = |rule: &'static str, field: String, message: String| Violation {
            policy: p.name.to_string(),
            rule,
            field,
            message,
            forbidden: false,
        };
        let Some(doc) = &parsed else {
            if !rules.require.is_empty() || rules.json_schema.is_some() {
                let rule =
                    if rules.require.is_empty() { "schema.request.json_schema" } else { "schema.request.require" };
                verdict.object(rules.mode, object(rule, String::new(), "the request body is not JSON".into()));
            }
            continue;
        };
        for pointer in &rules.require {
            let present = select(doc, pointer).iter().any(|(_, v)| !v.is_null());
            if !present {
                let message = format!("the request must set `{pointer}`");
                verdict.object(rules.mode, object("schema.request.require", pointer.clone(), message));
            }
        }
        for pointer in &rules.forbid {
            if let Some((at, _)) = select(doc, pointer).into_iter().find(|(_, v)| !v.is_null()) {
                let message = format!("the request may not set `{at}`");
                verdict.object(rules.mode, object("schema.request.forbid", at, message));
            }
        }
        if let Some(problem) = rules.json_schema.as_ref().and_then(|s| s.problems(doc).into_iter().next()) {
            let where_ =
                if problem.pointer.is_empty() { "the body".to_string() } else { format!("`{}`", problem.pointer) };
            let message = format!("{where_} breaks the request schema: {}", problem.message);
            verdict.object(rules.mode, object("schema.request.json_schema", problem.pointer, message));
        }
    }
    verdict
}
