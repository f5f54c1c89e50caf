//! Serves a downstream HTTP/2 connection on the `h2` crate directly: each stream's request is
//! handled in a task of its own, which also sends the response (its body within the client's
//! window) and gives up on the request if the client resets the stream. The connection drains
//! with a GOAWAY when its listener is replaced or it has been idle for the idle timeout.

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http_body::Body as HttpBody;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};

use super::HttpConn;
use crate::boxed::boxed;
use crate::gather::Gathered;
use crate::h2_stream::{RecvBody, SendBody};
use crate::idle::{Activity, InFlight};
use crate::upstream::pool::BoxError;

/// hyper's server settings, which the proxy served HTTP/2 with before (its streams limit
/// raised, as Envoy's 2^31 is effectively none).
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
const SEND_BUFFER: usize = 400 * 1024;
const MAX_CONCURRENT_STREAMS: u32 = 1024;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// What the connection's loop was woken for.
enum Event {
    Stream(http::Request<RecvStream>, SendResponse<Bytes>),
    /// The chain serving it was replaced, or it was idle too long.
    Drain,
    Closed(Option<h2::Error>),
}

/// Serves `io` (which starts with the client's connection preface) until it closes.
pub async fn serve<I>(conn: Arc<HttpConn>, io: I, activity: Arc<Activity>)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(SEND_BUFFER)
        .max_header_list_size(super::MAX_HEADER_LIST)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .handshake::<_, Bytes>(Gathered::new(io))
        .await;
    let mut connection = match handshake {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(downstream = %conn.downstream, "HTTP/2 handshake failed: {e}");
            return;
        }
    };
    let drained = conn.drained(&activity);
    tokio::pin!(drained);
    let mut draining = false;
    loop {
        let event = poll_fn(|cx| {
            if !draining && drained.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Drain);
            }
            // Accepting also drives the connection: it reads and writes every stream's frames.
            connection.poll_accept(cx).map(|accepted| match accepted {
                Some(Ok((request, respond))) => Event::Stream(request, respond),
                Some(Err(e)) => Event::Closed(Some(e)),
                None => Event::Closed(None),
            })
        })
        .await;
        match event {
            Event::Stream(request, respond) => {
                let in_flight = activity.begin();
                let c = conn.clone();
                tokio::spawn(boxed(|| serve_stream(c, request, respond, in_flight)));
            }
            Event::Drain => {
                draining = true;
                connection.graceful_shutdown();
            }
            Event::Closed(error) => {
                if let Some(e) = error {
                    tracing::debug!(downstream = %conn.downstream, "HTTP/2 connection ended: {e}");
                }
                return;
            }
        }
    }
}

/// Handles one stream's request and sends its response.
async fn serve_stream(
    conn: Arc<HttpConn>,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    in_flight: InFlight,
) {
    let (mut parts, recv) = request.into_parts();
    if parts
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        // Envoy's default: the proxy says "go on" itself rather than pass the wait upstream.
        parts.headers.remove(http::header::EXPECT);
        let mut go_on = http::Response::new(());
        *go_on.status_mut() = http::StatusCode::CONTINUE;
        if let Err(e) = respond.send_informational(go_on) {
            tracing::debug!("HTTP/2 100 Continue not sent: {e}");
        }
    }
    let body = RecvBody::new(recv, &parts.headers)
        .map_err(BoxError::from)
        .boxed_unsync();
    let request = http::Request::from_parts(parts, body);
    let mut handled = boxed(|| super::handle(conn, request, in_flight));
    let response = poll_fn(|cx| {
        if let Poll::Ready(response) = handled.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        // The client reset the stream: dropping the request's work cancels its upstream side.
        respond.poll_reset(cx).map(|_| None)
    })
    .await;
    drop(handled);
    let Some(response) = response else {
        return;
    };
    let (mut parts, body) = response.into_parts();
    super::headers::strip_connection_specific(&mut parts.headers);
    if !parts.headers.contains_key(http::header::DATE) {
        parts.headers.insert(http::header::DATE, super::date::now());
    }
    if parts.status == http::StatusCode::NO_CONTENT {
        // A 204 has no content, so no length (RFC 9110 §8.6): an HTTP/1.1 host's stray
        // `content-length` would make the client take the bodiless stream as malformed.
        parts.headers.remove(http::header::CONTENT_LENGTH);
    }
    let end = body.is_end_stream();
    if !end
        && let Some(length) = body.size_hint().exact()
        && !parts.headers.contains_key(http::header::CONTENT_LENGTH)
    {
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, length.into());
    }
    match respond.send_response(http::Response::from_parts(parts, ()), end) {
        Ok(stream) if !end => SendBody::new(body, stream).await,
        Ok(_) => {}
        Err(e) => tracing::debug!("HTTP/2 response not sent: {e}"),
    }
}
