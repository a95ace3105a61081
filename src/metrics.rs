//! The Prometheus registry and every `warden_*` metric. Label values come only from the
//! config (route names, provider names, key and team names) or fixed sets (endpoint, status
//! code, error kind), never from raw request fields, so clients cannot grow the series count.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    /// Labels: endpoint, provider, model (as asked for), upstream_model (as forwarded), key,
    /// team, status. Model names the config does not know appear as their route pattern.
    pub requests: IntCounterVec,
    /// Whole request, until the last body byte. Labels: endpoint, provider.
    pub duration: HistogramVec,
    /// Until the upstream's response headers. Labels: provider.
    pub upstream_duration: HistogramVec,
    /// Until the first streamed body byte, for `stream: true`. Labels: endpoint, provider.
    pub ttfb: HistogramVec,
    pub in_flight: IntGauge,
    /// warden's own time: total to response headers minus time waiting on the upstream.
    pub overhead: Histogram,
    /// Requests warden refused or failed itself. Labels: kind (fixed set).
    pub errors: IntCounterVec,
    pub build_info: IntGaugeVec,
    /// Reload attempts by result: ok, unchanged, error.
    pub policy_reloads: IntCounterVec,
    /// 1 for the live policy version and hash.
    pub policy_info: IntGaugeVec,
    /// Policy rule outcomes. Labels: policy, rule, decision (block, would_block, clamp, default).
    pub policy_decisions: IntCounterVec,
    /// Schema violations. Labels: direction (request, output), policy, action (block,
    /// would_block for requests; retry, reject, flag, monitor for output).
    pub schema_violations: IntCounterVec,
    /// Upstream calls made again because the output broke its schema.
    pub schema_retries: prometheus::IntCounter,
    /// Requests in which the injection scan found a family. Labels: family, action (block,
    /// flag, sanitize, monitor), policy.
    pub injection_detections: IntCounterVec,
    /// Tokens by key, team, model, provider, direction (input, output, cached_input,
    /// cache_write, reasoning) and whether they were estimated.
    pub tokens: IntCounterVec,
    /// Settled cost in USD. Labels: key, team, model.
    pub cost: prometheus::CounterVec,
    /// What is left of each budget in its current window. Labels: budget (policy/name), scope.
    pub budget_remaining: prometheus::GaugeVec,
    /// Budget alert thresholds crossed. Labels: budget, scope, threshold.
    pub budget_alerts: IntCounterVec,
    /// Requests refused by a rate limit. Labels: policy, limit.
    pub ratelimit_rejections: IntCounterVec,
    /// Every upstream attempt. Labels: provider, outcome (`success`, `retryable`, `error`,
    /// `circuit_open`).
    pub upstream_attempts: IntCounterVec,
    /// Waits before retries (backoff or `retry-after`).
    pub retry_wait: prometheus::Histogram,
    /// Requests answered by a fallback. Labels: from, to (`provider/model`).
    pub fallbacks: IntCounterVec,
    /// 0 closed, 1 half-open, 2 open. Labels: provider.
    pub circuit_state: prometheus::IntGaugeVec,
    /// Requests stopped by a session cap. Labels: limit.
    pub session_blocks: IntCounterVec,
    /// Audit records dropped because the writer's queue was full.
    pub audit_dropped: prometheus::IntCounter,
    /// Audit log writes (or opens, or rotations) that failed.
    pub audit_write_errors: prometheus::IntCounter,
    /// `warden_cache_requests_total{result}`, resolved once per result.
    pub cache_hit: prometheus::IntCounter,
    pub cache_miss: prometheus::IntCounter,
    pub cache_bypass: prometheus::IntCounter,
    /// Bytes of stored responses (set when scraped).
    pub cache_bytes: IntGauge,
    pub cache_entries: IntGauge,
    /// What hits did not spend, at list price.
    pub cache_saved_usd: prometheus::Counter,
    /// `warden_cache_saved_tokens_total{direction}`: tokens hits did not spend.
    pub cache_saved_input: prometheus::IntCounter,
    pub cache_saved_output: prometheus::IntCounter,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    match r {
        Ok(v) => v,
        // Only reachable through a programming error in the fixed definitions below.
        #[expect(clippy::panic, reason = "static metric definitions; a failure is a bug caught by every test")]
        Err(e) => panic!("metric definition: {e}"),
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        // 1 ms to about 17 minutes: LLM streams run for minutes.
        let latency = || exponential_buckets(0.001, 2.0, 21);
        let requests = must(IntCounterVec::new(
            Opts::new(
                "warden_requests_total",
                "Requests handled, by endpoint, provider, model asked for and forwarded, key, team and status.",
            ),
            &["endpoint", "provider", "model", "upstream_model", "key", "team", "status"],
        ));
        let duration = must(HistogramVec::new(
            HistogramOpts::new("warden_request_duration_seconds", "Time from request start to the last response byte.")
                .buckets(must(latency())),
            &["endpoint", "provider"],
        ));
        let upstream_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "warden_upstream_duration_seconds",
                "Time from sending upstream to its response headers.",
            )
            .buckets(must(latency())),
            &["provider"],
        ));
        let ttfb = must(HistogramVec::new(
            HistogramOpts::new("warden_stream_ttfb_seconds", "Time to the first streamed response byte.")
                .buckets(must(latency())),
            &["endpoint", "provider"],
        ));
        let in_flight = must(IntGauge::new("warden_in_flight_requests", "Requests currently in progress."));
        let overhead = must(Histogram::with_opts(
            HistogramOpts::new(
                "warden_overhead_seconds",
                "warden's own time per request: total to response headers minus upstream wait.",
            )
            .buckets(must(exponential_buckets(0.000_025, 2.0, 14))),
        ));
        let errors = must(IntCounterVec::new(
            Opts::new("warden_errors_total", "Requests refused or failed by warden itself, by error kind."),
            &["kind"],
        ));
        let build_info = must(IntGaugeVec::new(
            Opts::new("warden_build_info", "Always 1; the running warden version."),
            &["version"],
        ));
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let policy_reloads = must(IntCounterVec::new(
            Opts::new("warden_policy_reloads_total", "Configuration and policy reloads, by result."),
            &["result"],
        ));
        let policy_info = must(IntGaugeVec::new(
            Opts::new("warden_policy_info", "1 for the live policy snapshot's version and hash."),
            &["version", "hash"],
        ));
        let policy_decisions = must(IntCounterVec::new(
            Opts::new("warden_policy_decisions_total", "Policy rule outcomes: block, would_block, clamp, default."),
            &["policy", "rule", "decision"],
        ));
        let schema_violations = must(IntCounterVec::new(
            Opts::new(
                "warden_schema_violations_total",
                "Requests and model outputs that broke a policy's schema rules.",
            ),
            &["direction", "policy", "action"],
        ));
        let schema_retries = must(prometheus::IntCounter::new(
            "warden_schema_retries_total",
            "Upstream calls made again because the model's output broke its schema.",
        ));
        let injection_detections = must(IntCounterVec::new(
            Opts::new(
                "warden_injection_detections_total",
                "Requests in which the injection scan found an attack family.",
            ),
            &["family", "action", "policy"],
        ));
        let tokens = must(IntCounterVec::new(
            Opts::new(
                "warden_tokens_total",
                "Tokens used, each counted once, by direction; estimated when not reported.",
            ),
            &["key", "team", "model", "provider", "direction", "estimated"],
        ));
        let cost = must(prometheus::CounterVec::new(
            Opts::new("warden_cost_usd_total", "Settled cost in USD, from the reported usage and the price table."),
            &["key", "team", "model"],
        ));
        let budget_remaining = must(prometheus::GaugeVec::new(
            Opts::new(
                "warden_budget_remaining_usd",
                "USD left in each budget's current window (policy/budget, scope).",
            ),
            &["budget", "scope"],
        ));
        let budget_alerts = must(IntCounterVec::new(
            Opts::new("warden_budget_alerts_total", "Budget alert thresholds crossed, once per window."),
            &["budget", "scope", "threshold"],
        ));
        let ratelimit_rejections = must(IntCounterVec::new(
            Opts::new("warden_ratelimit_rejections_total", "Requests refused by a rate limit."),
            &["policy", "limit"],
        ));
        let upstream_attempts = must(IntCounterVec::new(
            Opts::new("warden_upstream_attempts_total", "Upstream attempts, retries and fallbacks included."),
            &["provider", "outcome"],
        ));
        let retry_wait = must(prometheus::Histogram::with_opts(
            HistogramOpts::new("warden_retry_wait_seconds", "Time waited before a retry (backoff or retry-after).")
                .buckets(exponential_buckets(0.01, 2.0, 14).unwrap_or_default()),
        ));
        let fallbacks = must(IntCounterVec::new(
            Opts::new("warden_fallbacks_total", "Requests sent to a fallback, by the primary and the fallback."),
            &["from", "to"],
        ));
        let circuit_state = must(prometheus::IntGaugeVec::new(
            Opts::new("warden_circuit_state", "Each provider's circuit: 0 closed, 1 half-open, 2 open."),
            &["provider"],
        ));
        let session_blocks = must(IntCounterVec::new(
            Opts::new("warden_agent_session_blocks_total", "Requests stopped by an agent session cap."),
            &["limit"],
        ));
        let audit_dropped = must(prometheus::IntCounter::new(
            "warden_audit_dropped_total",
            "Audit records dropped because the writer's queue was full.",
        ));
        let audit_write_errors = must(prometheus::IntCounter::new(
            "warden_audit_write_errors_total",
            "Audit log opens, writes or rotations that failed (the records are lost; requests are not).",
        ));
        let cache_requests = must(IntCounterVec::new(
            Opts::new(
                "warden_cache_requests_total",
                "Requests a cache policy applied to, by result: hit, miss, bypass.",
            ),
            &["result"],
        ));
        let cache_bytes =
            must(IntGauge::new("warden_cache_bytes", "Bytes of responses in the cache (at most cache.max_bytes)."));
        let cache_entries = must(IntGauge::new("warden_cache_entries", "Responses in the cache."));
        let cache_saved_usd = must(prometheus::Counter::new(
            "warden_cache_saved_usd_total",
            "What cache hits would have cost at list price, had they gone upstream.",
        ));
        let cache_saved_tokens = must(IntCounterVec::new(
            Opts::new("warden_cache_saved_tokens_total", "Tokens answered from the cache instead of upstream."),
            &["direction"],
        ));
        for c in [
            Box::new(cache_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(cache_bytes.clone()),
            Box::new(cache_entries.clone()),
            Box::new(cache_saved_usd.clone()),
            Box::new(cache_saved_tokens.clone()),
            Box::new(upstream_attempts.clone()),
            Box::new(retry_wait.clone()),
            Box::new(fallbacks.clone()),
            Box::new(circuit_state.clone()),
            Box::new(session_blocks.clone()),
            Box::new(audit_dropped.clone()),
            Box::new(audit_write_errors.clone()),
            Box::new(cost.clone()),
            Box::new(budget_remaining.clone()),
            Box::new(budget_alerts.clone()),
            Box::new(ratelimit_rejections.clone()),
            Box::new(requests.clone()),
            Box::new(duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(ttfb.clone()),
            Box::new(in_flight.clone()),
            Box::new(overhead.clone()),
            Box::new(errors.clone()),
            Box::new(build_info.clone()),
            Box::new(policy_reloads.clone()),
            Box::new(policy_info.clone()),
            Box::new(policy_decisions.clone()),
            Box::new(schema_violations.clone()),
            Box::new(schema_retries.clone()),
            Box::new(injection_detections.clone()),
            Box::new(tokens.clone()),
        ] {
            must(registry.register(c));
        }
        Metrics {
            registry,
            requests,
            duration,
            upstream_duration,
            ttfb,
            in_flight,
            overhead,
            errors,
            build_info,
            policy_reloads,
            policy_info,
            policy_decisions,
            schema_violations,
            schema_retries,
            injection_detections,
            tokens,
            cost,
            budget_remaining,
            budget_alerts,
            ratelimit_rejections,
            upstream_attempts,
            retry_wait,
            fallbacks,
            circuit_state,
            session_blocks,
            audit_dropped,
            audit_write_errors,
            cache_hit: cache_requests.with_label_values(&["hit"]),
            cache_miss: cache_requests.with_label_values(&["miss"]),
            cache_bypass: cache_requests.with_label_values(&["bypass"]),
            cache_bytes,
            cache_entries,
            cache_saved_usd,
            cache_saved_input: cache_saved_tokens.with_label_values(&["input"]),
            cache_saved_output: cache_saved_tokens.with_label_values(&["output"]),
        }
    }

    /// Shows only the live policy version (old label sets are removed).
    pub fn set_policy_info(&self, version: u64, hash: &str) {
        self.policy_info.reset();
        self.policy_info.with_label_values(&[version.to_string().as_str(), hash]).set(1);
    }

    /// The registry in the Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
