//! Bodies the proxy passes along: a request body that remembers what it sent (up to a limit) so
//! a retry or a mirror can send it again, and a body that reports its size and end when it
//! finishes or is dropped (for metrics and the access log).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::upstream::pool::{Body, BoxError};

/// Request bodies up to this size can be replayed for retries and mirrors (Envoy's default
/// per-request buffer limit is of the same order).
pub const REPLAY_LIMIT: usize = 64 * 1024;

#[derive(Default)]
struct Recorded {
    data: BytesMut,
    trailers: Option<HeaderMap>,
    complete: bool,
    overflow: bool,
}

/// The shared record of a request body as it is sent the first time.
#[derive(Clone, Default)]
pub struct Replay {
    recorded: Arc<Mutex<Recorded>>,
}

impl Replay {
    /// Wraps the original body; what it yields is recorded.
    pub fn record(&self, inner: Body) -> Body {
        if inner.is_end_stream() {
            // Nothing will be read (GET, HEAD, ...): there is nothing to keep.
            self.recorded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .complete = true;
        }
        Recording {
            inner,
            recorded: self.recorded.clone(),
        }
        .boxed_unsync()
    }

    /// The body again, if it was read to its end and fit the limit.
    pub fn again(&self) -> Option<Body> {
        let r = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if !r.complete || r.overflow {
            return None;
        }
        let data = r.data.clone().freeze();
        let trailers = r.trailers.clone();
        Some(
            Replayed {
                data: Some(data).filter(|d| !d.is_empty()),
                trailers,
            }
            .boxed_unsync(),
        )
    }
}

struct Recording {
    inner: Body,
    recorded: Arc<Mutex<Recorded>>,
}

impl HttpBody for Recording {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let mut r = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    if r.data.len() + d.len() > REPLAY_LIMIT {
                        r.overflow = true;
                        r.data = BytesMut::new();
                    } else if !r.overflow {
                        r.data.extend_from_slice(d);
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    r.trailers = Some(t.clone());
                }
                if self.inner.is_end_stream() {
                    r.complete = true;
                }
            }
            Poll::Ready(None) => r.complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct Replayed {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl HttpBody for Replayed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// What a finished body reports.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    pub bytes: u64,
    /// `grpc-status` from the trailers, if any.
    pub grpc_status: Option<String>,
    /// Ended cleanly (not dropped early, no error).
    pub complete: bool,
}

/// Counts a body's bytes and calls `on_finish` once, at its end or when dropped.
pub struct Observed<F: FnOnce(Finished) + Send + 'static> {
    inner: Body,
    seen: Finished,
    on_finish: Option<F>,
}

impl<F: FnOnce(Finished) + Send + 'static> Observed<F> {
    pub fn new(inner: Body, on_finish: F) -> Self {
        // An empty body (a 204, an answer to HEAD, `content-length: 0`) is whole from the
        // start: the server sends it without reading it, and dropping it unread is no
        // disconnect.
        let seen = Finished {
            complete: inner.is_end_stream(),
            ..Finished::default()
        };
        Observed {
            inner,
            seen,
            on_finish: Some(on_finish),
        }
    }

    fn finish(&mut self) {
        if let Some(f) = self.on_finish.take() {
            f(std::mem::take(&mut self.seen));
        }
    }
}

impl<F: FnOnce(Finished) + Send + 'static> Drop for Observed<F> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<F: FnOnce(Finished) + Send + Unpin + 'static> HttpBody for Observed<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.seen.bytes += d.len() as u64;
                } else if let Some(t) = frame.trailers_ref() {
                    this.seen.grpc_status = t
                        .get(super::headers::GRPC_STATUS)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                }
                if this.inner.is_end_stream() {
                    this.seen.complete = true;
                    this.finish();
                }
            }
            Poll::Ready(None) => {
                this.seen.complete = true;
                this.finish();
            }
            Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body with fixed content.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_read_to_its_end_replays() {
        let replay = Replay::default();
        let first = replay.record(full("hello"));
        assert!(replay.again().is_none(), "not read yet");
        let bytes = first.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "hello");
        let again = replay.again().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(again, "hello");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_does_not() {
        let replay = Replay::default();
        let big = vec![7u8; REPLAY_LIMIT + 1];
        let n = replay
            .record(full(big))
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .len();
        assert_eq!(n, REPLAY_LIMIT + 1);
        assert!(replay.again().is_none());
    }

    #[tokio::test]
    async fn observed_bodies_report_once_even_when_dropped() {
        let (tx, rx) = std::sync::mpsc::channel();
        let b = Observed::new(full("abc"), move |f| tx.send(f).unwrap());
        let _ = b.collect().await.unwrap();
        let f = rx.recv().unwrap();
        assert_eq!((f.bytes, f.complete), (3, true));
        assert!(rx.try_recv().is_err());
        let (tx, rx) = std::sync::mpsc::channel();
        drop(Observed::new(full("abc"), move |f| tx.send(f).unwrap()));
        assert!(!rx.recv().unwrap().complete);
        // An empty body dropped unread is whole (no `DC` for a 204).
        let (tx, rx) = std::sync::mpsc::channel();
        let empty = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        drop(Observed::new(empty, move |f| tx.send(f).unwrap()));
        assert!(rx.recv().unwrap().complete);
    }
}
