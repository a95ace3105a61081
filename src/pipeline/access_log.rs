//! The access log line, written directly: the same text and JSON shapes the `tracing`
//! formatter gives every other log line (`<time>  INFO warden::access: k=v ...`, or one JSON
//! object with the fields flattened), without its per-field visitor machinery, which cost
//! more instructions than any stage of the pipeline. `WARDEN_LOG` still decides whether the
//! line is written: the `tracing` filter is asked first.
//!
//! Lines are written off the request path: a request queues its line, and one thread writes
//! every [`POLL`] whatever was queued, in one `write` (a request's own `write` was the
//! largest syscall cost after the sockets'). The writer never sleeps on the queue, so
//! queuing wakes no thread. Past [`PENDING_MAX`] queued lines (stdout stalled), a request
//! writes its own line, as before: a line is never dropped. [`flush`] at shutdown.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::LogFormat;

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// How often the writer takes the queued lines.
const POLL: Duration = Duration::from_millis(20);
/// Queued lines past which a request writes its own.
const PENDING_MAX: usize = 16_384;

struct Queue {
    tx: mpsc::Sender<String>,
    /// Taken by the writer thread and by [`flush`] only.
    rx: Mutex<mpsc::Receiver<String>>,
    pending: AtomicUsize,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

/// Chooses the shape of access lines and starts the writer; called once, where logging is
/// set up. Without it (a library user, the tests) each line is written at once.
pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let (tx, rx) = mpsc::channel();
    if QUEUE.set(Queue { tx, rx: Mutex::new(rx), pending: AtomicUsize::new(0) }).is_ok() {
        let started = std::thread::Builder::new().name("warden-access-log".into()).spawn(|| loop {
            std::thread::sleep(POLL);
            flush();
        });
        if started.is_err() {
            // No writer: lines are written by their requests.
            if let Some(q) = QUEUE.get() {
                q.pending.store(usize::MAX, Ordering::Relaxed);
            }
        }
    }
}

/// Writes every queued line now.
pub fn flush() {
    let Some(q) = QUEUE.get() else { return };
    let Ok(rx) = q.rx.lock() else { return };
    let mut batch = Vec::new();
    for line in rx.try_iter() {
        q.pending.fetch_sub(1, Ordering::Relaxed);
        batch.extend_from_slice(line.as_bytes());
        if batch.len() >= 64 << 10 {
            let _ = std::io::stdout().lock().write_all(&batch);
            batch.clear();
        }
    }
    if !batch.is_empty() {
        let _ = std::io::stdout().lock().write_all(&batch);
    }
}

/// One field's value.
pub enum V<'a> {
    /// A value from a fixed set or from the config: written as is.
    S(&'a str),
    /// A value a client chose (a model name): quoted and escaped in text lines, so it cannot
    /// forge fields or lines.
    Q(&'a str),
    U(u64),
    F(f64),
    B(bool),
}

/// Writes one access line, if the log filter lets `warden::access` at INFO through.
pub fn emit(fields: &[(&'static str, V<'_>)]) {
    if !tracing::enabled!(target: "warden::access", tracing::Level::INFO) {
        return;
    }
    let json = FORMAT.get() == Some(&LogFormat::Json);
    let mut line = String::with_capacity(640);
    if json {
        render_json(&mut line, fields);
    } else {
        render_text(&mut line, fields);
    }
    if let Some(q) = QUEUE.get().filter(|q| q.pending.load(Ordering::Relaxed) < PENDING_MAX) {
        q.pending.fetch_add(1, Ordering::Relaxed);
        match q.tx.send(line) {
            Ok(()) => return,
            Err(mpsc::SendError(l)) => {
                q.pending.fetch_sub(1, Ordering::Relaxed);
                line = l;
            }
        }
    }
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

fn render_text(line: &mut String, fields: &[(&'static str, V<'_>)]) {
    timestamp(line);
    line.push_str("  INFO warden::access:");
    for (name, value) in fields {
        line.push(' ');
        line.push_str(name);
        line.push('=');
        let _ = match value {
            V::S(s) => {
                line.push_str(s);
                Ok(())
            }
            V::Q(s) => write!(line, "{s:?}"),
            V::U(n) => write!(line, "{n}"),
            // As `tracing` records floats: Debug, so 5.0 stays `5.0`.
            V::F(f) => write!(line, "{f:?}"),
            V::B(b) => write!(line, "{b}"),
        };
    }
    line.push('\n');
}

fn render_json(line: &mut String, fields: &[(&'static str, V<'_>)]) {
    line.push_str("{\"timestamp\":\"");
    timestamp(line);
    line.push_str("\",\"level\":\"INFO\"");
    for (name, value) in fields {
        line.push_str(",\"");
        line.push_str(name);
        line.push_str("\":");
        match value {
            V::S(s) | V::Q(s) => json_string(line, s),
            V::U(n) => {
                let _ = write!(line, "{n}");
            }
            V::F(f) => match serde_json::to_string(f) {
                Ok(s) => line.push_str(&s),
                Err(_) => line.push_str("null"),
            },
            V::B(b) => line.push_str(if *b { "true" } else { "false" }),
        }
    }
    line.push_str(",\"target\":\"warden::access\"}\n");
}

fn json_string(line: &mut String, s: &str) {
    line.push('"');
    for c in s.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(line, "\\u{:04x}", c as u32);
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

/// RFC 3339 UTC with microseconds, as `tracing` writes it: `2026-12-01T16:26:54.644219Z`.
/// The date and time up to the second are formatted once a second per thread.
pub fn timestamp(line: &mut String) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let (y, m, d) = crate::clock::civil_from_days((secs / 86_400) as i64);
            let rem = secs % 86_400;
            cached.1.clear();
            let _ = write!(cached.1, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.", rem / 3600, rem / 60 % 60, rem % 60);
            cached.0 = secs;
        }
        line.push_str(&cached.1);
    });
    let micros = now.subsec_micros();
    let mut digits = itoa::Buffer::new();
    let text = digits.format(micros);
    for _ in text.len()..6 {
        line.push('0');
    }
    line.push_str(text);
    line.push('Z');
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let (mut a, mut b) = (String::new(), String::new());
        super::timestamp(&mut a);
        super::timestamp(&mut b);
        for t in [&a, &b] {
            assert_eq!(t.len(), 27, "{t}");
            assert!(t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T" && &t[19..20] == ".", "{t}");
            assert!(t[20..26].bytes().all(|c| c.is_ascii_digit()), "{t}");
        }
        assert!(a <= b);
    }

    use super::*;

    #[test]
    fn text_and_json_lines_match_the_tracing_shapes() {
        let fields = [
            ("status", V::S("200")),
            ("model", V::Q("gpt \"x\"\nfake=1")),
            ("input_tokens", V::U(80)),
            ("duration_ms", V::F(5.0)),
            ("stream", V::B(true)),
        ];
        let mut text = String::new();
        render_text(&mut text, &fields);
        let (_, rest) = text.split_once("  INFO warden::access: ").unwrap();
        assert_eq!(rest, "status=200 model=\"gpt \\\"x\\\"\\nfake=1\" input_tokens=80 duration_ms=5.0 stream=true\n");
        let mut json = String::new();
        render_json(&mut json, &fields);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["status"], "200");
        assert_eq!(v["model"], "gpt \"x\"\nfake=1");
        assert_eq!(v["input_tokens"], 80);
        assert_eq!(v["duration_ms"], 5.0);
        assert_eq!(v["stream"], true);
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "warden::access");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
