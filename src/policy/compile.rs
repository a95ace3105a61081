//! Raw policy files → an immutable [`PolicySet`]: every semantic check against the live
//! `proxy.yaml` (unknown key, team, model or route names, ceilings below 1, ranges the wrong
//! way round, duplicate names) with the offending value's location, globs compiled, and an
//! index so that finding a request's policies costs a few hash lookups.

use std::collections::{HashMap, HashSet};

use serde_saphyr::Spanned;

use super::{route_hint, LoadedFile, Mode, OnExceed, RawPolicy, ROUTE_NAMES};
use crate::config::diag::hint_for;
use crate::config::glob::Glob;
use crate::config::{Diagnostic, Snapshot, VirtualKey};
use crate::provider::Endpoint;

/// The compiled policies of one load.
#[derive(Default)]
pub struct PolicySet {
    /// Increases with every successful reload.
    pub version: u64,
    /// A short hash of every policy file's name and bytes.
    pub hash: String,
    pub files: Vec<String>,
    /// Sorted by priority (highest first), then name: the order in which they apply.
    pub policies: Vec<Policy>,
    /// Policies that name literal keys, by key name.
    by_key: HashMap<String, Vec<usize>>,
    /// Policies that name teams (and no keys), by team.
    by_team: HashMap<String, Vec<usize>>,
    /// Everything else; checked for every request.
    general: Vec<usize>,
}

pub struct Policy {
    /// Shared with the budget and rate-limit accounts keyed by it.
    pub name: std::sync::Arc<str>,
    pub priority: i32,
    keys: Vec<Glob>,
    teams: Vec<String>,
    labels: Vec<(String, String)>,
    models: Vec<Glob>,
    providers: Vec<String>,
    routes: Vec<Endpoint>,
    pub limits: Option<Limits>,
    pub budgets: Vec<Budget>,
    pub rate_limits: Vec<RateLimit>,
    pub retries: Option<crate::config::Retries>,
    pub sessions: Option<Sessions>,
    /// Characters of prompt and output text the audit record captures (`None`: none).
    pub audit_capture: Option<usize>,
    pub cache: Option<CachePolicy>,
    pub schema: super::schema::SchemaPolicy,
    pub injection: Option<super::injection::InjectionPolicy>,
    pub mode: Mode,
}

/// A compiled `cache` section.
#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    pub ttl: std::time::Duration,
    pub scope: super::CacheScope,
    pub when: super::CacheWhen,
    pub charge: bool,
}

/// A compiled `sessions` section.
#[derive(Debug, Clone, Copy)]
pub struct Sessions {
    pub id: super::SessionId,
    pub max_requests: Option<u64>,
    pub max_tokens: Option<u64>,
    pub max_duration: Option<std::time::Duration>,
}

/// A compiled rate limit.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per: super::Per,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub max_concurrent: Option<u64>,
}

/// A compiled budget: caps in picodollars and tokens per calendar window.
#[derive(Debug, Clone)]
pub struct Budget {
    pub name: std::sync::Arc<str>,
    pub per: super::Per,
    pub window: super::Window,
    pub usd: Option<u64>,
    pub tokens: Option<u64>,
    pub on_exhausted: super::OnExhausted,
    /// Shared: every settlement under the budget holds them.
    pub alerts: std::sync::Arc<[f64]>,
}

/// A rule's setting plus whether it enforces or only records.
#[derive(Debug, Clone)]
pub struct Rule<T> {
    pub value: T,
    pub mode: Mode,
}

#[derive(Debug, Clone)]
pub struct ModelLists {
    pub allow: Option<Vec<Glob>>,
    pub deny: Vec<Glob>,
}

#[derive(Debug, Clone, Copy)]
pub struct TokenCeiling {
    pub max: u64,
    pub default: u64,
    pub on_exceed: OnExceed,
}

#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub models: Option<Rule<ModelLists>>,
    pub max_tokens: Option<Rule<TokenCeiling>>,
    pub max_n: Option<Rule<u64>>,
    pub temperature: Option<Rule<Range>>,
    pub top_p: Option<Rule<Range>>,
    pub tools: Option<Rule<HashSet<String>>>,
    pub max_tool_iterations: Rule<u64>,
    /// Unnamed paths this policy lets through; empty: none.
    pub extra_paths: Rule<Vec<Glob>>,
    pub allow_file_batches: Option<bool>,
}

/// What a request is, for matching.
#[derive(Clone, Copy)]
pub struct Facts<'a> {
    pub key: Option<&'a VirtualKey>,
    pub endpoint: Endpoint,
    /// The model as the client named it.
    pub model: Option<&'a str>,
    /// The model the upstream receives (an alias's target), when different.
    pub upstream_model: Option<&'a str>,
    /// The provider the request is routed to.
    pub provider: Option<&'a str>,
    /// The normalised request path (for `extra_paths`).
    pub path: &'a str,
}

impl Policy {
    fn matches(&self, f: &Facts) -> bool {
        let key_name = f.key.map_or("", |k| k.name.as_str());
        let team = f.key.map_or("", |k| k.team.as_str());
        (self.keys.is_empty() || (f.key.is_some() && self.keys.iter().any(|g| g.matches(key_name))))
            && (self.teams.is_empty() || self.teams.iter().any(|t| t == team))
            && self
                .labels
                .iter()
                .all(|(k, v)| f.key.is_some_and(|key| key.labels.iter().any(|(a, b)| a == k && b == v)))
            && (self.models.is_empty()
                || self
                    .models
                    .iter()
                    .any(|g| f.model.is_some_and(|m| g.matches(m)) || f.upstream_model.is_some_and(|m| g.matches(m))))
            && (self.providers.is_empty() || f.provider.is_some_and(|p| self.providers.iter().any(|n| n == p)))
            && (self.routes.is_empty() || self.routes.contains(&f.endpoint))
    }
}

impl PolicySet {
    /// The policies that apply to a request, in application order.
    pub fn resolve(&self, f: &Facts) -> Vec<&Policy> {
        let mut idx: Vec<usize> = self.general.clone();
        if let Some(k) = f.key {
            idx.extend(self.by_key.get(&k.name).into_iter().flatten());
            idx.extend(self.by_team.get(&k.team).into_iter().flatten());
        }
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter().map(|i| &self.policies[i]).filter(|p| p.matches(f)).collect()
    }

    pub fn names(&self) -> Vec<&str> {
        self.policies.iter().map(|p| &*p.name).collect()
    }
}

pub(super) struct Cx<'a> {
    file: &'a str,
    /// Where the file's schema files sit.
    dir: &'a std::path::Path,
    diags: &'a mut Vec<Diagnostic>,
}

/// Reports a problem at a value's place in its policy file (the sections' compilers).
pub trait Report {
    fn report<T>(&mut self, at: &Spanned<T>, message: String);
}

impl Report for Cx<'_> {
    fn report<T>(&mut self, at: &Spanned<T>, message: String) {
        self.err(at, message, None);
    }
}

impl Cx<'_> {
    pub(super) fn err<T>(&mut self, at: &Spanned<T>, msg: impl Into<String>, hint: Option<String>) {
        self.diags.push(Diagnostic::at(self.file, at.referenced, msg).with_hint(hint));
    }

    pub(super) fn glob(&mut self, v: &Spanned<String>) -> Option<Glob> {
        match Glob::new(&v.value) {
            Ok(g) => Some(g),
            Err(e) => {
                self.err(v, e, None);
                None
            }
        }
    }

    pub(super) fn ceiling(&mut self, v: &Spanned<i64>, what: &str) -> u64 {
        if v.value < 1 {
            self.err(v, format!("{what} must be at least 1, got {}", v.value), None);
            return 1;
        }
        v.value.unsigned_abs()
    }

    pub(super) fn range(&mut self, r: &super::RangeRule, what: &str, lo: f64, hi: f64) -> Range {
        for v in [&r.min, &r.max].into_iter().flatten() {
            if !(lo..=hi).contains(&v.value) {
                self.err(v, format!("{what} bounds must be between {lo} and {hi}, got {}", v.value), None);
            }
        }
        if let (Some(min), Some(max)) = (&r.min, &r.max) {
            if min.value > max.value {
                self.err(
                    min,
                    format!("{what} range is the wrong way round: min {} is above max {}", min.value, max.value),
                    None,
                );
            }
        }
        Range { min: r.min.as_ref().map(|v| v.value), max: r.max.as_ref().map(|v| v.value) }
    }
}

/// Compiles parsed policy files against the config they will run with.
pub fn compile_policies(files: &[LoadedFile], hash: String, config: &Snapshot) -> Result<PolicySet, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let key_names: Vec<&str> = config.key_names();
    let teams: Vec<&str> = config.team_names();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut policies = Vec::new();
    for f in files {
        let dir = f.path.parent().unwrap_or(std::path::Path::new("."));
        let mut cx = Cx { file: &f.display, dir, diags: &mut diags };
        for p in &f.file.policies {
            let here = format!("{}:{}:{}", f.display, p.name.referenced.line(), p.name.referenced.column());
            if let Some(first) = seen.get(&p.name.value) {
                cx.err(
                    &p.name,
                    format!("duplicate policy name `{}`", p.name.value),
                    Some(format!("first defined at {first}")),
                );
                continue;
            }
            let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if p.name.value.is_empty() || !p.name.value.chars().all(valid) {
                // Names go into response headers and metric labels.
                cx.err(&p.name, "policy names may use only letters, digits, `-`, `_` and `.`", None);
            }
            seen.insert(p.name.value.clone(), here);
            policies.push(compile_one(&mut cx, p, &key_names, &teams, config));
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    policies.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name)));
    let mut set = PolicySet {
        version: 0,
        hash,
        files: files.iter().map(|f| f.display.clone()).collect(),
        ..PolicySet::default()
    };
    for (i, p) in policies.iter().enumerate() {
        let literal_keys = !p.keys.is_empty() && p.keys.iter().all(Glob::is_literal);
        if literal_keys {
            for k in &p.keys {
                set.by_key.entry(k.as_str().to_string()).or_default().push(i);
            }
        } else if p.keys.is_empty() && !p.teams.is_empty() {
            for t in &p.teams {
                set.by_team.entry(t.clone()).or_default().push(i);
            }
        } else {
            set.general.push(i);
        }
    }
    set.policies = policies;
    Ok(set)
}

fn compile_one(cx: &mut Cx, p: &RawPolicy, key_names: &[&str], teams: &[&str], config: &Snapshot) -> Policy {
    let m = &p.matcher;
    let mut keys = Vec::new();
    for k in &m.keys {
        let Some(g) = cx.glob(k) else { continue };
        if g.is_literal() && !key_names.contains(&k.value.as_str()) {
            let hint = hint_for(&k.value, key_names.iter().copied());
            cx.err(k, format!("unknown key `{}`: proxy.yaml defines no key by that name", k.value), hint);
        }
        keys.push(g);
    }
    for t in &m.teams {
        if !teams.contains(&t.value.as_str()) {
            let hint = hint_for(&t.value, teams.iter().copied());
            cx.err(t, format!("unknown team `{}`: no key in proxy.yaml has that team", t.value), hint);
        }
    }
    let mut models = Vec::new();
    for v in &m.models {
        let Some(g) = cx.glob(v) else { continue };
        if g.is_literal() && config.route(&v.value).is_none() {
            let names: Vec<&str> = config.models.iter().map(|m| m.id.as_str()).collect();
            let hint = hint_for(&v.value, names);
            cx.err(v, format!("unknown model or alias `{}`: no route in proxy.yaml matches it", v.value), hint);
        }
        models.push(g);
    }
    let provider_names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    for p in &m.providers {
        if !provider_names.contains(&p.value.as_str()) {
            let hint = hint_for(&p.value, provider_names.iter().copied());
            cx.err(p, format!("unknown provider `{}`", p.value), hint);
        }
    }
    let mut routes = Vec::new();
    for r in &m.routes {
        match ROUTE_NAMES.iter().position(|n| *n == r.value) {
            Some(_) => routes.extend(Endpoint::from_label(&r.value)),
            None => cx.err(r, format!("unknown route `{}`", r.value), route_hint(&r.value)),
        }
    }
    Policy {
        name: p.name.value.as_str().into(),
        priority: p.priority,
        keys,
        teams: m.teams.iter().map(|t| t.value.clone()).collect(),
        labels: m.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        models,
        providers: m.providers.iter().map(|p| p.value.clone()).collect(),
        routes,
        limits: p.limits.as_ref().map(|l| super::limits::compile_limits(cx, l, p.mode)),
        budgets: compile_budgets(cx, &p.budgets),
        rate_limits: p
            .rate_limits
            .iter()
            .map(|r| RateLimit {
                per: r.per,
                requests_per_minute: r.requests_per_minute.as_ref().map(|v| cx.ceiling(v, "`requests_per_minute`")),
                tokens_per_minute: r.tokens_per_minute.as_ref().map(|v| cx.ceiling(v, "`tokens_per_minute`")),
                max_concurrent: r.max_concurrent.as_ref().map(|v| cx.ceiling(v, "`max_concurrent`")),
            })
            .collect(),
        retries: p.retries.as_ref().map(|r| crate::config::Retries {
            max_attempts: (cx.ceiling(&r.max_attempts, "`retries.max_attempts`") as u32).min(10),
            deadline: r.deadline.map_or(std::time::Duration::from_secs(30), |d| d.0),
        }),
        sessions: p.sessions.as_ref().map(|s| {
            if s.max_requests.is_none() && s.max_tokens.is_none() && s.max_duration.is_none() {
                cx.err(
                    &p.name,
                    "`sessions` needs at least one of `max_requests`, `max_tokens`, `max_duration`".to_string(),
                    None,
                );
            }
            Sessions {
                id: s.id,
                max_requests: s.max_requests.as_ref().map(|v| cx.ceiling(v, "`sessions.max_requests`")),
                max_tokens: s.max_tokens.as_ref().map(|v| cx.ceiling(v, "`sessions.max_tokens`")),
                max_duration: s.max_duration.map(|d| d.0),
            }
        }),
        audit_capture: p.audit.as_ref().map(|a| cx.ceiling(&a.capture, "`audit.capture`").min(100_000) as usize),
        cache: p.cache.as_ref().map(|c| {
            if c.shared && c.scope != super::CacheScope::Key && c.scope != super::CacheScope::Shared {
                cx.err(&p.name, "`cache.shared: true` contradicts `cache.scope`".to_string(), None);
            }
            let ttl = c.ttl.map_or(std::time::Duration::from_secs(600), |d| d.0);
            if ttl.is_zero() {
                cx.err(&p.name, "`cache.ttl` must be more than 0".to_string(), None);
            }
            CachePolicy {
                ttl,
                scope: if c.shared { super::CacheScope::Shared } else { c.scope },
                when: c.when,
                charge: c.charge,
            }
        }),
        schema: match &p.schema {
            Some(s) => {
                let dir = cx.dir;
                super::schema::compile_schema(cx, s, &p.name, p.mode, dir)
            }
            None => super::schema::SchemaPolicy::default(),
        },
        injection: p.injection.as_ref().map(|i| super::injection::compile_injection(cx, i, p.mode)),
        mode: p.mode,
    }
}

fn compile_budgets(cx: &mut Cx, raw: &[super::RawBudget]) -> Vec<Budget> {
    let mut out: Vec<Budget> = Vec::new();
    for b in raw {
        if out.iter().any(|o| *o.name == *b.name.value) {
            cx.err(&b.name, format!("budget `{}` is defined twice in this policy", b.name.value), None);
        }
        if b.usd.is_none() && b.tokens.is_none() {
            cx.err(&b.name, format!("budget `{}` needs `usd`, `tokens` or both", b.name.value), None);
        }
        let usd = b.usd.as_ref().map(|u| {
            if !u.value.is_finite() || u.value <= 0.0 {
                cx.err(u, format!("`usd` must be more than 0, got {}", u.value), None);
            }
            (u.value.max(0.0) * crate::config::prices::PICO).round() as u64
        });
        let tokens = b.tokens.as_ref().map(|t| cx.ceiling(t, "`tokens`"));
        for a in &b.alerts {
            if !(*a > 0.0 && *a <= 1.0) {
                cx.err(
                    &b.name,
                    format!("alert thresholds are shares of the cap, above 0 and at most 1; got {a}"),
                    None,
                );
            }
        }
        out.push(Budget {
            name: b.name.value.as_str().into(),
            per: b.per,
            window: b.window,
            usd,
            tokens,
            on_exhausted: b.on_exhausted,
            alerts: b.alerts.as_slice().into(),
        });
    }
    out
}
