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

/// Sends a body on its stream, then ends the stream. A slow peer holds back the sender instead
/// of filling memory: a data frame goes to the stream once it has window, and the body is read
/// at most one frame ahead of it. Two exceptions keep a message's frames in one write where they
/// arrived together (each extra write wakes the peer once more): the first data frame goes at
/// once, with the stream's HEADERS (a new stream gets window only after they are written, and
/// waiting for it put the frame in a write of its own), and trailers or the end of the body,
/// which take no window, follow the last data without waiting for it to be written.
pub struct SendBody {
    body: Body,
    stream: SendStream<Bytes>,
    /// A data frame read from the body, waiting for window.
    held: Option<Bytes>,
    sent_data: bool,
}

impl SendBody {
    pub fn new(body: Body, stream: SendStream<Bytes>) -> SendBody {
        SendBody {
            body,
            stream,
            held: None,
            sent_data: false,
        }
    }

    fn send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            let data = match self.held.take() {
                Some(data) => data,
                None => match ready!(self.next_data(cx))? {
                    Some(data) => data,
                    None => return Poll::Ready(Ok(())),
                },
            };
            // An empty frame (a peer's bare END_STREAM) takes no window.
            if self.sent_data && !data.is_empty() && self.stream.capacity() == 0 {
                self.stream.reserve_capacity(data.len());
                while self.stream.capacity() == 0 {
                    match self.stream.poll_capacity(cx) {
                        Poll::Pending => {
                            self.held = Some(data);
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.into())),
                        Poll::Ready(None) => return Poll::Ready(Err("the stream closed".into())),
                    }
                }
            }
            let end = self.body.is_end_stream();
            self.stream.send_data(data, end)?;
            self.sent_data = true;
            if end {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// The body's next data frame; its trailers or its end are sent here (`None` then).
    fn next_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BoxError>> {
        if let Poll::Ready(reset) = self.stream.poll_reset(cx) {
            // The peer reset the stream (it answered, or gave up): nothing more to send.
            return Poll::Ready(Err(match reset {
                Ok(reason) => h2::Error::from(reason).into(),
                Err(e) => e.into(),
            }));
        }
        loop {
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => return Poll::Ready(Ok(Some(data))),
                    Err(frame) => {
                        // Other frame kinds than trailers HTTP/2 does not carry: skipped.
                        if let Ok(trailers) = frame.into_trailers() {
                            // No more data: give back the window asked for.
                            self.stream.reserve_capacity(0);
                            self.stream.send_trailers(trailers)?;
                            return Poll::Ready(Ok(None));
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
                    return Poll::Ready(Ok(None));
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
