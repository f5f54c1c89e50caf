//! The xDS stream's gRPC framing, over a tonic channel: requests sent as they come, responses
//! reassembled in a buffer that is let go once it is empty and has grown large. tonic's own
//! `Streaming` keeps its buffer at the size of the largest message for the life of the stream —
//! for a proxy of a large mesh, a state-of-the-world response of a megabyte or more, held for
//! as long as the proxy stays connected.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tower::{Service, ServiceExt};

/// A message larger than this is refused (the control plane is trusted, but not unboundedly).
pub const MAX_MESSAGE: usize = 512 * 1024 * 1024;

/// An empty reassembly buffer larger than this is released rather than kept.
const KEEP_CAPACITY: usize = 64 * 1024;

const PREFIX: usize = 5;

/// Why a stream could not be opened or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcError {
    /// The server answered with a gRPC status other than OK.
    Status { code: tonic::Code, message: String },
    /// The transport or the framing failed.
    Transport(String),
}

impl std::fmt::Display for GrpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrpcError::Status { code, message } => write!(f, "{code}: {message}"),
            GrpcError::Transport(reason) => f.write_str(reason),
        }
    }
}

/// Splits a stream of bytes into gRPC messages (a compressed-flag byte and a 4-byte big-endian
/// length before each).
#[derive(Debug, Default)]
pub struct Deframer {
    buffer: BytesMut,
}

impl Deframer {
    pub fn push(&mut self, data: impl Buf) {
        self.buffer.put(data);
    }

    /// Decodes the next whole message, if one has arrived.
    pub fn next_message<M: prost::Message + Default>(&mut self) -> Result<Option<M>, GrpcError> {
        let Some(&[compressed, a, b, c, d]) = self.buffer.get(..PREFIX) else {
            return Ok(None);
        };
        if compressed != 0 {
            return Err(GrpcError::Transport(
                "the control plane sent a compressed message, but no compression was offered"
                    .into(),
            ));
        }
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        if len > MAX_MESSAGE {
            return Err(GrpcError::Transport(format!(
                "a message of {len} bytes is larger than the limit of {MAX_MESSAGE}"
            )));
        }
        let Some(body) = self.buffer.get(PREFIX..PREFIX + len) else {
            // Room for the rest at once, rather than doubling towards it.
            self.buffer.reserve(PREFIX + len - self.buffer.len());
            return Ok(None);
        };
        let message = M::decode(body)
            .map_err(|e| GrpcError::Transport(format!("cannot decode a response: {e}")))?;
        self.buffer.advance(PREFIX + len);
        if self.buffer.is_empty() && self.buffer.capacity() > KEEP_CAPACITY {
            self.buffer = BytesMut::new();
        }
        Ok(Some(message))
    }

    /// Bytes held for the next messages (allocated, not just used).
    pub fn capacity(&self) -> usize {
        self.buffer.capacity()
    }
}

/// One framed message.
pub fn frame<M: prost::Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(PREFIX + len);
    out.put_u8(0);
    out.put_u32(len as u32);
    // Cannot fail: the buffer has room for the encoded length.
    let _ = message.encode(&mut out);
    out.freeze()
}

/// The gRPC status a header map carries (trailers, or the headers of a trailers-only answer).
fn status(headers: &HeaderMap) -> Option<Result<(), GrpcError>> {
    let code = headers.get("grpc-status")?;
    let code = code
        .to_str()
        .ok()
        .and_then(|c| c.parse::<i32>().ok())
        .map_or(tonic::Code::Unknown, tonic::Code::from_i32);
    if code == tonic::Code::Ok {
        return Some(Ok(()));
    }
    let message = headers
        .get("grpc-message")
        .map(|m| percent_decode(m.as_bytes()))
        .unwrap_or_default();
    Some(Err(GrpcError::Status { code, message }))
}

/// gRPC's percent-encoding of `grpc-message`.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The responses of an open stream.
pub struct Responses<R> {
    body: tonic::body::Body,
    deframer: Deframer,
    ended: bool,
    _message: PhantomData<fn() -> R>,
}

impl<R: prost::Message + Default> Responses<R> {
    /// The next response; `None` once the server has ended the stream with OK.
    pub async fn message(&mut self) -> Result<Option<R>, GrpcError> {
        loop {
            if let Some(m) = self.deframer.next_message()? {
                return Ok(Some(m));
            }
            if self.ended {
                return Ok(None);
            }
            let frame = match self.body.frame().await {
                None => {
                    return Err(GrpcError::Transport(
                        "the stream ended without a gRPC status".into(),
                    ));
                }
                Some(Err(e)) => return Err(GrpcError::Transport(e.to_string())),
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => self.deframer.push(data),
                Err(frame) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        match status(trailers) {
                            Some(Ok(())) => self.ended = true,
                            Some(Err(e)) => return Err(e),
                            None => {
                                return Err(GrpcError::Transport(
                                    "the stream's trailers carry no gRPC status".into(),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Opens a bidirectional stream at `path`, sending `requests` as they come.
pub async fn open<Req, Resp>(
    mut channel: Channel,
    path: &'static str,
    requests: mpsc::Receiver<Req>,
) -> Result<Responses<Resp>, GrpcError>
where
    Req: prost::Message + Send + 'static,
    Resp: prost::Message + Default,
{
    let frames = ReceiverStream::new(requests)
        .map(|r| Ok::<_, std::convert::Infallible>(http_body::Frame::data(frame(&r))));
    let mut request = http::Request::new(tonic::body::Body::new(StreamBody::new(frames)));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static(path);
    *request.version_mut() = http::Version::HTTP_2;
    let headers = request.headers_mut();
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let ready = channel
        .ready()
        .await
        .map_err(|e| GrpcError::Transport(e.to_string()))?;
    let response = ready
        .call(request)
        .await
        .map_err(|e| GrpcError::Transport(e.to_string()))?;
    let trailers_only = match status(response.headers()) {
        Some(Err(e)) => return Err(e),
        Some(Ok(())) => true,
        None => false,
    };
    if response.status() != http::StatusCode::OK {
        return Err(GrpcError::Transport(format!(
            "the control plane answered HTTP {}",
            response.status()
        )));
    }
    Ok(Responses {
        body: response.into_body(),
        deframer: Deframer::default(),
        ended: trailers_only,
        _message: PhantomData,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;

    fn response(size: usize) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: "v1".into(),
            resources: vec![Any {
                type_url: "t".into(),
                value: vec![7; size],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn messages_split_anywhere_come_out_whole_and_in_order() {
        let a = response(10);
        let b = response(3000);
        let mut wire = frame(&a).to_vec();
        wire.extend_from_slice(&frame(&b));
        for cut in [1, 4, 5, 6, 17, wire.len() - 1] {
            let mut d = Deframer::default();
            d.push(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(m) = d.next_message::<DiscoveryResponse>().unwrap() {
                got.push(m);
            }
            d.push(&wire[cut..]);
            while let Some(m) = d.next_message::<DiscoveryResponse>().unwrap() {
                got.push(m);
            }
            assert_eq!(got, vec![a.clone(), b.clone()], "cut at {cut}");
        }
    }

    #[test]
    fn a_large_message_does_not_keep_its_buffer() {
        let big = frame(&response(2 * 1024 * 1024));
        let small = frame(&response(100));
        let mut d = Deframer::default();
        for chunk in big.chunks(16 * 1024) {
            d.push(chunk);
        }
        assert!(d.capacity() >= big.len());
        assert!(d.next_message::<DiscoveryResponse>().unwrap().is_some());
        assert_eq!(d.capacity(), 0, "released once decoded");
        // Small messages keep a small buffer.
        d.push(&small[..]);
        assert!(d.next_message::<DiscoveryResponse>().unwrap().is_some());
        assert!(d.capacity() <= KEEP_CAPACITY);
    }

    #[test]
    fn a_buffer_still_holding_the_next_message_is_kept() {
        let mut wire = frame(&response(200 * 1024)).to_vec();
        wire.extend_from_slice(&frame(&response(10))[..3]);
        let mut d = Deframer::default();
        d.push(&wire[..]);
        assert!(d.next_message::<DiscoveryResponse>().unwrap().is_some());
        assert!(d.next_message::<DiscoveryResponse>().unwrap().is_none());
        assert!(d.capacity() > 0);
    }

    #[test]
    fn compressed_and_oversized_messages_are_refused() {
        let mut d = Deframer::default();
        d.push(&[1u8, 0, 0, 0, 1, 0][..]);
        assert!(matches!(
            d.next_message::<DiscoveryResponse>(),
            Err(GrpcError::Transport(m)) if m.contains("compressed")
        ));
        let mut d = Deframer::default();
        d.push(&[0u8, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            d.next_message::<DiscoveryResponse>(),
            Err(GrpcError::Transport(m)) if m.contains("larger than the limit")
        ));
    }

    #[test]
    fn statuses_are_read_from_headers_and_decoded() {
        let mut h = HeaderMap::new();
        assert_eq!(status(&h), None);
        h.insert("grpc-status", HeaderValue::from_static("0"));
        assert_eq!(status(&h), Some(Ok(())));
        h.insert("grpc-status", HeaderValue::from_static("12"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("not%20here%3A%20delta%"),
        );
        assert_eq!(
            status(&h),
            Some(Err(GrpcError::Status {
                code: tonic::Code::Unimplemented,
                message: "not here: delta%".into()
            }))
        );
    }
}
