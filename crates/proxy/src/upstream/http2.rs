//! HTTP/2 to upstream hosts on the `h2` crate directly. A request is sent from its own task:
//! its body goes up while that task waits for the response, and only a body still streaming
//! when the response arrives (bidirectional gRPC) continues in a task of its own. Sending
//! through hyper's client instead handed every request to the connection's task over a
//! channel and spawned a task per request to wait for its response (and another for its
//! body), three task switches per request on the proxy's hottest path.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use http_body::Body as HttpBody;
use tokio::io::{AsyncRead, AsyncWrite};

use super::pool::Body;
use crate::gather::Gathered;
use crate::h2_stream::{RecvBody, SendBody};

/// hyper's client defaults, which the proxy used before: stream and connection windows large
/// enough that a fast host is not held back on a loopback or LAN round trip.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// The most one stream's queued body data may hold beyond the peer's window.
const SEND_BUFFER: usize = 400 * 1024;
/// The largest response header list accepted: Envoy's 60 KiB, as downstream.
const MAX_HEADER_LIST: u32 = crate::http::MAX_HEADER_LIST;

/// Opens HTTP/2 on `io` (its writes gathered per turn): the request sender, and the connection
/// to drive until it closes.
pub async fn handshake<T>(
    io: T,
) -> Result<(SendRequest<Bytes>, Connection<Gathered<T>, Bytes>), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(SEND_BUFFER)
        .max_header_list_size(MAX_HEADER_LIST)
        .handshake(Gathered::new(io))
        .await
}

/// Sends `request` (an absolute URI, no `Host`) and waits for the response head. The request's
/// body is sent meanwhile; what of it is left once the response arrives goes on in a task.
pub async fn send(
    mut sender: SendRequest<Bytes>,
    request: http::Request<Body>,
) -> Result<http::Response<RecvBody>, h2::Error> {
    let (mut parts, body) = request.into_parts();
    // Connection-specific headers are malformed in HTTP/2 (an upgrade passed through from
    // HTTP/1.1 keeps them up to here).
    if parts.headers.contains_key(http::header::CONNECTION) {
        parts.headers.remove(http::header::CONNECTION);
        parts.headers.remove(http::header::UPGRADE);
    }
    let end = body.is_end_stream();
    let (response, stream) = sender.send_request(http::Request::from_parts(parts, ()), end)?;
    let response = if end {
        response.await?
    } else {
        let mut pump = Some(Box::pin(SendBody::new(body, stream)));
        let mut response = response;
        let head = std::future::poll_fn(|cx| {
            if let Some(p) = pump.as_mut()
                && p.as_mut().poll(cx).is_ready()
            {
                pump = None;
            }
            Pin::new(&mut response).poll(cx)
        })
        .await;
        if let Some(p) = pump {
            // The host answered before the request's body ended (a stream both ways).
            tokio::spawn(p);
        }
        head?
    };
    let (parts, recv) = response.into_parts();
    let body = RecvBody::new(recv, &parts.headers);
    Ok(http::Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::pool::BoxError;
    use h2::RecvStream;
    use http_body::Frame;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tokio::net::{TcpListener, TcpStream};

    /// An HTTP/2 host on loopback that serves each stream with `serve` (one connection).
    async fn host<F, Fut>(serve: F) -> std::net::SocketAddr
    where
        F: Fn(http::Request<RecvStream>, h2::server::SendResponse<Bytes>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut conn = h2::server::handshake(tcp).await.unwrap();
            while let Some(Ok((request, respond))) = conn.accept().await {
                tokio::spawn(serve(request, respond));
            }
        });
        addr
    }

    async fn connect(addr: std::net::SocketAddr) -> SendRequest<Bytes> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (sender, conn) = handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        sender
    }

    fn request(body: Body) -> http::Request<Body> {
        let mut r = http::Request::new(body);
        *r.method_mut() = http::Method::POST;
        *r.uri_mut() = "http://upstream.test/echo".parse().unwrap();
        r
    }

    /// Reads a request body whole (giving back its window), with its trailers.
    async fn read_all(mut body: RecvStream) -> (Vec<u8>, Option<http::HeaderMap>) {
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            body.flow_control().release_capacity(chunk.len()).unwrap();
            data.extend_from_slice(&chunk);
        }
        (data, body.trailers().await.unwrap())
    }

    fn trailers(name: &'static str, value: &'static str) -> http::HeaderMap {
        let mut t = http::HeaderMap::new();
        t.insert(name, http::HeaderValue::from_static(value));
        t
    }

    #[tokio::test]
    async fn a_body_larger_than_the_window_goes_whole_and_trailers_go_both_ways() {
        // The host's window is HTTP/2's default 64 KiB: 3 MiB must wait for window updates.
        let addr = host(|request, mut respond| async move {
            let (data, sent_trailers) = read_all(request.into_body()).await;
            let mut stream = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            let echoed = format!(
                "{} {:?}",
                data.len(),
                sent_trailers.map(|t| t["x-sum"].clone())
            );
            stream.send_data(Bytes::from(echoed), false).unwrap();
            stream.send_trailers(trailers("grpc-status", "0")).unwrap();
        })
        .await;
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = (0..48)
            .map(|_| Ok(Frame::data(Bytes::from(vec![7u8; 64 * 1024]))))
            .chain([Ok(Frame::trailers(trailers("x-sum", "42")))])
            .collect();
        let body = http_body_util::StreamBody::new(tokio_stream::iter(chunks));
        let response = send(connect(addr).await, request(BodyExt::boxed_unsync(body)))
            .await
            .unwrap();
        let whole = response.into_body().collect().await.unwrap();
        let got_trailers = whole.trailers().cloned();
        assert_eq!(whole.to_bytes(), "3145728 Some(\"42\")");
        assert_eq!(got_trailers.unwrap()["grpc-status"], "0");
    }

    #[tokio::test]
    async fn a_response_before_the_request_body_ends_leaves_the_body_streaming() {
        // An echo that answers at once and sends each piece back as it comes (gRPC both ways).
        let addr = host(|request, mut respond| async move {
            let mut body = request.into_body();
            let mut stream = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                stream.send_data(chunk, false).unwrap();
            }
            stream.send_data(Bytes::new(), true).unwrap();
        })
        .await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let response = send(connect(addr).await, request(BodyExt::boxed_unsync(body)))
            .await
            .unwrap();
        let mut body = response.into_body();
        for piece in ["one", "two"] {
            tx.send(Ok(Frame::data(Bytes::from(piece)))).await.unwrap();
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("the piece echoed within 5 s")
                .unwrap()
                .unwrap();
            assert_eq!(
                frame.into_data().unwrap(),
                piece,
                "echoed while still sending"
            );
        }
        drop(tx);
        let rest = body.collect().await.unwrap().to_bytes();
        assert!(
            rest.is_empty(),
            "the end of the request ends the echo: {rest:?}"
        );
    }

    /// A request whose body is at hand goes in one write, HEADERS, DATA and trailers together
    /// (each write wakes the host once more; it was two); a body ending in a bare
    /// END_STREAM frame, which takes no window, ends too.
    #[tokio::test]
    async fn a_request_at_hand_goes_in_one_write_and_a_bare_end_of_stream_ends_it() {
        let addr = host(|request, mut respond| async move {
            let (data, sent_trailers) = read_all(request.into_body()).await;
            let echoed = format!("{data:?} {:?}", sent_trailers.map(|t| t["x-sum"].clone()));
            let mut stream = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            stream.send_data(Bytes::from(echoed), true).unwrap();
        })
        .await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let io = crate::gather::CountedWrites::new(tcp);
        let writes = io.writes.clone();
        let (sender, conn) = handshake(io).await.unwrap();
        tokio::spawn(conn);
        let call = |frames: Vec<Frame<Bytes>>| {
            let sender = sender.clone();
            async move {
                let body = http_body_util::StreamBody::new(tokio_stream::iter(
                    frames.into_iter().map(Ok::<_, BoxError>),
                ));
                let response = tokio::time::timeout(
                    Duration::from_secs(5),
                    send(sender, request(BodyExt::boxed_unsync(body))),
                )
                .await
                .expect("answered within 5 s")
                .unwrap();
                response.into_body().collect().await.unwrap().to_bytes()
            }
        };
        // The connection's own writes (its SETTINGS, their acknowledgement) are done after one.
        call(vec![]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;

        let before = writes.load(std::sync::atomic::Ordering::Relaxed);
        let whole = vec![
            Frame::data(Bytes::from_static(b"hi")),
            Frame::trailers(trailers("x-sum", "42")),
        ];
        assert_eq!(call(whole).await, "[104, 105] Some(\"42\")");
        assert_eq!(
            writes.load(std::sync::atomic::Ordering::Relaxed) - before,
            1,
            "HEADERS, DATA and trailers in one write"
        );

        let bare_end = vec![
            Frame::data(Bytes::from_static(b"hi")),
            Frame::data(Bytes::new()),
        ];
        assert_eq!(call(bare_end).await, "[104, 105] None");
    }

    #[tokio::test]
    async fn a_refused_stream_is_told_apart_from_other_resets() {
        let addr = host(|request, mut respond| async move {
            let reason = if request.uri().path() == "/refuse" {
                h2::Reason::REFUSED_STREAM
            } else {
                h2::Reason::CANCEL
            };
            respond.send_reset(reason);
        })
        .await;
        let sender = connect(addr).await;
        let mut outcomes = Vec::new();
        for path in ["/refuse", "/cancel"] {
            let mut r = request(Body::default());
            *r.uri_mut() = format!("http://upstream.test{path}").parse().unwrap();
            let e = send(sender.clone(), r).await.err().unwrap();
            outcomes.push(super::super::pool::SendError::Http2(e).refused());
        }
        assert_eq!(outcomes, [true, false]);
    }
}
