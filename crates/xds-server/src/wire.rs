//! The gRPC transport of ADS, written for the control plane's traffic pattern: large responses
//! built from resources encoded once and shared by many proxies.
//!
//! Responses are encoded straight from those shared encodings into one exactly sized buffer
//! per message (no per-proxy copies into intermediate `Any` values), and requests are read into
//! one buffer per message, so a long-lived stream keeps no buffer the size of the largest message
//! it ever carried.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use prost::encoding::{encode_varint, encoded_len_varint};
use tokio::sync::mpsc;
use tonic::Status;

/// Key bytes of the length-delimited fields written here (field number << 3 | 2).
const fn key(field: u8) -> u8 {
    (field << 3) | 2
}

fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn put_field(buf: &mut BytesMut, field: u8, data: &[u8]) {
    put_head(buf, field, data.len());
    buf.put_slice(data);
}

fn put_head(buf: &mut BytesMut, field: u8, len: usize) {
    buf.put_u8(key(field));
    encode_varint(len as u64, buf);
}

/// One resource of a delta response: name, version, and the shared encoding of its `Any`.
pub struct DeltaEntry {
    pub name: Arc<str>,
    pub version: Arc<str>,
    pub any: Bytes,
}

impl DeltaEntry {
    /// Length of the `Resource` message (fields: version 1, resource 2, name 3).
    fn message_len(&self) -> usize {
        field_len(self.version.len()) + field_len(self.any.len()) + field_len(self.name.len())
    }
}

enum Entries {
    /// `DiscoveryResponse.resources` (field 2): each an encoded `Any`.
    Sotw(Vec<Bytes>),
    /// `DeltaDiscoveryResponse.resources` (field 2): each a `Resource`.
    Delta(Vec<DeltaEntry>),
}

/// Bytes of gathered chunks handed to connections and not yet written, across all streams. When
/// many proxies sync at once their connections cannot take data as fast as it could be copied;
/// bounding what waits keeps the memory of a cold sync small.
pub struct SendBudget {
    in_flight: AtomicUsize,
    limit: usize,
    waiting: Mutex<Vec<Waker>>,
}

impl SendBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            limit,
            waiting: Mutex::new(Vec::new()),
        })
    }

    /// Whether another chunk may be gathered now; if not, `cx` is woken when one is written.
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.in_flight.load(Ordering::Acquire) + CHUNK <= self.limit {
            return Poll::Ready(());
        }
        if let Ok(mut w) = self.waiting.lock() {
            w.push(cx.waker().clone());
        }
        // Re-check: a chunk may have been written meanwhile.
        if self.in_flight.load(Ordering::Acquire) + CHUNK <= self.limit {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    fn track(self: &Arc<Self>, chunk: BytesMut) -> Bytes {
        self.in_flight.fetch_add(chunk.len(), Ordering::AcqRel);
        Bytes::from_owner(Tracked {
            bytes: chunk.freeze(),
            budget: self.clone(),
        })
    }
}

/// A gathered chunk; gives its bytes back to the budget once the connection has written it.
struct Tracked {
    bytes: Bytes,
    budget: Arc<SendBudget>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.budget
            .in_flight
            .fetch_sub(self.bytes.len(), Ordering::AcqRel);
        let waiting = self
            .budget
            .waiting
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        for w in waiting {
            w.wake();
        }
    }
}

/// Resources at least this large go to the connection as they are, without a copy.
const SHARED_AT: usize = 32 * 1024;
/// Size of the chunks smaller resources are gathered into.
const CHUNK: usize = 64 * 1024;

/// A response message to send: its gRPC frame header and small fields, then its resources,
/// turned into chunks only as the connection can take them, so a proxy being sent a large
/// configuration holds references to the shared encodings, not a copy of them.
pub struct Outgoing {
    prefix: Option<Bytes>,
    entries: Entries,
    next: usize,
    ready: VecDeque<Bytes>,
    len: usize,
}

impl Outgoing {
    /// A `DiscoveryResponse`.
    pub fn sotw(version_info: &str, type_url: &str, nonce: &str, resources: Vec<Bytes>) -> Self {
        let body: usize = resources.iter().map(|r| field_len(r.len())).sum();
        let fields = [(1, version_info), (4, type_url), (5, nonce)];
        Self::new(&fields, &[], body, Entries::Sotw(resources))
    }

    /// A `DeltaDiscoveryResponse`.
    pub fn delta(
        system_version_info: &str,
        type_url: &str,
        nonce: &str,
        removed: &[Arc<str>],
        resources: Vec<DeltaEntry>,
    ) -> Self {
        let body: usize = resources.iter().map(|r| field_len(r.message_len())).sum();
        let fields = [(1, system_version_info), (4, type_url), (5, nonce)];
        Self::new(&fields, removed, body, Entries::Delta(resources))
    }

    fn new(fields: &[(u8, &str)], removed: &[Arc<str>], body: usize, entries: Entries) -> Self {
        let small: usize = fields
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(_, v)| field_len(v.len()))
            .sum::<usize>()
            + removed.iter().map(|r| field_len(r.len())).sum::<usize>();
        let message = small + body;
        let mut prefix = BytesMut::with_capacity(5 + small);
        prefix.put_u8(0);
        prefix.put_u32(u32::try_from(message).unwrap_or(u32::MAX));
        for (field, value) in fields.iter().filter(|(_, v)| !v.is_empty()) {
            put_field(&mut prefix, *field, value.as_bytes());
        }
        for r in removed {
            put_field(&mut prefix, 6, r.as_bytes());
        }
        Self {
            prefix: Some(prefix.freeze()),
            entries,
            next: 0,
            ready: VecDeque::new(),
            len: 5 + message,
        }
    }

    /// Bytes on the wire, frame header included.
    pub fn wire_len(&self) -> usize {
        self.len
    }

    /// The next piece of the message, `None` when all of it was given out; `Pending` while
    /// the budget has no room for another gathered chunk.
    fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
        budget: &Arc<SendBudget>,
    ) -> Poll<Option<Bytes>> {
        if let Some(b) = self.ready.pop_front() {
            return Poll::Ready(Some(b));
        }
        if self.prefix.is_none() && !self.has_entries() {
            return Poll::Ready(None);
        }
        ready!(budget.poll_room(cx));
        Poll::Ready(self.gather(Some(budget)))
    }

    fn has_entries(&self) -> bool {
        match &self.entries {
            Entries::Sotw(v) => self.next < v.len(),
            Entries::Delta(v) => self.next < v.len(),
        }
    }

    /// The next piece, without a budget (tests).
    #[cfg(test)]
    fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(b) = self.ready.pop_front() {
            return Some(b);
        }
        self.gather(None)
    }

    fn gather(&mut self, budget: Option<&Arc<SendBudget>>) -> Option<Bytes> {
        let mut buf = BytesMut::with_capacity(CHUNK);
        if let Some(p) = self.prefix.take() {
            buf.put_slice(&p);
        }
        loop {
            let (count, any_len, entry_len) = match &self.entries {
                Entries::Sotw(v) => (
                    v.len(),
                    v.get(self.next).map_or(0, Bytes::len),
                    v.get(self.next).map_or(0, |a| field_len(a.len())),
                ),
                Entries::Delta(v) => (
                    v.len(),
                    v.get(self.next).map_or(0, |e| e.any.len()),
                    v.get(self.next).map_or(0, |e| field_len(e.message_len())),
                ),
            };
            if self.next >= count {
                break;
            }
            let large = any_len >= SHARED_AT;
            // What this entry adds to the chunk: its head, and its bytes unless they are large.
            let adds = if large {
                entry_len - any_len
            } else {
                entry_len
            };
            if !buf.is_empty() && buf.len() + adds > CHUNK {
                break;
            }
            let i = self.next;
            self.next += 1;
            let any = match &self.entries {
                Entries::Sotw(v) => {
                    let any = &v[i];
                    put_head(&mut buf, 2, any.len());
                    any.clone()
                }
                Entries::Delta(v) => {
                    let e = &v[i];
                    put_head(&mut buf, 2, e.message_len());
                    put_field(&mut buf, 1, e.version.as_bytes());
                    put_field(&mut buf, 3, e.name.as_bytes());
                    put_head(&mut buf, 2, e.any.len());
                    e.any.clone()
                }
            };
            if large {
                self.ready.push_back(any);
                break;
            }
            buf.put_slice(&any);
        }
        if buf.is_empty() {
            return self.ready.pop_front();
        }
        Some(match budget {
            Some(b) => b.track(buf),
            None => buf.freeze(),
        })
    }
}

/// Splits a request body into messages, allocating each once at its own size.
#[derive(Debug)]
struct Deframer {
    header: [u8; 5],
    header_len: usize,
    /// A message split across body chunks: what arrived and its full length.
    partial: Option<(Vec<u8>, usize)>,
    ready: VecDeque<Bytes>,
    max: usize,
}

impl Deframer {
    fn new(max: usize) -> Self {
        Self {
            header: [0; 5],
            header_len: 0,
            partial: None,
            ready: VecDeque::new(),
            max,
        }
    }

    fn push(&mut self, mut data: Bytes) -> Result<(), Status> {
        while data.has_remaining() {
            if let Some((buf, len)) = &mut self.partial {
                let take = (*len - buf.len()).min(data.len());
                buf.extend_from_slice(&data[..take]);
                data.advance(take);
                if buf.len() == *len
                    && let Some((buf, _)) = self.partial.take()
                {
                    self.ready.push_back(Bytes::from(buf));
                }
                continue;
            }
            let take = (5 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
            data.advance(take);
            self.header_len += take;
            if self.header_len < 5 {
                continue;
            }
            self.header_len = 0;
            if self.header[0] != 0 {
                return Err(Status::unimplemented(
                    "compressed xDS requests are not supported: send them uncompressed",
                ));
            }
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            if len > self.max {
                return Err(Status::resource_exhausted(format!(
                    "request of {len} bytes is larger than the {} bytes allowed",
                    self.max
                )));
            }
            if data.len() >= len {
                self.ready.push_back(data.split_to(len));
            } else {
                // Grow as bytes arrive: a declared length alone does not reserve memory.
                self.partial = Some((Vec::with_capacity(len.min(64 * 1024)), len));
            }
        }
        Ok(())
    }

    fn in_message(&self) -> bool {
        self.partial.is_some() || self.header_len > 0
    }
}

/// The request messages of one stream.
pub struct Requests<T> {
    body: tonic::body::Body,
    deframer: Deframer,
    _message: PhantomData<T>,
}

impl<T: Message + Default> Requests<T> {
    pub fn new(body: tonic::body::Body, max_message: usize) -> Self {
        Self {
            body,
            deframer: Deframer::new(max_message),
            _message: PhantomData,
        }
    }

    /// The next message; `None` when the client ended the stream.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        loop {
            if let Some(m) = self.deframer.ready.pop_front() {
                return T::decode(m)
                    .map(Some)
                    .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")));
            }
            match self.body.frame().await {
                None if self.deframer.in_message() => {
                    return Err(Status::internal(
                        "the request stream ended inside a message",
                    ));
                }
                None => return Ok(None),
                Some(Err(e)) => return Err(e),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.deframer.push(data)?;
                    }
                }
            }
        }
    }
}

/// What a stream's task sends: responses, or the status that ends the stream.
pub type Outbound = mpsc::Sender<Result<Outgoing, Status>>;

/// The response body: the stream task's responses, chunk by chunk as the connection takes them,
/// then the gRPC status trailers.
pub struct ResponseBody {
    rx: mpsc::Receiver<Result<Outgoing, Status>>,
    sending: Option<Outgoing>,
    budget: Arc<SendBudget>,
    done: bool,
}

impl ResponseBody {
    pub fn new(rx: mpsc::Receiver<Result<Outgoing, Status>>, budget: Arc<SendBudget>) -> Self {
        Self {
            rx,
            sending: None,
            budget,
            done: false,
        }
    }
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
    map
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let this = &mut *self;
            if let Some(out) = &mut this.sending {
                if let Some(chunk) = ready!(out.poll_chunk(cx, &this.budget)) {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                this.sending = None;
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(Ok(out)) => self.sending = Some(out),
                Some(Err(status)) => {
                    self.done = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))));
                }
                None => {
                    self.done = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&Status::ok(""))))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };
    use envoy_types::pb::google::protobuf::Any;

    fn whole(mut out: Outgoing) -> Vec<u8> {
        let expected = out.wire_len();
        let mut wire = Vec::new();
        while let Some(chunk) = out.next_chunk() {
            assert!(!chunk.is_empty());
            // Gathered chunks stay within their size; only large resources pass as they are.
            assert!(
                chunk.len() <= CHUNK || chunk.len() >= SHARED_AT,
                "chunk of {}",
                chunk.len()
            );
            wire.extend_from_slice(&chunk);
        }
        assert_eq!(wire.len(), expected, "announced length");
        assert_eq!(wire[0], 0, "uncompressed");
        let len = u32::from_be_bytes([wire[1], wire[2], wire[3], wire[4]]) as usize;
        assert_eq!(len, wire.len() - 5, "frame length");
        wire.split_off(5)
    }

    fn any(n: u8, size: usize) -> Any {
        Any {
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            value: vec![n; size],
        }
    }

    #[test]
    fn responses_decode_as_envoys_messages_whatever_the_resource_sizes() {
        // Small resources gathered into chunks, large ones passed through, around both limits.
        let sizes = [
            0,
            3,
            200,
            SHARED_AT - 80,
            SHARED_AT,
            SHARED_AT + 5,
            CHUNK + 7,
            10,
        ];
        let resources: Vec<Any> = sizes
            .iter()
            .enumerate()
            .map(|(i, s)| any(i as u8, *s))
            .collect();
        let many: Vec<Any> = (0..2000).map(|i| any((i % 251) as u8, 61)).collect();
        for set in [&resources, &many, &Vec::new()] {
            let encoded: Vec<Bytes> = set.iter().map(|a| a.encode_to_vec().into()).collect();
            let out = Outgoing::sotw("7", "t", "n", encoded);
            let decoded = DiscoveryResponse::decode(whole(out).as_slice()).unwrap();
            assert_eq!(&decoded.resources, set);
            assert_eq!(
                (
                    decoded.version_info.as_str(),
                    decoded.type_url.as_str(),
                    decoded.nonce.as_str()
                ),
                ("7", "t", "n")
            );

            let entries: Vec<DeltaEntry> = set
                .iter()
                .enumerate()
                .map(|(i, a)| DeltaEntry {
                    name: format!("r{i}").into(),
                    version: format!("v{i}").into(),
                    any: a.encode_to_vec().into(),
                })
                .collect();
            let removed: Vec<Arc<str>> = vec!["gone".into(), "also-gone".into()];
            let out = Outgoing::delta("3", "t", "n", &removed, entries);
            let decoded = DeltaDiscoveryResponse::decode(whole(out).as_slice()).unwrap();
            assert_eq!(decoded.resources.len(), set.len());
            for (i, (r, a)) in decoded.resources.iter().zip(set.iter()).enumerate() {
                assert_eq!(r.resource.as_ref(), Some(a));
                assert_eq!(
                    (r.name.clone(), r.version.clone()),
                    (format!("r{i}"), format!("v{i}"))
                );
            }
            assert_eq!(
                decoded.removed_resources,
                vec!["gone".to_string(), "also-gone".to_string()]
            );
            assert_eq!(decoded.system_version_info, "3");
        }
    }

    #[test]
    fn gathering_waits_for_room_in_the_budget_and_resumes_when_a_chunk_is_written() {
        let budget = SendBudget::new(CHUNK + CHUNK / 2);
        let resources: Vec<Bytes> = (0..200)
            .map(|i| any(i as u8, 1000).encode_to_vec().into())
            .collect();
        let mut out = Outgoing::sotw("1", "t", "n", resources);
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let Poll::Ready(Some(first)) = out.poll_chunk(&mut cx, &budget) else {
            panic!("the first chunk fits");
        };
        assert!(
            out.poll_chunk(&mut cx, &budget).is_pending(),
            "no room for a second"
        );
        drop(first);
        assert!(matches!(
            out.poll_chunk(&mut cx, &budget),
            Poll::Ready(Some(_))
        ));
    }

    #[test]
    fn messages_split_anywhere_across_chunks_are_reassembled() {
        let messages: Vec<Bytes> = (0..4u8)
            .map(|i| Bytes::from(vec![i; i as usize * 700]))
            .collect();
        let mut wire = Vec::new();
        for m in &messages {
            wire.put_u8(0);
            wire.put_u32(m.len() as u32);
            wire.extend_from_slice(m);
        }
        for chunk in [1, 2, 5, 7, 700, 4096] {
            let mut d = Deframer::new(1 << 20);
            for piece in wire.chunks(chunk) {
                d.push(Bytes::copy_from_slice(piece)).unwrap();
            }
            assert!(!d.in_message());
            assert_eq!(
                d.ready.iter().cloned().collect::<Vec<_>>(),
                messages,
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn oversized_and_compressed_requests_are_refused() {
        let mut d = Deframer::new(10);
        let err = d.push(Bytes::from_static(&[0, 0, 0, 0, 11])).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        let mut d = Deframer::new(10);
        let err = d.push(Bytes::from_static(&[1, 0, 0, 0, 1, 0])).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);
    }
}
