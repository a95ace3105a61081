//! The `limits` rules applied to one request body: allowed and denied models, the token
//! ceiling (reject, clamp or default), `n`, `temperature` and `top_p` ranges, the tool
//! allow-list, and tool-call rounds counted from the request's own history (no state).
//! Pure: a function of the compiled rules and the request body, shared by the pipeline and
//! `warden test`. The body is read once, into borrowed views of just the fields the rules
//! need (no `serde_json::Value` tree), and changes are returned as byte ranges to splice.
//! Also the section's compilation from its YAML shape.

use std::borrow::Cow;
use std::ops::Range;

use serde_json::value::RawValue;

use super::compile::{Cx, Facts, Limits, ModelLists, Policy, Range as Bounds, Rule, TokenCeiling};
use super::tools::tool_names;
use super::verdict::{PolicyEdit, Verdict, Violation};
use super::RawLimits;
use super::{Mode, OnExceed};
use crate::config::glob::Glob;
use crate::http::splice::Edit;
use crate::provider::request::RequestView;
use crate::provider::Endpoint;
use serde_saphyr::Spanned;

/// A change a policy makes to the request's output-token limit before it is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SetTokens {
    field: &'static str,
    value: u64,
    /// Where the request's own value sits in the body (`None`: the field is added).
    span: Option<Range<usize>>,
    /// Where the object the field belongs to opens (`{`): the top-level body, or a nested
    /// batch request.
    object: usize,
    policy: String,
    /// Lowered from a larger request value (`clamp`), as opposed to filled in (`default`).
    clamped: bool,
    mode: Mode,
}

impl SetTokens {
    fn new(
        field: &'static str,
        value: u64,
        policy: &str,
        span: Option<Range<usize>>,
        object: usize,
        mode: Mode,
        clamped: bool,
    ) -> SetTokens {
        SetTokens { field, value, span, object, policy: policy.to_string(), clamped, mode }
    }
}

/// The verdict being built, and the token limits to set: at most one per field and object
/// (the smallest value wins), turned into edits at the end.
#[derive(Default)]
struct Checks {
    verdict: Verdict,
    set_tokens: Vec<(SetTokens, Option<Violation>)>,
}

/// Applies the policies' `limits` to a request: `view` is the request view the parse stage
/// built (no second scan of the body), `body` the bytes it points into,
/// `object` where the request object opens in `body`.
/// `Err` names a field the rules need that does not have the API's shape (400).
pub fn decide(
    policies: &[&Policy],
    facts: &Facts,
    view: &RequestView,
    body: &[u8],
    object: usize,
) -> Result<Verdict, String> {
    let mut d = Checks::default();
    if facts.endpoint == Endpoint::Other {
        check_extra_path(policies, facts, &mut d);
    }
    if facts.endpoint == Endpoint::Batches {
        check_file_batches(policies, &mut d);
    }
    if !needs_body(policies) {
        return Ok(d.verdict);
    }
    let req = Request::read(facts.endpoint, view, body)?;
    for p in policies {
        if let Some(limits) = &p.limits {
            check(p, limits, facts, &req, object, &mut d);
        }
    }
    let mut verdict = d.verdict;
    verdict.edits.extend(d.set_tokens.into_iter().map(|(t, objection)| PolicyEdit {
        mode: t.mode,
        action: if t.clamped { "clamp" } else { "default" },
        rule: "limits.max_tokens",
        edit: Edit { span: t.span, object: t.object, field: t.field, value: t.value.to_string() },
        policy: t.policy,
        objection,
    }));
    Ok(verdict)
}

/// Every policy with a `limits` section must list an unnamed path for it to pass.
fn check_extra_path(policies: &[&Policy], facts: &Facts, d: &mut Checks) {
    for p in policies {
        let Some(l) = &p.limits else { continue };
        if !l.extra_paths.value.iter().any(|g| g.matches(facts.path)) {
            let v = Violation {
                policy: p.name.to_string(),
                rule: "limits.extra_paths",
                field: "path".into(),
                message: format!("the path {} is not on this policy's `extra_paths`", facts.path),
                forbidden: true,
            };
            record(d, &l.extra_paths, v);
        }
    }
}

/// OpenAI file batches pass only when a matching policy allows them and none forbids them.
fn check_file_batches(policies: &[&Policy], d: &mut Checks) {
    let says =
        |want: bool| policies.iter().find(|p| p.limits.as_ref().and_then(|l| l.allow_file_batches) == Some(want));
    let (policy, why) = match (says(false), says(true)) {
        (Some(p), _) => (p.name.to_string(), "this policy sets `allow_file_batches: false`"),
        (None, Some(_)) => return,
        (None, None) => ("(built-in)".to_string(), "no matching policy sets `limits.allow_file_batches: true`"),
    };
    let message =
        format!("file batches are refused: warden cannot check the requests inside an uploaded file, and {why}");
    let v = Violation {
        policy,
        rule: "limits.allow_file_batches",
        field: "input_file_id".into(),
        message,
        forbidden: true,
    };
    d.verdict.object(Mode::Enforce, v);
}

/// What the rules look at, extracted once per request.
struct Request<'a> {
    /// Every output-token limit the request names: field, value, and where it sits.
    tokens: Vec<(&'static str, f64, Range<usize>)>,
    /// Token-limit fields sent as `null`: where they sit.
    null_tokens: Vec<(&'static str, Range<usize>)>,
    /// `n` and `best_of`: how many candidates the upstream generates.
    choices: Vec<(&'static str, f64)>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    tools: Vec<Cow<'a, str>>,
    tool_rounds: u64,
}

/// A numeric field: `None` when absent or null.
fn number(raw: Option<&RawValue>, name: &str) -> Result<Option<f64>, String> {
    match raw.map(RawValue::get) {
        None | Some("null") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| format!("`{name}` must be a number")),
    }
}

impl<'a> Request<'a> {
    fn read(endpoint: Endpoint, view: &RequestView<'a>, body: &[u8]) -> Result<Request<'a>, String> {
        let f = &view.fields;
        let mut tokens = Vec::new();
        let mut null_tokens = Vec::new();
        for name in endpoint.max_tokens_fields() {
            if let Some(raw) = f.get(name) {
                let at = crate::provider::request::span(body, raw);
                match number(Some(raw), name)? {
                    Some(value) => tokens.push((*name, value, at)),
                    None => null_tokens.push((*name, at)),
                }
            }
        }
        let mut choices = Vec::new();
        for (name, raw) in [("n", f.n), ("best_of", f.best_of)] {
            if let Some(v) = number(raw, name)? {
                choices.push((name, v));
            }
        }
        Ok(Request {
            tokens,
            null_tokens,
            choices,
            temperature: number(f.temperature, "temperature")?,
            top_p: number(f.top_p, "top_p")?,
            tools: tool_names(f)?,
            tool_rounds: view.history()?.tool_rounds,
        })
    }
}

/// Whether any of these policies has rules that need the body.
pub fn needs_body(policies: &[&Policy]) -> bool {
    policies.iter().any(|p| p.limits.is_some())
}

fn record<T>(d: &mut Checks, rule: &Rule<T>, v: Violation) {
    d.verdict.object(rule.mode, v);
}

fn check(p: &Policy, l: &Limits, f: &Facts, req: &Request, object: usize, d: &mut Checks) {
    let violation = |rule: &'static str, field: &str, message: String| Violation {
        policy: p.name.to_string(),
        rule,
        field: field.to_string(),
        message,
        forbidden: false,
    };

    if let (Some(rule), Some(model)) = (&l.models, f.model) {
        let upstream = f.upstream_model.unwrap_or(model);
        let hit = |g: &crate::config::glob::Glob| g.matches(model) || g.matches(upstream);
        let denied = rule.value.deny.iter().any(hit);
        let allowed = rule.value.allow.as_ref().is_none_or(|a| a.iter().any(hit));
        if denied || !allowed {
            let mut v = violation("limits.models", "model", format!("model `{model}` is not allowed"));
            v.forbidden = true;
            record(d, rule, v);
        }
    }

    if let Some(rule) = &l.max_tokens {
        let c = rule.value;
        for (name, v, span) in &req.tokens {
            if *v <= c.max as f64 {
                continue;
            }
            let objection =
                violation("limits.max_tokens", name, format!("`{name}` is {v}, above the ceiling of {}", c.max));
            match c.on_exceed {
                OnExceed::Clamp => {
                    let edit = SetTokens::new(name, c.max, &p.name, Some(span.clone()), object, rule.mode, true);
                    set_tokens(d, edit, Some(objection));
                }
                _ => record(d, rule, objection),
            }
        }
        if let (true, Some(field)) = (req.tokens.is_empty(), f.endpoint.max_tokens_field()) {
            // A field sent as `null` is replaced, not repeated.
            let null = req.null_tokens.iter().find(|(n, _)| *n == field).map(|(_, r)| r.clone());
            set_tokens(d, SetTokens::new(field, c.default, &p.name, null, object, rule.mode, false), None);
        }
    }

    if let Some(rule) = &l.max_n {
        for (field, n) in &req.choices {
            if *n > rule.value as f64 {
                let msg = format!("`{field}` is {n}, above the ceiling of {}", rule.value);
                record(d, rule, violation("limits.max_n", field, msg));
            }
        }
    }

    for (rule, field, value) in [(&l.temperature, "temperature", req.temperature), (&l.top_p, "top_p", req.top_p)] {
        if let (Some(rule), Some(v)) = (rule, value) {
            if let Some(msg) = outside(rule.value, v) {
                let name = if field == "temperature" { "limits.temperature" } else { "limits.top_p" };
                record(d, rule, violation(name, field, format!("`{field}` is {v}, {msg}")));
            }
        }
    }

    if let Some(rule) = &l.tools {
        if let Some(name) = req.tools.iter().find(|t| !rule.value.contains(t.as_ref())) {
            let v = violation("limits.tools", "tools", format!("tool `{name}` is not on the allow-list"));
            record(d, rule, v);
        }
    }

    let rule = &l.max_tool_iterations;
    if req.tool_rounds > rule.value {
        let field = if f.endpoint == Endpoint::Responses { "input" } else { "messages" };
        let msg =
            format!("the conversation has {} tool-call rounds, above the limit of {}", req.tool_rounds, rule.value);
        record(d, rule, violation("limits.max_tool_iterations", field, msg));
    }
}

/// Per field and object the smallest value wins; on a tie the earlier (higher-priority)
/// policy keeps its name. Monitored and enforced limits compete alike, so a monitored rule
/// records exactly what it would have done.
fn set_tokens(d: &mut Checks, new: SetTokens, objection: Option<Violation>) {
    match d.set_tokens.iter_mut().find(|(t, _)| t.field == new.field && t.object == new.object) {
        Some((t, o)) if new.value < t.value => (*t, *o) = (new, objection),
        Some(_) => {}
        None => d.set_tokens.push((new, objection)),
    }
}

fn outside(r: Bounds, v: f64) -> Option<String> {
    match (r.min, r.max) {
        (Some(min), _) if v < min => Some(format!("below the minimum of {min}")),
        (_, Some(max)) if v > max => Some(format!("above the maximum of {max}")),
        _ => None,
    }
}

/// Compiles a `limits` section.
pub(super) fn compile_limits(cx: &mut Cx, l: &RawLimits, policy_mode: Mode) -> Limits {
    // The most specific mode wins: rule, then section, then policy.
    let section = l.mode.unwrap_or(policy_mode);
    let mode = |m: Option<Mode>| m.unwrap_or(section);
    Limits {
        models: l.models.as_ref().map(|r| Rule {
            value: ModelLists {
                allow: r.allow.as_ref().map(|a| a.iter().filter_map(|v| cx.glob(v)).collect()),
                deny: r.deny.iter().filter_map(|v| cx.glob(v)).collect(),
            },
            mode: mode(r.mode),
        }),
        max_tokens: l.max_tokens.as_ref().map(|r| {
            let max = cx.ceiling(&r.max, "max_tokens.max");
            let default = match &r.default {
                Some(d) => {
                    let v = cx.ceiling(d, "max_tokens.default");
                    if v > max {
                        cx.err(d, format!("max_tokens.default {v} is above max_tokens.max {max}"), None);
                    }
                    v
                }
                None => max,
            };
            Rule { value: TokenCeiling { max, default, on_exceed: r.on_exceed }, mode: mode(r.mode) }
        }),
        max_n: l.max_n.as_ref().map(|r| Rule { value: cx.ceiling(&r.max, "max_n.max"), mode: mode(r.mode) }),
        temperature: l
            .temperature
            .as_ref()
            .map(|r| Rule { value: cx.range(r, "temperature", 0.0, 2.0), mode: mode(r.mode) }),
        top_p: l.top_p.as_ref().map(|r| Rule { value: cx.range(r, "top_p", 0.0, 1.0), mode: mode(r.mode) }),
        tools: l.tools.as_ref().map(|r| Rule { value: r.allow.iter().cloned().collect(), mode: mode(r.mode) }),
        max_tool_iterations: match &l.max_tool_iterations {
            Some(r) => Rule { value: cx.ceiling(&r.max, "max_tool_iterations.max"), mode: mode(r.mode) },
            None => Rule { value: DEFAULT_TOOL_ITERATIONS, mode: section },
        },
        extra_paths: Rule {
            value: l.extra_paths.iter().flatten().filter_map(|v| path_glob(cx, v)).collect(),
            mode: section,
        },
        allow_file_batches: l.allow_file_batches,
    }
}

fn path_glob(cx: &mut Cx, v: &Spanned<String>) -> Option<Glob> {
    match Glob::path(&v.value) {
        Ok(g) => Some(g),
        Err(e) => {
            cx.err(v, e, None);
            None
        }
    }
}

/// Tool rounds allowed when a `limits` section does not say.
pub const DEFAULT_TOOL_ITERATIONS: u64 = 10;
