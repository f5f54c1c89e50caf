//! Trace context: W3C `traceparent` and B3 headers are propagated; a request that arrives with
//! neither gets a new `traceparent`, and every hop gets a new span ID as Envoy's tracer does.
//! `x-request-id` is kept or created. These IDs are unique to a request (or a hop), so they go
//! to HTTP/2 peers as literals never entered into the HPACK table (marked sensitive).

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// A 128-bit trace ID as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 32]);

impl TraceId {
    pub fn as_str(&self) -> &str {
        // Only ever hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `N` random lower-case hex digits (16 from each random 64-bit number).
fn random_hex<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(16) {
        let mut bits = fastrand::u64(..);
        for d in chunk {
            *d = HEX_DIGITS[(bits & 15) as usize];
            bits >>= 4;
        }
    }
    out
}

/// The trace ID of a request, after making sure it carries trace context. Writes its headers
/// without building strings on the way (a few header values are all it allocates).
pub fn propagate(headers: &mut HeaderMap) -> TraceId {
    match headers.get_mut(X_REQUEST_ID) {
        Some(kept) => kept.set_sensitive(true),
        None => {
            headers.insert(X_REQUEST_ID, header_value(&request_id()));
        }
    }
    // W3C: version-traceid-parentid-flags; a new span ID for this hop.
    let parsed = headers
        .get(TRACEPARENT)
        .and_then(|v| parse_traceparent(v.as_bytes()));
    let (trace_id, flags) = match parsed {
        Some(found) => found,
        None => match headers
            .get(B3_TRACE_ID)
            .and_then(|v| b3_trace_id(v.as_bytes()))
        {
            // Continue a B3 trace in W3C form too.
            Some(id) => {
                let sampled = headers.get(B3_SAMPLED).is_some_and(|v| v == "1");
                (id, if sampled { *b"01" } else { *b"00" })
            }
            None => (TraceId(random_hex()), *b"01"),
        },
    };
    let span: [u8; 16] = random_hex();
    let mut traceparent = [0u8; 55];
    traceparent[..3].copy_from_slice(b"00-");
    traceparent[3..35].copy_from_slice(&trace_id.0);
    traceparent[35] = b'-';
    traceparent[36..52].copy_from_slice(&span);
    traceparent[52] = b'-';
    traceparent[53..].copy_from_slice(&flags);
    headers.insert(TRACEPARENT, header_value(&traceparent));
    if let Some(kept) = headers.get_mut(B3_TRACE_ID) {
        kept.set_sensitive(true);
        if let Some(mut parent) = headers.get(B3_SPAN_ID).cloned() {
            parent.set_sensitive(true);
            headers.insert(B3_PARENT_SPAN_ID, parent);
        }
        headers.insert(B3_SPAN_ID, header_value(&span));
    }
    trace_id
}

/// A header value of hex digits and dashes (always valid), unique to one request or one hop:
/// marked sensitive so HTTP/2 sends it as a literal never indexed — entering it into the
/// HPACK table could never pay off (no later request repeats it) and would evict the entries
/// that do repeat.
fn header_value(bytes: &[u8]) -> HeaderValue {
    let mut v = HeaderValue::from_maybe_shared(ids::shared(bytes))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

/// Where the IDs' bytes live: slices of a per-thread chunk a few kilobytes long, shared by
/// reference count. A value of its own would be an allocation per ID, and another when the
/// request's headers are first cloned (for a retry), since a vector's bytes become shared then.
mod ids {
    use std::cell::RefCell;

    use bytes::{Bytes, BytesMut};

    /// Room for the IDs of about 40 requests; a chunk is freed when they all have ended.
    const CHUNK: usize = 4096;

    thread_local! {
        static CHUNK_LEFT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    }

    /// `bytes` as a shared slice of this thread's current chunk.
    pub(super) fn shared(bytes: &[u8]) -> Bytes {
        CHUNK_LEFT.with_borrow_mut(|left| {
            if left.capacity() < bytes.len() {
                *left = BytesMut::with_capacity(CHUNK.max(bytes.len()));
            }
            left.extend_from_slice(bytes);
            left.split().freeze()
        })
    }
}

/// The trace ID and flags of a valid `traceparent`.
fn parse_traceparent(v: &[u8]) -> Option<(TraceId, [u8; 2])> {
    let v = v.trim_ascii();
    let mut it = v.split(|b| *b == b'-');
    let version = it.next()?;
    let trace = it.next()?;
    let _parent = it.next()?;
    let flags: [u8; 2] = it.next()?.try_into().ok()?;
    if version.len() != 2 || trace.iter().all(|b| *b == b'0') {
        return None;
    }
    // 32 hex digits, or not a trace ID.
    Some((lower_hex(trace)?, flags))
}

/// A B3 trace ID (128-bit, or 64-bit left-padded with zeros).
fn b3_trace_id(v: &[u8]) -> Option<TraceId> {
    match v.len() {
        32 => lower_hex(v),
        16 => {
            let mut padded = [b'0'; 32];
            padded[16..].copy_from_slice(v);
            lower_hex(&padded)
        }
        _ => None,
    }
}

/// 32 hex digits, lower-cased.
fn lower_hex(v: &[u8]) -> Option<TraceId> {
    let digits: [u8; 32] = v.try_into().ok()?;
    digits
        .iter()
        .all(u8::is_ascii_hexdigit)
        .then(|| TraceId(digits.map(|b| b.to_ascii_lowercase())))
}

/// A random request ID shaped as a version-4 UUID: 8-4-4-4-12 hex digits.
fn request_id() -> [u8; 36] {
    let mut id: [u8; 36] = random_hex();
    for dash in [8, 13, 18, 23] {
        id[dash] = b'-';
    }
    id[14] = b'4';
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incoming_trace_continues_with_a_new_span() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let id = propagate(&mut h);
        assert_eq!(id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let tp = h["traceparent"].to_str().unwrap();
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(tp.ends_with("-01"));
        assert!(!tp.contains("00f067aa0ba902b7"));
        assert!(h.contains_key("x-request-id"));
    }

    #[test]
    fn b3_is_kept_and_continued() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-b3-traceid",
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7"),
        );
        h.insert("x-b3-spanid", HeaderValue::from_static("e457b5a2e4d86bd1"));
        h.insert("x-b3-sampled", HeaderValue::from_static("1"));
        let id = propagate(&mut h);
        assert_eq!(id.as_str(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(h["x-b3-parentspanid"], "e457b5a2e4d86bd1");
        assert_ne!(h["x-b3-spanid"], "e457b5a2e4d86bd1");
        assert!(h["traceparent"].to_str().unwrap().contains(id.as_str()));
    }

    #[test]
    fn ids_unique_to_a_request_are_never_indexed_by_hpack() {
        let sensitive = |h: &HeaderMap, name: &str| h[name].is_sensitive();
        let mut new = HeaderMap::new();
        propagate(&mut new);
        assert!(sensitive(&new, "x-request-id") && sensitive(&new, "traceparent"));

        let mut kept = HeaderMap::new();
        kept.insert("x-request-id", HeaderValue::from_static("abc"));
        kept.insert(
            "x-b3-traceid",
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7"),
        );
        kept.insert("x-b3-spanid", HeaderValue::from_static("e457b5a2e4d86bd1"));
        kept.insert("user-agent", HeaderValue::from_static("curl"));
        propagate(&mut kept);
        for name in [
            "x-request-id",
            "traceparent",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-parentspanid",
        ] {
            assert!(sensitive(&kept, name), "{name}");
        }
        assert_eq!(kept["x-request-id"], "abc");
        // What repeats from request to request is left to the table.
        assert!(!sensitive(&kept, "user-agent"));
    }

    #[test]
    fn ids_share_a_chunk_and_stay_intact_when_it_runs_out() {
        let values: Vec<HeaderValue> = (0..200)
            .map(|i| header_value(format!("{i:0>55}").as_bytes()))
            .collect();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(v.as_bytes(), format!("{i:0>55}").as_bytes());
        }
        let mut h = HeaderMap::new();
        propagate(&mut h);
        let copy = h.clone();
        assert_eq!(copy["x-request-id"], h["x-request-id"]);
        assert_eq!(copy["traceparent"], h["traceparent"]);
    }

    #[test]
    fn a_request_without_context_starts_a_trace() {
        let mut h = HeaderMap::new();
        let id = propagate(&mut h);
        assert_eq!(id.as_str().len(), 32);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(
            h["traceparent"]
                .to_str()
                .unwrap()
                .starts_with(&format!("00-{}-", id.as_str()))
        );
    }

    #[test]
    fn a_64_bit_b3_trace_is_padded_and_ids_are_lower_cased() {
        let mut h = HeaderMap::new();
        h.insert("x-b3-traceid", HeaderValue::from_static("A3CE929D0E0E4736"));
        let id = propagate(&mut h);
        assert_eq!(id.as_str(), "0000000000000000a3ce929d0e0e4736");
        // Not sampled by B3: the W3C flags say so too.
        assert!(h["traceparent"].to_str().unwrap().ends_with("-00"));

        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(
            propagate(&mut h).as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn invalid_context_starts_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736",
            "garbage",
        ] {
            let mut h = HeaderMap::new();
            h.insert("traceparent", HeaderValue::from_static(bad));
            let id = propagate(&mut h);
            assert!(!bad.contains(id.as_str()), "{bad} kept");
            let tp = h["traceparent"].to_str().unwrap();
            assert_eq!(tp.len(), 55, "{tp}");
            assert!(tp.starts_with(&format!("00-{}-", id.as_str())));
        }
    }

    #[test]
    fn a_request_id_is_kept_or_made_as_a_version_4_uuid() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("mine"));
        propagate(&mut h);
        assert_eq!(h["x-request-id"], "mine");

        let mut h = HeaderMap::new();
        propagate(&mut h);
        let id = h["x-request-id"].to_str().unwrap();
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{id}"
        );
        assert!(groups[2].starts_with('4'), "{id}");
        assert!(
            groups.concat().bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }

    #[test]
    fn propagating_allocates_nothing_once_its_thread_has_a_chunk() {
        // Each test runs on a thread of its own: this one's first IDs take its chunk.
        propagate(&mut HeaderMap::with_capacity(8));

        // An incoming W3C trace: a new traceparent and a new x-request-id, both in the chunk.
        let mut h = HeaderMap::with_capacity(8);
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let before = strait_alloc::allocations();
        let id = propagate(&mut h);
        assert_eq!(strait_alloc::allocations() - before, 0);
        assert_eq!(id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");

        // Cloning the headers (for a retry) copies the map (its indices and its entries), and
        // shares the values.
        let before = strait_alloc::allocations();
        let copy = h.clone();
        assert_eq!(strait_alloc::allocations() - before, 2);
        assert_eq!(copy["traceparent"], h["traceparent"]);
    }

    #[test]
    fn new_ids_are_random_over_every_digit() {
        let ids: Vec<TraceId> = (0..64).map(|_| propagate(&mut HeaderMap::new())).collect();
        let distinct: std::collections::HashSet<&str> = ids.iter().map(|i| i.as_str()).collect();
        assert_eq!(distinct.len(), ids.len());
        // Each of the 32 positions takes many values: no digit is left constant.
        for position in 0..32 {
            let values: std::collections::HashSet<u8> = ids.iter().map(|i| i.0[position]).collect();
            assert!(values.len() > 4, "position {position}: {values:?}");
        }
    }
}
