//! Message bodies over the `h2` crate, for the upstream client and the downstream server alike:
//! sending one on a stream within the peer's window, and receiving one while giving the window
//! back as it is read.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::upstream::pool::{Body, BoxError};

/// Sends a body on its stream, then ends the stream: a frame is taken from the body only once
/// the stream has window for it, so a slow peer holds back the sender instead of filling memory.
pub struct SendBody {
    body: Body,
    stream: SendStream<Bytes>,
}

impl SendBody {
    pub fn new(body: Body, stream: SendStream<Bytes>) -> SendBody {
        SendBody { body, stream }
    }

    fn send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            self.stream.reserve_capacity(1);
            if self.stream.capacity() == 0 {
                loop {
                    match ready!(self.stream.poll_capacity(cx)) {
                        Some(Ok(0)) => {}
                        Some(Ok(_)) => break,
                        Some(Err(e)) => return Poll::Ready(Err(e.into())),
                        None => return Poll::Ready(Err("the stream closed".into())),
                    }
                }
            } else if let Poll::Ready(reset) = self.stream.poll_reset(cx) {
                // The peer reset the stream (it answered, or gave up): nothing more to send.
                return Poll::Ready(Err(match reset {
                    Ok(reason) => h2::Error::from(reason).into(),
                    Err(e) => e.into(),
                }));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let end = self.body.is_end_stream();
                        self.stream.send_data(data, end)?;
                        if end {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            // No more data: give back the window asked for.
                            self.stream.reserve_capacity(0);
                            self.stream.send_trailers(trailers)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                Some(Err(e)) => {
                    // The other side failed mid-body: the peer must not take it as whole.
                    self.stream.send_reset(h2::Reason::INTERNAL_ERROR);
                    return Poll::Ready(Err(e));
                }
                None => {
                    self.stream.send_data(Bytes::new(), true)?;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl Future for SendBody {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Err(e) = ready!(self.send(cx)) {
            tracing::debug!("HTTP/2 body not sent whole: {e}");
        }
        Poll::Ready(())
    }
}

/// A body received on a stream: its data (the window it used given back as it is read, so the
/// peer may send more), then its trailers.
pub struct RecvBody {
    recv: RecvStream,
    data_done: bool,
    /// What is left of the `content-length` the peer declared.
    length: Option<u64>,
}

impl RecvBody {
    /// The body of a message with `headers`.
    pub fn new(recv: RecvStream, headers: &http::HeaderMap) -> RecvBody {
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        RecvBody {
            recv,
            data_done: false,
            length,
        }
    }
}

impl HttpBody for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut this.length {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}
