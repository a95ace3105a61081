//! Budget stage: reserves the request's worst case (estimated input, full output limit,
//! times `n`) on every budget of the matching policies, before anything is sent upstream,
//! and leaves the settlement in the exchange guard. A budget without room refuses (429,
//! naming the budget and its reset) or, with `on_exhausted: clamp`, lowers the output limit
//! so that the worst case fits. A request that names no output limit gets one, so that its
//! worst case is bounded.

use std::sync::{Arc, Mutex, OnceLock};

use crate::budget::{now_secs, window_bounds, window_label, AccountKey, Ask, Claim, Few, Reservation, Scopes};
use crate::config::prices::{Price, Unpriced, PICO};
use crate::config::Snapshot;
use crate::error::{BudgetRefusal, ProxyError};
use crate::pipeline::exchange::{End, Settle, SettleFuture};
use crate::policy::compile::Policy;
use crate::policy::Mode;
use crate::provider::request::RequestView;
use crate::provider::Endpoint;
use crate::state::AppState;

/// The output limit reserved for (and set on) a request that names none and that no
/// `limits.max_tokens` default covers.
pub const DEFAULT_OUTPUT_RESERVATION: u64 = 4096;

/// Who and what the request is, for scoping budgets and estimating its worst case.
pub struct Subject<'a, 'v> {
    /// The key, team and model it counts under.
    pub scopes: Scopes<'a>,
    /// The model the upstream receives.
    pub model: &'a str,
    /// The models the route's fallbacks would ask for: the reservation is made at the
    /// dearest price among them and `model`, so a fallback cannot overspend a budget.
    pub fallback_models: Vec<&'a str>,
    pub endpoint: Endpoint,
    pub view: &'a RequestView<'v>,
    /// Counts prompt text exactly, when `prompt_tokens: tiktoken` and the model is OpenAI's.
    pub tokenizer: Option<&'a dyn Fn(&str) -> usize>,
    pub body_len: usize,
    /// The request's output limit after the `limits` edits, and the field it sits in.
    pub max_output: Option<(&'static str, u64)>,
}

/// What the stage decided.
pub struct Reserved {
    /// The output limit to set on the request (field, value), when it differs from what
    /// the request and the `limits` edits already say.
    pub set_output: Option<(&'static str, u64)>,
    /// Monitor-mode budgets that would have refused, as `policy:budgets.name`.
    pub would_refuse: Vec<String>,
}

/// Reserves `worst` (see [`worst_case`], computed once for this stage and the rate limits)
/// on every budget of `policies`.
pub fn reserve(
    app: &Arc<AppState>,
    snap: &Snapshot,
    policies: &[&Policy],
    subject: &Subject<'_, '_>,
    worst: &Worst,
    guard: &mut crate::pipeline::exchange::Guard,
) -> Result<Option<Reserved>, ProxyError> {
    let max_output = subject.max_output;
    let now = now_secs();
    let count = policies.iter().map(|p| p.budgets.len()).sum();
    if count == 0 {
        return Ok(None);
    }
    let mut claims = Few::with_capacity(count);
    let mut lines = Few::with_capacity(count);
    for p in policies {
        for b in &p.budgets {
            let (start, end) = window_bounds(b.window, now);
            claims.push(Claim {
                key: AccountKey {
                    policy: p.name.clone(),
                    budget: b.name.clone(),
                    scope: subject.scopes.get(b.per),
                    window_start: start,
                },
                usd: b.usd,
                tokens: b.tokens,
                on_exhausted: b.on_exhausted,
                enforce: p.mode == Mode::Enforce,
            });
            lines.push(Line { usd: b.usd, alerts: b.alerts.clone(), window: b.window, end });
        }
    }
    let price = match snap.prices.get(subject.model) {
        Some(p) => Some(*p),
        None if claims.iter().all(|c| c.usd.is_none()) => None,
        None => match snap.prices.unpriced {
            Unpriced::Reject => return Err(ProxyError::UnpricedModel(subject.model.to_string())),
            Unpriced::Meter => {
                warn_unpriced_once(subject.model);
                None
            }
        },
    };
    let &Worst { input_tokens, field, asked, choices } = worst;
    let p = price.unwrap_or(Price { input: 0, output: 0, cached_input: 0, cache_write: 0 });
    // Reserved at the dearest model that may answer; settled at the one that did.
    let p = subject.fallback_models.iter().filter_map(|m| snap.prices.get(m)).fold(p, |a, b| a.dearest(b));
    let ask = Ask {
        input_tokens,
        input_cost: input_tokens.saturating_mul(p.input),
        max_output: asked,
        output_price: p.output,
        choices,
    };
    let granted = app.budgets.reserve(&claims, ask).map_err(|r| {
        let c = &claims[r.claim];
        let Line { end, window, .. } = lines[r.claim];
        let usd = |pico: u64| pico as f64 / PICO;
        ProxyError::BudgetExhausted(Box::new(BudgetRefusal {
            policy: c.key.policy.to_string(),
            budget: c.key.budget.to_string(),
            scope: describe(&c.key.scope),
            window: window_label(window),
            // Settled spend plus what requests in flight hold.
            spent_usd: usd(r.account.spent.saturating_add(r.account.reserved)),
            limit_usd: c.usd.map_or(0.0, usd),
            resets_in_secs: (end - now).max(1) as u64,
        }))
    })?;
    let would_refuse = granted
        .would_refuse
        .iter()
        .map(|&i| format!("{}:budgets.{}", claims[i].key.policy, claims[i].key.budget))
        .collect();
    let set_output = match field {
        Some(f) if max_output.is_none() || granted.max_output < asked => Some((f, granted.max_output)),
        _ => None,
    };
    guard.push(Box::new(Settlement { reservation: Some(granted.reservation), price, app: app.clone(), lines }));
    Ok(Some(Reserved { set_output, would_refuse }))
}

/// A request's worst case: its estimated prompt, the output limit it will be sent with (and
/// the field that holds it), and how many candidates may each use all of it.
pub struct Worst {
    pub input_tokens: u64,
    pub field: Option<&'static str>,
    pub asked: u64,
    pub choices: u64,
}

impl Worst {
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.asked.saturating_mul(self.choices))
    }
}

pub fn worst_case(subject: &Subject<'_, '_>) -> Worst {
    let view = subject.view;
    let (field, asked) = match (subject.max_output, subject.endpoint.max_tokens_field()) {
        (Some((field, v)), _) => (Some(field), v),
        (None, Some(field)) => (Some(field), DEFAULT_OUTPUT_RESERVATION),
        // Embeddings and count_tokens generate nothing.
        (None, None) => (None, 0),
    };
    let choices = [view.fields.n, view.fields.best_of]
        .into_iter()
        .flatten()
        .filter_map(|raw| raw.get().parse::<u64>().ok())
        .max()
        .unwrap_or(1)
        .max(1);
    let input_tokens = view.estimate_input_tokens(subject.body_len, subject.tokenizer);
    Worst { input_tokens, field, asked, choices }
}

/// Exact token counts for OpenAI models (o200k_base, the encoding of gpt-4o and later).
/// Loaded once, on first use (about 100 ms), or at start when configured.
pub fn tiktoken_count(text: &str) -> usize {
    tiktoken_rs::o200k_base_singleton().encode_ordinary(text).len()
}

pub fn describe(scope: &str) -> String {
    match scope.split_once(':') {
        Some((kind, name)) => format!("{kind} `{name}`"),
        None => "all requests".to_string(),
    }
}

fn warn_unpriced_once(model: &str) {
    static SEEN: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.insert(model.to_string()) {
        tracing::warn!(model, "model has no price: its tokens are metered at cost 0 (unpriced_models: meter)");
    }
}

/// What the settlement needs of a budget beyond its account.
struct Line {
    usd: Option<u64>,
    alerts: Arc<[f64]>,
    window: crate::policy::Window,
    /// When the window closes (Unix seconds).
    end: i64,
}

/// Replaces the reservation by the exchange's real cost when it ends, fires the alerts whose thresholds it crossed, and writes the
/// cost to the ledger: the future completes once it is committed.
struct Settlement {
    reservation: Option<Reservation>,
    price: Option<Price>,
    app: Arc<AppState>,
    lines: Few<Line>,
}

impl Settle for Settlement {
    fn answered_by(&mut self, snap: &Snapshot, model: &str) {
        // An unpriced fallback is charged at the price reserved for: never free.
        if let Some(p) = snap.prices.get(model) {
            self.price = Some(*p);
        }
    }

    fn settle(mut self: Box<Self>, end: End) -> SettleFuture {
        let Some(r) = self.reservation.take() else { return Box::pin(async {}) };
        let (cost, tokens) = match (end.usage, self.price) {
            (Some(u), Some(p)) => (p.cost(&u), u.total()),
            (Some(u), None) => (0, u.total()),
            // Nothing was generated (the request failed before or at the upstream).
            (None, _) => (0, 0),
        };
        let changes = r.settle(cost, tokens);
        let m = &self.app.metrics;
        for (claim, key, before, after) in &changes {
            let Some(line) = self.lines.get(*claim) else { continue };
            let Some(cap) = line.usd else { continue };
            for threshold in crate::alerts::crossed(&line.alerts, cap, before.spent, after.spent) {
                let alert = crate::alerts::Alert {
                    policy: key.policy.to_string(),
                    budget: key.budget.to_string(),
                    scope: key.scope.to_string(),
                    window: window_label(line.window),
                    window_start: key.window_start,
                    spent_usd: after.spent as f64 / PICO,
                    limit_usd: cap as f64 / PICO,
                    threshold,
                };
                // Read only when an alert fires: most settlements cross nothing.
                let webhook = self.app.snapshot.load().settings.alert_webhook.clone();
                crate::alerts::fire(m, webhook.as_ref(), alert);
            }
        }
        match self.app.ledger.get() {
            Some(ledger) if cost > 0 || tokens > 0 => {
                let acks: Vec<_> = changes.into_iter().map(|(_, k, _, _)| ledger.record(k, cost, tokens)).collect();
                Box::pin(async move {
                    for ack in acks {
                        let _ = ack.await;
                    }
                })
            }
            _ => Box::pin(async {}),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tiktoken_counts_openai_tokens_exactly() {
        assert_eq!(super::tiktoken_count("hello world"), 2);
        assert_eq!(super::tiktoken_count(""), 0);
    }
}
