//! The audit log: one JSON line per request, written off the request path.
//!
//! Requests hand their record to a bounded queue ([`QUEUE`] records) and never wait: a full
//! queue drops the record and counts it (`warden_audit_dropped_total`). One thread writes
//! the lines through a buffer, flushing every [`POLL`] interval it wrote in, and rotates the file by
//! size (`audit.jsonl` → `audit.jsonl.1` → … → `.keep`, the oldest deleted). A file that
//! cannot be opened or written (a full disk, a read-only path) is reported in the log and
//! in `warden_audit_write_errors_total`, retried on later records, and never fails a request.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};

use prometheus::IntCounter;
use serde::{Deserialize, Serialize};

use crate::config::AuditSettings;

/// Records waiting to be written; more are dropped (and counted).
pub const QUEUE: usize = 8192;

/// One upstream attempt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Attempt {
    pub provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The upstream's status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed, when it did (`upstream_connect`, `status_503`, `circuit_open`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds waited before this attempt (backoff or `retry-after`).
    pub wait_ms: u64,
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub name: String,
    /// The arguments as sent, cut to [`crate::pipeline::audit::ARGS_CHARS`] characters.
    pub arguments: String,
}

/// One request, as the audit log records it. Never holds a key or credential.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    /// RFC 3339, UTC, microseconds.
    pub time: String,
    pub request_id: String,
    pub key: String,
    pub team: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub endpoint: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_requested: Option<String>,
    /// `provider/model` of the upstream that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    /// `allowed`, `blocked` or `error`.
    pub decision: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// The rule that blocked, or the error kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Monitor-mode rules that would have blocked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_block: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    pub tokens_estimated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<f64>,
    pub stream: bool,
    /// `hit`, `miss` or `bypass` where a cache policy applied; a free hit has no cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The prompt's text and the output's, cut to a policy's `audit.capture` characters;
    /// absent unless a policy asks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// The handle requests write through (cheap to clone).
#[derive(Clone)]
pub struct AuditLog {
    /// Boxed: the queue's slots are allocated up front, and 8,192 whole records took 3.5 MiB
    /// of idle memory.
    tx: SyncSender<Box<Record>>,
    dropped: IntCounter,
}

impl AuditLog {
    /// Starts the writer thread. Opening the file is the writer's job, so a path that cannot
    /// be written yet is reported there and retried, and never stops warden from starting.
    pub fn start(settings: &AuditSettings, dropped: IntCounter, errors: IntCounter) -> std::io::Result<AuditLog> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let settings = settings.clone();
        std::thread::Builder::new().name("warden-audit".into()).spawn(move || writer(&settings, &rx, &errors))?;
        Ok(AuditLog { tx, dropped })
    }

    /// Queues a record; never blocks.
    pub fn record(&self, r: Record) {
        match self.tx.try_send(Box::new(r)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

struct Sink {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    size: u64,
    /// The last open or write error, so that a lasting failure is logged once, not per line.
    failing: bool,
}

impl Sink {
    fn open(&mut self) -> std::io::Result<&mut BufWriter<File>> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new().create(true).append(true).open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(BufWriter::with_capacity(64 << 10, f));
        }
        self.file.as_mut().ok_or_else(|| std::io::Error::other("unreachable: the file was just opened"))
    }

    fn fail(&mut self, errors: &IntCounter, what: &str, e: &std::io::Error) {
        errors.inc();
        self.file = None;
        if !self.failing {
            self.failing = true;
            tracing::error!(target: "warden", path = %self.path.display(), error = %e, "audit log: cannot {what}; records are lost until it can");
        }
    }
}

/// How often the writer looks for records. It never sleeps on the queue itself: a request
/// that hands over its record then wakes no thread (no futex call per request), and the
/// records of a whole interval go out in one buffered write.
const POLL: std::time::Duration = std::time::Duration::from_millis(50);

fn writer(settings: &AuditSettings, rx: &Receiver<Box<Record>>, errors: &IntCounter) {
    let mut sink = Sink { path: settings.path.clone(), file: None, size: 0, failing: false };
    let mut line = Vec::with_capacity(1024);
    loop {
        let mut wrote = false;
        let gone = loop {
            let r = match rx.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Empty) => break false,
                Err(mpsc::TryRecvError::Disconnected) => break true,
            };
            line.clear();
            if serde_json::to_writer(&mut line, &r).is_err() {
                continue;
            }
            line.push(b'\n');
            if sink.size > 0 && sink.size + line.len() as u64 > settings.max_bytes {
                if let Some(mut f) = sink.file.take() {
                    let _ = f.flush();
                }
                if let Err(e) = rotate(&settings.path, settings.keep) {
                    sink.fail(errors, "rotate", &e);
                }
                sink.size = 0;
            }
            match sink.open().and_then(|f| f.write_all(&line)) {
                Ok(()) => {
                    sink.size += line.len() as u64;
                    sink.failing = false;
                    wrote = true;
                }
                Err(e) => sink.fail(errors, "write", &e),
            }
        };
        if wrote {
            if let Some(f) = sink.file.as_mut() {
                if let Err(e) = f.flush() {
                    sink.fail(errors, "write", &e);
                }
            }
        }
        if gone {
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// `audit.jsonl.N`.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// `audit.jsonl.{keep-1}` → `.{keep}` … `audit.jsonl` → `.1`; `keep: 0` keeps none.
fn rotate(path: &Path, keep: u32) -> std::io::Result<()> {
    let numbered = |n: u32| rotated(path, n);
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let from = numbered(n);
        if from.exists() {
            std::fs::rename(&from, numbered(n + 1))?;
        }
    }
    std::fs::rename(path, numbered(1))
}

/// The files of an audit log, oldest first (rotated ones, then the live one). Rotation
/// numbers them from 1 without gaps.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let numbered = |n: u32| rotated(path, n);
    let mut out: Vec<PathBuf> = (1..).map(numbered).take_while(|p| p.exists()).collect();
    out.reverse();
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

/// A record as a person reads it: one headline and, indented, its attempts, tokens and
/// tool calls.
pub fn render(r: &Record) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let _ = write!(
        out,
        "{}  {}  key={} team={}{}  {}  {} → {}  {} {}{}  {:.0} ms",
        r.time,
        r.request_id,
        r.key,
        r.team,
        r.session.as_ref().map(|s| format!(" session={s}")).unwrap_or_default(),
        r.endpoint,
        opt(&r.model_requested),
        opt(&r.answered_by),
        r.status,
        r.decision,
        r.reason.as_ref().map(|e| format!(" ({e})")).unwrap_or_default(),
        r.latency_ms,
    );
    if !r.policies.is_empty() || !r.would_block.is_empty() {
        let _ =
            write!(out, "\n    policies: {}", if r.policies.is_empty() { "-".into() } else { r.policies.join(", ") });
        if !r.would_block.is_empty() {
            let _ = write!(out, "; would block: {}", r.would_block.join(", "));
        }
    }
    if r.attempts.len() > 1 || r.attempts.iter().any(|a| a.error.is_some()) {
        let steps: Vec<String> = r
            .attempts
            .iter()
            .map(|a| {
                let wait = if a.wait_ms > 0 { format!("waited {} ms, ", a.wait_ms) } else { String::new() };
                let what = match (&a.status, &a.error) {
                    (Some(s), _) => s.to_string(),
                    (None, Some(e)) => e.clone(),
                    (None, None) => "-".into(),
                };
                format!("{wait}{}/{} {what}", a.provider, a.model.as_deref().unwrap_or("-"))
            })
            .collect();
        let _ = write!(out, "\n    attempts: {}", steps.join(" → "));
    }
    if r.input_tokens.is_some() || r.output_tokens.is_some() {
        let _ = write!(
            out,
            "\n    tokens: {} in, {} out{}{}",
            r.input_tokens.unwrap_or(0),
            r.output_tokens.unwrap_or(0),
            if r.tokens_estimated { " (estimated)" } else { "" },
            r.cost_usd.map(|c| format!(", ${c:.6}")).unwrap_or_default()
        );
    }
    for t in &r.tool_calls {
        let _ = write!(out, "\n    tool call: {}({})", t.name, t.arguments);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(name: &str) -> IntCounter {
        IntCounter::new(name, "test").unwrap()
    }

    #[test]
    fn renders_a_retried_request_for_a_person() {
        let r = Record {
            time: "2026-12-01T10:00:00.000000Z".into(),
            request_id: "r1".into(),
            key: "demo".into(),
            team: "demo".into(),
            session: Some("s1".into()),
            endpoint: "chat_completions".into(),
            status: 200,
            model_requested: Some("mock-1".into()),
            answered_by: Some("mock/mock-1".into()),
            decision: "allowed".into(),
            attempts: vec![
                Attempt {
                    provider: "mock".into(),
                    model: Some("mock-1".into()),
                    status: Some(429),
                    error: Some("status_429".into()),
                    wait_ms: 0,
                },
                Attempt {
                    provider: "mock".into(),
                    model: Some("mock-1".into()),
                    status: Some(200),
                    error: None,
                    wait_ms: 1000,
                },
            ],
            input_tokens: Some(12),
            output_tokens: Some(5),
            tool_calls: vec![ToolCall { name: "get_weather".into(), arguments: "{}".into() }],
            latency_ms: 1003.2,
            ..Record::default()
        };
        assert_eq!(
            render(&r),
            "2026-12-01T10:00:00.000000Z  r1  key=demo team=demo session=s1  chat_completions  mock-1 → mock/mock-1  200 allowed  1003 ms\n    attempts: mock/mock-1 429 → waited 1000 ms, mock/mock-1 200\n    tokens: 12 in, 5 out\n    tool call: get_weather({})"
        );
    }

    #[test]
    fn writes_lines_rotates_by_size_and_keeps_a_count() {
        let dir = std::env::temp_dir().join(format!("warden-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/audit.jsonl");
        let settings = AuditSettings { path: path.clone(), max_bytes: 4096, keep: 2 };
        let log = AuditLog::start(&settings, counter("d"), counter("e")).unwrap();
        for i in 0..200 {
            log.record(Record { request_id: format!("r{i}"), key: "k".into(), ..Record::default() });
        }
        let last_line = || {
            let live = std::fs::read_to_string(&path).unwrap_or_default();
            live.lines().last().map(|l| serde_json::from_str::<Record>(l).unwrap().request_id)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while last_line().as_deref() != Some("r199") && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(last_line().as_deref(), Some("r199"));
        let all = files(&path);
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all.iter().all(|f| std::fs::metadata(f).unwrap().len() <= 4096));
        // The oldest rotated file was deleted: fewer lines kept than written.
        let kept: usize = all.iter().map(|f| std::fs::read_to_string(f).unwrap().lines().count()).sum();
        assert!(kept < 200, "{kept}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
