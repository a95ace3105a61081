//! Checked JSON answers: a successful non-streamed response of a JSON endpoint is read whole,
//! within the stream timeouts, and refused (502 in the caller's format) unless it is valid
//! JSON, so a truncated or garbled answer never reaches the app as if it were one. The same
//! parse reads the usage it reports.

use std::future::Future as _;
use std::pin::Pin;
use std::task::Poll;

use http::Response;
use http_body::Body as _;
use tokio::time::Sleep;

use super::batch::Batch;
use super::respond::{has_event_stream_type, BodyTimeouts};
use crate::http::body::Body;
use crate::provider::output::Output;
use crate::provider::usage::Usage;

/// The largest non-streamed response warden reads whole to validate (embeddings of large
/// batches are the big ones).
pub const MAX_JSON_RESPONSE_BYTES: usize = 256 << 20;

/// Reads a successful non-streamed response of a JSON endpoint whole, within the stream
/// timeouts, and refuses it (502 in the caller's format) unless it is valid JSON: a
/// truncated or garbled answer must not reach the app as if it were one.
/// Also reads the usage the body reports (or estimates it from `request_bytes` and the text).
pub async fn checked_json(
    resp: Response<Body>,
    t: &BodyTimeouts,
    provider: &str,
    dialect: &'static dyn crate::provider::Dialect,
    request_bytes: usize,
    collect: Collect,
) -> Result<Checked, crate::error::ProxyError> {
    use crate::error::{ProxyError, UpstreamFailure};
    if !resp.status().is_success() || has_event_stream_type(resp.headers()) {
        return Ok(Checked { response: resp, usage: None, output: None, body: None });
    }
    let invalid = |detail: String| ProxyError::Upstream {
        provider: provider.to_string(),
        failure: UpstreamFailure::InvalidResponse,
        detail,
    };
    let (parts, body) = resp.into_parts();
    let buf = read_whole(body, t, provider).await?;
    // One parse both validates the body and finds its usage.
    let usage = match crate::provider::usage::read(&buf) {
        Err(e) => return Err(invalid(format!("the body is not valid JSON: {e}"))),
        Ok(Some(raw)) => {
            let mut u = Usage::default();
            raw.fold(dialect.family(), &mut u);
            u
        }
        Ok(None) => Usage::estimate(request_bytes, crate::provider::scan_json(&buf, dialect.text_keys()).text_bytes),
    };
    let output = match collect {
        Collect::Nothing => None,
        // Most answers call no tool: they are not parsed again for the audit log.
        Collect::ToolCalls if !mentions_tool_calls(&buf) => None,
        Collect::ToolCalls | Collect::Everything => Output::from_json(dialect.family(), &buf),
    };
    Ok(Checked {
        response: Response::from_parts(parts, crate::http::body::full(buf.clone())),
        usage: Some(usage),
        output,
        body: Some(buf),
    })
}

/// Reads a response body whole, within the stream timeouts and
/// [`MAX_JSON_RESPONSE_BYTES`] (502 or 504 past them).
pub async fn read_whole(
    mut body: Body,
    t: &BodyTimeouts,
    provider: &str,
) -> Result<bytes::Bytes, crate::error::ProxyError> {
    use crate::error::{ProxyError, UpstreamFailure};
    let mut buf = Batch::default();
    // One timer, armed only when the body is not already there (most arrive whole): the
    // sooner of the between-chunks gap and the total deadline.
    let deadline = tokio::time::Instant::from_std(t.deadline);
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    let read = std::future::poll_fn(|cx| loop {
        match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len + data.len() > MAX_JSON_RESPONSE_BYTES {
                        return Poll::Ready(Err(format!("the body is larger than {MAX_JSON_RESPONSE_BYTES} bytes")));
                    }
                    buf.push(data);
                }
                timer = None;
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(format!("the body broke off: {e}"))),
            Poll::Ready(None) => return Poll::Ready(Ok(false)),
            Poll::Pending => {
                let due = deadline.min(tokio::time::Instant::now() + t.between_chunks);
                let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                return if timer.as_mut().poll(cx).is_ready() { Poll::Ready(Ok(true)) } else { Poll::Pending };
            }
        }
    });
    match read.await {
        Ok(false) => Ok(buf.take().unwrap_or_default()),
        Ok(true) => Err(ProxyError::Upstream {
            provider: provider.to_string(),
            failure: UpstreamFailure::BodyTimeout,
            detail: String::new(),
        }),
        Err(detail) => Err(ProxyError::Upstream {
            provider: provider.to_string(),
            failure: UpstreamFailure::InvalidResponse,
            detail,
        }),
    }
}

/// A response after [`checked_json`].
pub struct Checked {
    pub response: Response<Body>,
    pub usage: Option<Usage>,
    pub output: Option<Output>,
    /// The validated body of a successful JSON answer (`None`: an error or a stream).
    pub body: Option<bytes::Bytes>,
}

/// What of the model's output a response must yield.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collect {
    Nothing,
    /// The tool calls, for the audit log.
    ToolCalls,
    /// Text and tool calls, for a stage that checks them.
    Everything,
}

/// Whether a JSON answer may hold tool calls (OpenAI `tool_calls` / `function_call`,
/// Anthropic `tool_use`, Responses `function_call` items): a byte search, not a parse. The
/// searchers are built once.
fn mentions_tool_calls(body: &[u8]) -> bool {
    use memchr::memmem::Finder;
    static NEEDLES: std::sync::LazyLock<[Finder<'static>; 2]> =
        std::sync::LazyLock::new(|| [Finder::new(b"\"tool_"), Finder::new(b"function_call")]);
    NEEDLES.iter().any(|f| f.find(body).is_some())
}
