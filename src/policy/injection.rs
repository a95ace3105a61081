//! The `injection` section: its YAML shape and compiled form. Which roles are scanned, the
//! threshold, per-family weights and switches, the action, allow-listed phrases, and the
//! optional canary. The scan itself is [`crate::injection`]; the pipeline's injection stage
//! applies it to every text part of the request view.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::compile::Report;
use super::Mode;
use crate::injection::rules::Family;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawInjection {
    pub mode: Option<Mode>,
    /// A family whose score reaches this is a detection (default 0.5).
    #[schemars(with = "Option<f64>")]
    pub threshold: Option<Spanned<f64>>,
    /// What a detection does (default `block`).
    #[serde(default)]
    pub action: InjectionAction,
    /// Who wrote the text that is scanned: `user`, `tool` (default both), `system`, `assistant`.
    #[schemars(with = "Option<Vec<String>>")]
    pub scan: Option<Vec<Spanned<String>>>,
    /// Per family: `false` switches it off; a number multiplies its score.
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, serde_json::Value>")]
    pub families: std::collections::BTreeMap<String, Spanned<FamilySetting>>,
    /// Phrases this app's legitimate prompts contain: removed (case-insensitively) before the
    /// scan, so they never trip a rule on their own.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Add a random canary token to the system prompt and act when the output repeats it.
    pub canary: Option<CanaryAction>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FamilySetting {
    On(bool),
    Weight(f64),
}

/// What a detection does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InjectionAction {
    /// 403 in the caller's format, naming the family (the text is never echoed).
    #[default]
    Block,
    /// Forward, with `x-warden-injection: family=score`.
    Flag,
    /// Remove invisible characters and chat-template tokens from the text, then forward.
    Sanitize,
}

impl InjectionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            InjectionAction::Block => "block",
            InjectionAction::Flag => "flag",
            InjectionAction::Sanitize => "sanitize",
        }
    }
}

/// What a leaked canary does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CanaryAction {
    Flag,
    Block,
}

/// The roles a section scans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    pub user: bool,
    pub tool: bool,
    pub system: bool,
    pub assistant: bool,
}

/// A compiled `injection` section.
#[derive(Debug, Clone)]
pub struct InjectionPolicy {
    pub threshold: f32,
    pub action: InjectionAction,
    pub roles: Roles,
    /// Score multipliers by family (0: off).
    pub weights: Vec<(Family, f32)>,
    /// Lowercased.
    pub allow: Vec<String>,
    pub canary: Option<CanaryAction>,
    pub mode: Mode,
}

impl InjectionPolicy {
    pub fn weight(&self, f: Family) -> f32 {
        self.weights.iter().find(|(g, _)| *g == f).map_or(1.0, |(_, w)| *w)
    }
}

/// Compiles an `injection` section; `report` takes each problem at its place.
pub fn compile_injection(r: &mut impl Report, raw: &RawInjection, policy_mode: Mode) -> InjectionPolicy {
    let threshold = match &raw.threshold {
        Some(t) if !(t.value > 0.0 && t.value <= 1.0) => {
            r.report(t, format!("`threshold` must be above 0 and at most 1, got {}", t.value));
            0.5
        }
        Some(t) => t.value as f32,
        None => 0.5,
    };
    let mut roles = Roles::default();
    match &raw.scan {
        None => (roles.user, roles.tool) = (true, true),
        Some(list) => {
            for role in list {
                match role.value.as_str() {
                    "user" => roles.user = true,
                    "tool" => roles.tool = true,
                    "system" => roles.system = true,
                    "assistant" => roles.assistant = true,
                    other => r.report(role, format!("unknown role `{other}`: scan user, tool, system or assistant")),
                }
            }
        }
    }
    let mut weights = Vec::new();
    for (name, setting) in &raw.families {
        let Some(f) = Family::ALL.iter().copied().find(|f| f.as_str() == name) else {
            let names: Vec<&str> = Family::ALL.iter().map(|f| f.as_str()).collect();
            r.report(setting, format!("unknown family `{name}`; families: {}", names.join(", ")));
            continue;
        };
        let w = match setting.value {
            FamilySetting::On(true) => 1.0,
            FamilySetting::On(false) => 0.0,
            FamilySetting::Weight(w) if (0.0..=10.0).contains(&w) => w as f32,
            FamilySetting::Weight(w) => {
                r.report(setting, format!("a family's weight must be between 0 and 10, got {w}"));
                1.0
            }
        };
        weights.push((f, w));
    }
    InjectionPolicy {
        threshold,
        action: raw.action,
        roles,
        weights,
        allow: raw.allow.iter().map(|a| a.to_lowercase()).filter(|a| !a.trim().is_empty()).collect(),
        canary: raw.canary,
        mode: raw.mode.unwrap_or(policy_mode),
    }
}
