//! How an upstream call failed before its response head: the typed failure that decides
//! whether a retry is safe and which status and error kind the client sees.

/// How an upstream call failed before its response head, and so whether the provider may
/// have received (and billed) the request: what a retry must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The TCP connection could not be made.
    Connect,
    /// The TCP connection was not made within the connect timeout.
    ConnectTimeout,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// A pooled connection closed before the request was written.
    ClosedBeforeSend,
    /// The connection broke after the request was (perhaps partly) sent.
    ResetBeforeHead,
    /// No response head within the first-byte timeout.
    FirstByteTimeout,
    /// The upstream answered with something that is not an HTTP response, or a 200 whose
    /// body is not what its API sends (a truncated or garbled JSON answer).
    InvalidResponse,
    /// The response head came, but its body did not finish within the stream timeouts.
    BodyTimeout,
}

impl UpstreamFailure {
    /// Whether the provider may have received the request (and may charge for it).
    pub fn may_have_reached(self) -> bool {
        match self {
            UpstreamFailure::Connect
            | UpstreamFailure::ConnectTimeout
            | UpstreamFailure::Tls
            | UpstreamFailure::ClosedBeforeSend => false,
            UpstreamFailure::ResetBeforeHead
            | UpstreamFailure::FirstByteTimeout
            | UpstreamFailure::InvalidResponse
            | UpstreamFailure::BodyTimeout => true,
        }
    }

    /// Whether sending the request again cannot run it twice: decided here, once, for the
    /// retry logic to read.
    pub fn retryable(self) -> bool {
        !self.may_have_reached()
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            UpstreamFailure::Connect | UpstreamFailure::ClosedBeforeSend => "could not be reached",
            UpstreamFailure::ConnectTimeout => "could not be reached (connect timed out)",
            UpstreamFailure::Tls => "could not be reached (the TLS handshake failed)",
            UpstreamFailure::ResetBeforeHead => "closed the connection before responding",
            UpstreamFailure::FirstByteTimeout => "timed out (waiting for response headers)",
            UpstreamFailure::InvalidResponse => "sent an invalid response",
            UpstreamFailure::BodyTimeout => "timed out (sending the response body)",
        }
    }

    pub(super) fn kind(self) -> &'static str {
        match self {
            UpstreamFailure::Connect | UpstreamFailure::ClosedBeforeSend => "upstream_connect",
            UpstreamFailure::ConnectTimeout => "upstream_connect_timeout",
            UpstreamFailure::Tls => "upstream_tls",
            UpstreamFailure::ResetBeforeHead => "upstream_reset",
            UpstreamFailure::FirstByteTimeout => "upstream_timeout",
            UpstreamFailure::InvalidResponse => "upstream_invalid",
            UpstreamFailure::BodyTimeout => "upstream_body_timeout",
        }
    }

    pub(super) fn is_timeout(self) -> bool {
        matches!(
            self,
            UpstreamFailure::ConnectTimeout | UpstreamFailure::FirstByteTimeout | UpstreamFailure::BodyTimeout
        )
    }

    /// Classifies a failed exchange from its error chain.
    pub fn from_error(e: &(dyn std::error::Error + 'static)) -> UpstreamFailure {
        let mut failure = UpstreamFailure::ResetBeforeHead;
        let mut stack: Vec<&(dyn std::error::Error + 'static)> = vec![e];
        while let Some(err) = stack.pop() {
            if err.is::<rustls::Error>() {
                return UpstreamFailure::Tls;
            }
            if err.downcast_ref::<hyper::Error>().is_some_and(|h| h.is_parse() || h.is_parse_status()) {
                return UpstreamFailure::InvalidResponse;
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::TimedOut {
                    failure = UpstreamFailure::ConnectTimeout;
                }
                // An io::Error's `source` skips the error it wraps (often another io::Error
                // around a rustls::Error): look inside too.
                if let Some(inner) = io.get_ref() {
                    stack.push(inner);
                }
            }
            stack.extend(err.source());
        }
        failure
    }
}
