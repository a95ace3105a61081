//! The audit record of a request, built when it finishes (from what its context gathered)
//! and handed to the audit log's queue. Keys and credentials are never in it: the key's
//! name and team are, and a client's own provider key appears as its short hash. Prompt and
//! output text are left out unless a matching policy sets `audit.capture`.

use std::time::Duration;

use super::finish::Finish;
use crate::audit::{Record, ToolCall};

/// Tool-call arguments are cut to this many characters.
pub const ARGS_CHARS: usize = 200;

/// Errors that are a rule saying no (rather than something failing).
const BLOCKS: [&str; 6] =
    ["policy_violation", "budget_exhausted", "rate_limited", "session_limit", "unpriced_model", "forbidden"];

/// Takes what it needs out of the finished request's context (it is the last to read it).
pub fn record(fin: &mut Finish, status: u16, error: &str, elapsed: Duration) -> Record {
    let ttfb = fin.ttfb;
    let cx = &mut fin.cx;
    let list = |v: &Option<String>| -> Vec<String> {
        v.as_deref().map(|s| s.split(',').map(str::to_string).collect()).unwrap_or_default()
    };
    let decision = match error {
        "-" => "allowed",
        e if BLOCKS.contains(&e) => "blocked",
        _ => "error",
    };
    let cost = match (&cx.spent(), cx.model_forwarded.as_deref()) {
        (Some(u), Some(model)) => cx.snapshot.prices.get(model).map(|p| p.cost(u) as f64 / crate::config::prices::PICO),
        _ => None,
    };
    let tool_calls = cx
        .output
        .as_ref()
        .map(|o| {
            o.tool_calls()
                .into_iter()
                .map(|c| ToolCall { name: c.name.clone(), arguments: c.arguments.chars().take(ARGS_CHARS).collect() })
                .collect()
        })
        .unwrap_or_default();
    let mut time = String::with_capacity(32);
    super::access_log::timestamp(&mut time);
    let ms = |d: Duration| (d.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    Record {
        time,
        key: cx.passthrough.take().unwrap_or_else(|| cx.key_name().to_string()),
        team: cx.team().to_string(),
        request_id: std::mem::take(&mut cx.id),
        session: cx.session.take(),
        route: cx.route_label.take(),
        endpoint: cx.endpoint_label().to_string(),
        status,
        model_requested: cx.model_requested.take(),
        answered_by: cx.answered_by.take(),
        decision: decision.to_string(),
        policies: list(&cx.policies),
        reason: (error != "-").then(|| error.to_string()),
        would_block: list(&cx.would_block),
        attempts: std::mem::take(&mut cx.attempts),
        input_tokens: cx.usage.map(|u| u.input),
        output_tokens: cx.usage.map(|u| u.output),
        tokens_estimated: cx.usage.is_some_and(|u| u.estimated),
        cost_usd: cost,
        latency_ms: ms(elapsed),
        ttfb_ms: ttfb.map(ms),
        stream: cx.stream,
        cache: cx.cache.map(|c| c.as_str().to_string()),
        tool_calls,
        output: cx
            .capture
            .as_ref()
            .map(|(n, _)| cx.output.as_ref().map_or_else(String::new, |o| o.text.chars().take(*n).collect())),
        prompt: cx.capture.take().map(|(_, p)| p),
    }
}
