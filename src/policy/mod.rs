//! Policy files: the raw YAML types (serde, unknown fields rejected, JSON Schema derived for
//! editors), loading a directory of them, and the rule for how matching policies combine.
//!
//! # How policies combine
//!
//! Every policy whose `match` fits a request applies, in order of `priority` (highest first,
//! then by name). The request must satisfy every applicable rule of every one of them, so for
//! a ceiling or a range the strictest value wins without further rules. Where policies ask
//! for a change rather than a verdict (`max_tokens` clamping or a default), the smallest value
//! wins, and on a tie the policy with the higher `priority` is named. `mode: monitor` on a
//! policy, a section or a rule turns its blocks into "would have blocked" records.

pub mod compile;
pub mod evaluate;
pub mod injection;
pub mod limits;
pub mod reload;
pub mod schema;
pub mod schema_gen;
pub mod testing;
pub mod tools;
pub mod verdict;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

pub use compile::{compile_policies, PolicySet};

use crate::config::Diagnostic;

/// One policy file: `policies: [...]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "warden policy file")]
pub struct PolicyFile {
    /// The policies this file defines. Names are unique across all files.
    pub policies: Vec<RawPolicy>,
}

/// Enforce a rule, or only record what it would have done.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    /// Decide as if enforcing, but let the request through and record "would have blocked".
    Monitor,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Unique policy name, shown in errors, headers and metrics.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Higher first; breaks ties between equally strict values.
    #[serde(default)]
    pub priority: i32,
    /// `monitor` records instead of blocking, for every rule of this policy.
    #[serde(default)]
    pub mode: Mode,
    /// Which requests this policy applies to. Empty matches every request.
    #[serde(default, rename = "match")]
    pub matcher: RawMatch,
    /// Stateless per-request checks.
    pub limits: Option<RawLimits>,
    /// Spend and token caps per key, team, model or for everything, per calendar window (UTC).
    #[serde(default)]
    pub budgets: Vec<RawBudget>,
    /// Requests and tokens per minute, and requests in flight, per key or team.
    #[serde(default)]
    pub rate_limits: Vec<RawRateLimit>,
    /// Overrides the providers' retry schedule (`proxy.yaml`) for matching requests.
    pub retries: Option<RawPolicyRetries>,
    /// Caps per agent session: requests, tokens and wall-clock time.
    pub sessions: Option<RawSessions>,
    /// What the audit log records of matching requests beyond the defaults.
    pub audit: Option<RawPolicyAudit>,
    /// Answer repeated requests from the response cache.
    pub cache: Option<RawPolicyCache>,
    /// Request rules, and validation of the model's structured output.
    pub schema: Option<schema::RawSchema>,
    /// The prompt-injection scan of what flows into the prompt.
    pub injection: Option<injection::RawInjection>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyCache {
    /// How long an answer is served from the cache (`10m`, `1h`; default 10m).
    #[schemars(with = "Option<String>")]
    pub ttl: Option<crate::config::Dur>,
    /// Who shares entries: each virtual key (default), each team, or every caller.
    #[serde(default)]
    pub scope: CacheScope,
    /// `true` is `scope: shared`.
    #[serde(default)]
    pub shared: bool,
    /// Which requests are cached: deterministic ones (temperature 0, one choice; default)
    /// or every request with one choice.
    #[serde(default)]
    pub when: CacheWhen,
    /// Charge hits against budgets at the stored answer's usage (default: hits are free).
    #[serde(default)]
    pub charge: bool,
}

/// Who shares cache entries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    #[default]
    Key,
    /// Keys of one team share; a key without a team has its own entries.
    Team,
    /// Every caller of the policy shares entries.
    Shared,
}

/// Which requests are cached.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CacheWhen {
    /// `temperature: 0` (embeddings always), and no `n` or `best_of` above 1.
    #[default]
    Deterministic,
    /// Any temperature, still one choice.
    Always,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyAudit {
    /// Record the prompt's text and the model's output text, each cut to this many
    /// characters (off by default: the audit log holds no conversation text).
    #[schemars(with = "i64")]
    pub capture: Spanned<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyRetries {
    /// Attempts, the first included (1: no retries).
    #[schemars(with = "i64")]
    pub max_attempts: Spanned<i64>,
    /// No attempt starts, and no wait runs, past this long after the first (`30s`, `2m`).
    #[schemars(with = "Option<String>")]
    pub deadline: Option<crate::config::Dur>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSessions {
    /// Where the session id comes from: the `x-warden-session` header (default), the body's
    /// `user`, or its `metadata.user_id` (Anthropic).
    #[serde(default)]
    pub id: SessionId,
    #[schemars(with = "Option<i64>")]
    pub max_requests: Option<Spanned<i64>>,
    /// Tokens used by the session's requests, as the responses report them.
    #[schemars(with = "Option<i64>")]
    pub max_tokens: Option<Spanned<i64>>,
    /// Wall-clock time from the session's first request (`30m`, `2h`).
    #[schemars(with = "Option<String>")]
    pub max_duration: Option<crate::config::Dur>,
}

/// Where a request's session id is read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum SessionId {
    #[default]
    #[serde(rename = "header")]
    Header,
    #[serde(rename = "user")]
    User,
    #[serde(rename = "metadata.user_id")]
    MetadataUserId,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Who the limit counts for: `key`, `team`, `model` or `global`.
    pub per: Per,
    #[schemars(with = "Option<i64>")]
    pub requests_per_minute: Option<Spanned<i64>>,
    /// Tokens (the prompt's estimate plus the output limit at admission; the reported usage
    /// once the exchange ends).
    #[schemars(with = "Option<i64>")]
    pub tokens_per_minute: Option<Spanned<i64>>,
    /// Requests in flight at once.
    #[schemars(with = "Option<i64>")]
    pub max_concurrent: Option<Spanned<i64>>,
}

/// Who a budget counts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    /// Each virtual key its own budget (in a policy matching a team: every key of the team).
    Key,
    Team,
    /// Each upstream model its own budget.
    Model,
    /// One budget for every request the policy matches.
    Global,
}

/// A calendar window in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Minute,
    Hour,
    Day,
    Month,
}

/// What a budget without room does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnExhausted {
    /// 429 in the caller's format, naming the budget and when it resets.
    #[default]
    Reject,
    /// Lower the request's output limit so that its worst case fits.
    Clamp,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Unique within the policy; shown in errors, metrics and `warden spend`.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    pub per: Per,
    pub window: Window,
    /// Dollar cap per window.
    #[schemars(with = "Option<f64>")]
    pub usd: Option<Spanned<f64>>,
    /// Token cap per window (input, output, cached and cache writes together).
    #[schemars(with = "Option<i64>")]
    pub tokens: Option<Spanned<i64>>,
    #[serde(default)]
    pub on_exhausted: OnExhausted,
    /// Shares of the cap (0 to 1] at which an alert fires, once per window.
    #[serde(default)]
    pub alerts: Vec<f64>,
}

/// All given conditions must hold; a list matches when any of its entries does.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Virtual key names from proxy.yaml (globs allowed).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub keys: Vec<Spanned<String>>,
    /// Team names from proxy.yaml.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub teams: Vec<Spanned<String>>,
    /// Key labels that must all be present with these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Requested model names or aliases (globs allowed); the alias target matches too.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub models: Vec<Spanned<String>>,
    /// Provider names from proxy.yaml the request is routed to.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub providers: Vec<Spanned<String>>,
    /// Endpoints: chat_completions, completions, embeddings, responses, messages,
    /// count_tokens, models, other.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub routes: Vec<Spanned<String>>,
}

/// The `limits` section: stateless checks of a single request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// `monitor` for every rule of this section.
    pub mode: Option<Mode>,
    /// Which models may be requested (allow) and which never (deny). Globs.
    pub models: Option<ModelsRule>,
    /// Ceiling on max_tokens / max_completion_tokens / max_output_tokens.
    pub max_tokens: Option<MaxTokensRule>,
    /// Ceiling on `n` (OpenAI: how many choices).
    pub max_n: Option<CeilingRule>,
    pub temperature: Option<RangeRule>,
    pub top_p: Option<RangeRule>,
    /// Tool names the request may declare.
    pub tools: Option<ToolsRule>,
    /// Assistant tool-call rounds already in the message history. Default 10.
    pub max_tool_iterations: Option<CeilingRule>,
    /// Unnamed `/v1` paths (globs) that keys matched by this policy may call, on top of the
    /// provider's own `extra_paths`. A `limits` section without this field allows none: its
    /// rules cannot be applied to an API warden does not know.
    #[schemars(with = "Option<Vec<String>>")]
    pub extra_paths: Option<Vec<Spanned<String>>>,
    /// Allow OpenAI `POST /v1/batches`, whose requests sit in an uploaded file that warden
    /// cannot check. Refused unless a matching policy says `true` and none says `false`.
    pub allow_file_batches: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelsRule {
    #[schemars(with = "Option<Vec<String>>")]
    pub allow: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub deny: Vec<Spanned<String>>,
    pub mode: Option<Mode>,
}

/// What to do with a request above the ceiling.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnExceed {
    #[default]
    Reject,
    /// Lower the request's value to the ceiling and forward it.
    Clamp,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaxTokensRule {
    /// The ceiling.
    #[schemars(with = "i64")]
    pub max: Spanned<i64>,
    /// Set when the request names no limit (default: `max`).
    #[schemars(with = "Option<i64>")]
    pub default: Option<Spanned<i64>>,
    #[serde(default)]
    pub on_exceed: OnExceed,
    pub mode: Option<Mode>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CeilingRule {
    #[schemars(with = "i64")]
    pub max: Spanned<i64>,
    pub mode: Option<Mode>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeRule {
    #[schemars(with = "Option<f64>")]
    pub min: Option<Spanned<f64>>,
    #[schemars(with = "Option<f64>")]
    pub max: Option<Spanned<f64>>,
    pub mode: Option<Mode>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolsRule {
    pub allow: Vec<String>,
    pub mode: Option<Mode>,
}

/// A parsed policy file and where it came from.
pub struct LoadedFile {
    pub path: PathBuf,
    pub display: String,
    pub file: PolicyFile,
}

/// Whether a path in the policy directory is a policy file (tests and hidden files are not).
pub fn is_policy_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.')
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
        && !name.ends_with("_test.yaml")
        && !name.ends_with("_test.yml")
}

/// Reads and parses every policy file in `dir` (sorted by name). A missing directory is an
/// empty policy set.
pub fn load_dir(dir: &Path) -> Result<(Vec<LoadedFile>, String), Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut files = Vec::new();
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_policy_file(p)).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(vec![Diagnostic {
                file: dir.display().to_string(),
                line: 1,
                col: 1,
                message: format!("cannot read the policy directory: {e}"),
                hint: None,
            }])
        }
    };
    paths.sort();
    // The hash covers every file's name and bytes: what `warden_policy_info` reports.
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    for path in paths {
        let display = path.display().to_string();
        let text = match crate::config::read_file(&path) {
            Ok(t) => t,
            Err(message) => {
                diags.push(Diagnostic { file: display, line: 1, col: 1, message, hint: None });
                continue;
            }
        };
        hasher.update(display.as_bytes());
        hasher.update(text.as_bytes());
        match parse(&display, &text) {
            Ok(file) => files.push(LoadedFile { path, display, file }),
            Err(d) => diags.push(d),
        }
    }
    if diags.is_empty() {
        Ok((files, crate::secret::hex(&hasher.finish().as_ref()[..8])))
    } else {
        Err(diags)
    }
}

/// Parses one policy file's text.
pub fn parse(display: &str, text: &str) -> Result<PolicyFile, Diagnostic> {
    serde_saphyr::from_str::<PolicyFile>(text).map_err(|e| Diagnostic::from_yaml(display, &e))
}

/// Endpoint names a policy may match on.
pub const ROUTE_NAMES: [&str; 10] = [
    "chat_completions",
    "completions",
    "embeddings",
    "responses",
    "models",
    "messages",
    "count_tokens",
    "message_batches",
    "batches",
    "other",
];

pub(crate) fn route_hint(name: &str) -> Option<String> {
    crate::config::diag::hint_for(name, ROUTE_NAMES)
}
