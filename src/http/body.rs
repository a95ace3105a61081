//! Body types shared by the server, the upstream client and the mock, and the size-limited
//! reader for request bodies.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};

use crate::error::ProxyError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body stream failure (upstream reset, stream timeout). A named type rather than a bare
/// `BoxError` because rustc cannot prove the boxed form `'static` inside hyper's
/// higher-ranked bounds when the connection future is spawned.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BodyError(pub BoxError);

impl BodyError {
    pub fn new(e: impl Into<BoxError>) -> BodyError {
        BodyError(e.into())
    }
}

/// The response body type of every handler: a boxed stream of frames, so that a buffered
/// error body and a streamed upstream body have one type.
pub type Body = UnsyncBoxBody<Bytes, BodyError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Reads a whole request body, refusing it as soon as it passes `limit` bytes (without
/// buffering the rest), and up front when `content-length` already says it is too large.
pub async fn read_limited<B>(body: B, content_length: Option<u64>, limit: usize) -> Result<Bytes, ProxyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if content_length.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ProxyError::BodyTooLarge { limit }),
        Err(e) => Err(ProxyError::ClientBody(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_body_over_limit_without_content_length() {
        let body = Full::new(Bytes::from(vec![b'a'; 11]));
        let err = read_limited(body, None, 10).await.err();
        assert!(matches!(err, Some(ProxyError::BodyTooLarge { limit: 10 })));
    }

    #[tokio::test]
    async fn refuses_declared_length_over_limit() {
        let body = Full::new(Bytes::from_static(b"{}"));
        let err = read_limited(body, Some(11), 10).await.err();
        assert!(matches!(err, Some(ProxyError::BodyTooLarge { .. })));
    }

    #[tokio::test]
    async fn accepts_body_at_limit() {
        let body = Full::new(Bytes::from(vec![b'a'; 10]));
        assert_eq!(read_limited(body, None, 10).await.ok().map(|b| b.len()), Some(10));
    }
}
