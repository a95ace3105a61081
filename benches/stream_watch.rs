//! What the stream failure contract costs per stream: a realistic OpenAI chat stream (role,
//! 20 content events, finish, `[DONE]`) and an Anthropic messages stream, one event per
//! frame as upstreams send them, run through `SseWatch` many times.
//!
//! `cargo run --release --example stream_watch`

#![allow(clippy::print_stdout, clippy::unwrap_used, reason = "a benchmark that prints its result")]

use std::time::Instant;

use bytes::Bytes;
use warden::pipeline::stream::SseWatch;
use warden::provider::ApiFamily;

fn openai_stream() -> Vec<Bytes> {
    let chunk = |delta: &str, finish: &str| {
        Bytes::from(format!(
            "data: {{\"id\":\"chatcmpl-mock1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"mock-1\",\"system_fingerprint\":\"fp_mock\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
        ))
    };
    let mut ev = vec![chunk(r#"{"role":"assistant","content":"","refusal":null}"#, "null")];
    for i in 0..20 {
        ev.push(chunk(&format!(r#"{{"content":"word{i} and "}}"#), "null"));
    }
    ev.push(chunk("{}", r#""stop""#));
    ev.push(Bytes::from_static(b"data: [DONE]\n\n"));
    ev
}

fn anthropic_stream() -> Vec<Bytes> {
    let mut ev = vec![Bytes::from_static(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"mock-1\",\"stop_reason\":null,\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n")];
    for i in 0..20 {
        ev.push(Bytes::from(format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"word{i} and \"}}}}\n\n")));
    }
    ev.push(Bytes::from_static(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":20}}\n\n"));
    ev.push(Bytes::from_static(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    ev
}

fn main() {
    // RUNS=2000 under valgrind counts instructions per stream.
    let runs: u32 = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(200_000);
    for (name, family, frames) in [
        ("openai chat", ApiFamily::OpenAi, openai_stream()),
        ("anthropic messages", ApiFamily::Anthropic, anthropic_stream()),
    ] {
        let mut forwarded = 0usize;
        let start = Instant::now();
        for _ in 0..runs {
            let mut w = SseWatch::new(family.dialect(), false, false);
            for f in &frames {
                let a = w.accept(f.clone());
                forwarded += a.forward.len();
                assert!(a.failure.is_none());
            }
            assert!(w.terminal);
        }
        let per = start.elapsed() / runs;
        println!("{name}: {} events, {per:?} per stream ({} bytes forwarded)", frames.len(), forwarded / runs as usize);
    }
}
