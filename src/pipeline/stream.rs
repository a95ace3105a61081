//! The stream failure contract, applied to every SSE response: events are parsed as frames
//! arrive and forwarded only as whole blocks, each event's data is checked before it goes
//! out, and a stream that fails after its 200 (cut, stalled, garbage, or ended without the
//! API's final event) ends with the API's own error event instead, so the SDKs raise rather
//! than take a short answer as whole.

use bytes::{Bytes, BytesMut};

use crate::error::ErrorClass;
use crate::http::sse::{Event, SseError, SseParser};
use crate::provider::output::Output;
use crate::provider::usage::Usage;
use crate::provider::Dialect;

/// The largest single event warden forwards (a whole tool-call argument can be large).
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// What a frame became: the bytes that may go to the client now, and, if the stream broke
/// the contract, why.
pub struct Accepted {
    pub forward: Bytes,
    pub failure: Option<&'static str>,
}

/// Watches one SSE response.
pub struct SseWatch {
    parser: SseParser,
    dialect: &'static dyn Dialect,
    /// Bytes of a block not yet ended by a blank line: held back until it is.
    partial: BytesMut,
    /// The API's final event (or the upstream's own error event) went out.
    pub terminal: bool,
    /// Usage as reported so far (Anthropic reports it in two events).
    pub usage: Usage,
    pub usage_seen: bool,
    /// Bytes of generated text seen, for an estimate when no usage is reported.
    pub text_bytes: usize,
    /// Remove OpenAI's usage-only chunk: warden asked for it, the client did not.
    strip_usage: bool,
    /// The assistant's text and tool calls so far, when a stage asked for them.
    pub output: Option<Output>,
    /// Keep the final event back (in [`SseWatch::rest`]) for a stage that judges the whole
    /// output before the stream may end as a success.
    pub hold_terminal: bool,
}

impl SseWatch {
    /// `collect`: gather the assistant's output for a stage that checks it.
    pub fn new(dialect: &'static dyn Dialect, strip_usage: bool, collect: bool) -> SseWatch {
        SseWatch {
            parser: SseParser::new(MAX_EVENT_BYTES),
            dialect,
            partial: BytesMut::new(),
            terminal: false,
            usage: Usage::default(),
            usage_seen: false,
            text_bytes: 0,
            strip_usage,
            output: collect.then(Output::default),
            hold_terminal: false,
        }
    }

    /// Takes the next upstream frame.
    pub fn accept(&mut self, frame: Bytes) -> Accepted {
        if self.terminal {
            // After the final event nothing is parsed: whatever follows is passed on.
            return Accepted { forward: frame, failure: None };
        }
        let dialect = self.dialect;
        let family = dialect.family();
        // Held bytes lead the forwarded block; the removed range is counted from them.
        let held = self.partial.len();
        let mut failure = None;
        let mut last_good: Option<usize> = None;
        let mut terminal_at = None;
        let mut terminal_start = 0;
        let mut cut: Option<(usize, usize)> = None;
        let (usage, usage_seen, text_bytes, strip, output) =
            (&mut self.usage, &mut self.usage_seen, &mut self.text_bytes, self.strip_usage, &mut self.output);
        let parsed = self.parser.feed(&frame, |ev: Event<'_>, end| {
            if failure.is_some() || terminal_at.is_some() {
                return;
            }
            if !dialect.event_is_valid(&ev) {
                failure = Some("sent an event that is not the JSON its API sends");
                return;
            }
            let start = last_good.unwrap_or(0);
            last_good = Some(end);
            let scan = crate::provider::scan_json(ev.data, dialect.text_keys());
            *text_bytes += scan.text_bytes;
            if let Some(at) = scan.usage_at.filter(|_| dialect.event_has_usage(&ev)) {
                if let Some(raw) = crate::provider::usage::read_object(&ev.data[at..]) {
                    raw.fold(family, usage);
                    *usage_seen = true;
                }
                if strip && dialect.is_usage_only(&ev) {
                    cut = Some((start, end));
                }
            }
            if let Some(out) = output.as_mut() {
                out.read_event(family, &ev);
            }
            if dialect.is_terminal(&ev) {
                terminal_at = Some(end);
                terminal_start = start;
            }
        });
        let boundary = match parsed {
            Ok(b) => b,
            Err(SseError::TooLarge { .. }) => return self.broken("sent an event larger than warden accepts"),
            Err(SseError::NotUtf8) => return self.broken("sent an event name that is not UTF-8"),
        };
        let upto = match (failure, terminal_at) {
            (Some(_), _) => last_good,
            (None, Some(_)) => {
                self.terminal = true;
                // Held: everything from the final event's first byte (which may sit in
                // the bytes held from the last frame) waits in `partial`.
                match (self.hold_terminal, terminal_start) {
                    (false, _) => Some(frame.len()),
                    (true, 0) => None,
                    (true, n) => Some(n),
                }
            }
            (None, None) => boundary,
        };
        let forward = match upto {
            None => {
                if failure.is_none() {
                    self.partial.extend_from_slice(&frame);
                }
                Bytes::new()
            }
            Some(n) if self.partial.is_empty() => {
                if failure.is_none() {
                    self.partial.extend_from_slice(&frame[n..]);
                }
                frame.slice(..n)
            }
            Some(n) => {
                self.partial.extend_from_slice(&frame[..n]);
                let out = self.partial.split().freeze();
                if failure.is_none() {
                    self.partial.extend_from_slice(&frame[n..]);
                }
                out
            }
        };
        if failure.is_some() {
            self.partial.clear();
        }
        let forward = match cut {
            // An event that starts the frame began in the held bytes: those go with it.
            Some((0, end)) => remove_range(&forward, 0, held + end),
            Some((start, end)) => remove_range(&forward, held + start, held + end),
            None => forward,
        };
        Accepted { forward, failure }
    }

    /// What reaches the metric when the stream ends: the reported usage, or an estimate.
    pub fn usage(&self, request_bytes: usize) -> Usage {
        if self.usage_seen {
            self.usage
        } else {
            Usage::estimate(request_bytes, self.text_bytes)
        }
    }

    fn broken(&mut self, why: &'static str) -> Accepted {
        self.partial.clear();
        Accepted { forward: Bytes::new(), failure: Some(why) }
    }

    /// Bytes held after the final event, for the end of the stream.
    pub fn rest(&mut self) -> Bytes {
        self.partial.split().freeze()
    }

    /// The API's error event with this message.
    pub fn error_with(&self, class: ErrorClass, message: &str) -> Bytes {
        self.dialect.stream_error(class, message)
    }

    /// The API's error event that ends a failed stream.
    pub fn error_event(&self, class: ErrorClass, provider: &str, why: &str) -> Bytes {
        self.dialect.stream_error(class, &format!("upstream provider `{provider}` {why}; the response is incomplete"))
    }
}

/// `forward` without the bytes `from..to` (once per stream: a copy is fine).
fn remove_range(forward: &Bytes, from: usize, to: usize) -> Bytes {
    let (from, to) = (from.min(forward.len()), to.min(forward.len()));
    let mut out = BytesMut::with_capacity(forward.len());
    out.extend_from_slice(&forward[..from]);
    out.extend_from_slice(&forward[to..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ApiFamily;

    fn feed(w: &mut SseWatch, frames: &[&str]) -> (String, Option<&'static str>) {
        let mut out = String::new();
        for f in frames {
            let a = w.accept(Bytes::copy_from_slice(f.as_bytes()));
            out.push_str(std::str::from_utf8(&a.forward).unwrap());
            if a.failure.is_some() {
                return (out, a.failure);
            }
        }
        (out, None)
    }

    #[test]
    fn forwards_whole_events_only_and_stops_at_garbage() {
        let mut w = SseWatch::new(ApiFamily::OpenAi.dialect(), false, false);
        let (out, failure) = feed(&mut w, &["data: {\"a\":1}\n\ndata: {\"b\"", ":2}\n\n", "data: [DONE]\n\n"]);
        assert_eq!(out, "data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n");
        assert!(failure.is_none() && w.terminal);

        let mut w = SseWatch::new(ApiFamily::OpenAi.dialect(), false, false);
        let (out, failure) = feed(&mut w, &["data: {\"a\":1}\n\ndata: not json\n\ndata: {\"c\":3}\n\n"]);
        assert_eq!(out, "data: {\"a\":1}\n\n");
        assert_eq!(failure, Some("sent an event that is not the JSON its API sends"));
    }

    #[test]
    fn reads_usage_and_removes_the_usage_chunk_warden_asked_for() {
        let usage_chunk = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}\n\n";
        let mut w = SseWatch::new(ApiFamily::OpenAi.dialect(), true, false);
        let (out, _) = feed(
            &mut w,
            &["data: {\"choices\":[{\"delta\":{\"content\":\"hey\"}}]}\n\n", usage_chunk, "data: [DONE]\n\n"],
        );
        assert_eq!(out, "data: {\"choices\":[{\"delta\":{\"content\":\"hey\"}}]}\n\ndata: [DONE]\n\n");
        assert_eq!((w.usage.input, w.usage.output), (9, 3));
        // Split across frames, and with the client's own include_usage: kept.
        let mut w = SseWatch::new(ApiFamily::OpenAi.dialect(), true, false);
        let (out, _) = feed(
            &mut w,
            &["data: {\"a\":1}\n\ndata: {\"choices\":[],", "\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n"],
        );
        assert_eq!(out, "data: {\"a\":1}\n\ndata: [DONE]\n\n");
        let mut w = SseWatch::new(ApiFamily::OpenAi.dialect(), false, false);
        let (out, _) = feed(&mut w, &[usage_chunk]);
        assert_eq!(out, usage_chunk);
        let mut w = SseWatch::new(ApiFamily::OpenAi.dialect(), false, false);
        feed(&mut w, &["data: {\"choices\":[{\"delta\":{\"content\":\"12345678\"}}]}\n\n"]);
        assert_eq!(w.usage(40), Usage { input: 10, output: 2, estimated: true, ..Usage::default() });
    }

    #[test]
    fn a_held_final_event_waits_in_rest() {
        for frames in [
            &["data: {\"a\":1}\n\ndata: [DONE]\n\n"][..],
            &["data: {\"a\":1}\n\nda", "ta: [DONE]\n\n"][..],
            &["data: {\"a\":1}\n\n", "data: [DONE]\n\n"][..],
        ] {
            let mut w = SseWatch::new(ApiFamily::OpenAi.dialect(), false, false);
            w.hold_terminal = true;
            let (out, failure) = feed(&mut w, frames);
            assert_eq!((out.as_str(), failure), ("data: {\"a\":1}\n\n", None), "{frames:?}");
            assert!(w.terminal);
            assert_eq!(&w.rest()[..], b"data: [DONE]\n\n");
        }
    }

    #[test]
    fn anthropic_streams_end_at_message_stop_or_error() {
        let mut w = SseWatch::new(ApiFamily::Anthropic.dialect(), false, true);
        feed(&mut w, &["event: ping\ndata: {\"type\":\"ping\"}\n\n"]);
        assert!(!w.terminal);
        feed(&mut w, &["event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n"]);
        feed(&mut w, &["event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"]);
        assert!(w.terminal);
        // Asked to collect, the watch has the assistant's text.
        assert_eq!(w.output.as_ref().map(|o| o.text.as_str()), Some("hi"));
        let e = w.error_event(ErrorClass::Upstream, "ant", "closed the stream");
        assert!(e.starts_with(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\""));
    }
}
