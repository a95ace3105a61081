//! The cost of checking one structured output: a 2 KB invoice (header fields and line
//! items) as the assistant text of a chat answer, parsed and validated against a compiled
//! schema with the domain rules and `min_confidence` on top, exactly as the pipeline's
//! [`warden::pipeline::schema::check`] does it. Prints one JSON line per case.
//!
//! ```text
//! cargo run --release --example schema_bench
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use warden::config::jsonschema::compile;
use warden::pipeline::schema::{check, OutputPlan};
use warden::policy::schema::{OnInvalid, OutputRules, StreamMode};
use warden::policy::Mode;
use warden::provider::output::Output;
use warden::provider::ApiFamily;

fn main() {
    let schema = compile(&json!({
        "type": "object",
        "required": ["vendor_name", "amount", "currency", "due_date", "confidence", "lines"],
        "additionalProperties": false,
        "properties": {
            "vendor_name": {"type": "string", "minLength": 1},
            "vendor_vat": {"type": "string", "pattern": "^[A-Z]{2}[0-9A-Z]{8,12}$"},
            "amount": {"type": "number"},
            "currency": {"type": "string"},
            "due_date": {"type": "string", "format": "date"},
            "confidence": {"type": "number"},
            "lines": {"type": "array", "items": {
                "type": "object",
                "required": ["description", "quantity", "unit_price"],
                "properties": {
                    "description": {"type": "string"},
                    "quantity": {"type": "integer", "minimum": 1},
                    "unit_price": {"type": "number", "minimum": 0}
                }
            }}
        }
    }))
    .unwrap();
    let rules = compile(&json!({"properties": {
        "amount": {"exclusiveMinimum": 0},
        "currency": {"pattern": "^[A-Z]{3}$"},
        "due_date": {"x-not-past": true},
        "confidence": {"minimum": 0, "maximum": 1}
    }}))
    .unwrap();
    let policy = Arc::new(OutputRules {
        policy: "bench".into(),
        json_schema: None,
        rules: Some(rules),
        min_confidence: Some(("/confidence".into(), 0.6)),
        on_invalid: OnInvalid::Reject,
        max_retries: 0,
        repair: false,
        stream: StreamMode::Buffer,
        mode: Mode::Enforce,
    });
    let plan = OutputPlan::for_text(policy, schema);
    let lines: Vec<_> = (0..24)
        .map(|i| json!({"description": format!("Consulting services, phase {i}"), "quantity": i + 1, "unit_price": 95.5}))
        .collect();
    let good = json!({"vendor_name": "ACME Consulting GmbH", "vendor_vat": "DE123456789", "amount": 16263.5,
        "currency": "EUR", "due_date": "2099-03-31", "confidence": 0.93, "lines": lines});
    let mut bad = good.clone();
    bad["currency"] = json!("eur");
    bad["confidence"] = json!(0.2);
    bad["lines"][3]["quantity"] = json!(0);
    for (name, value) in [("valid", good), ("invalid", bad)] {
        let text = value.to_string();
        let body = json!({"choices": [{"message": {"role": "assistant", "content": text}}]}).to_string();
        let out = Output::from_json(ApiFamily::OpenAi, body.as_bytes()).unwrap();
        let expect_valid = name == "valid";
        assert_eq!(check(&plan, &out).is_empty(), expect_valid);
        let iterations = 50_000;
        // Warm up, then time.
        for _ in 0..1000 {
            std::hint::black_box(check(&plan, &out));
        }
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(check(&plan, std::hint::black_box(&out)));
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
        println!("{{\"case\":\"{name}\",\"output_bytes\":{},\"us_per_check\":{per:.2}}}", text.len());
    }
}
