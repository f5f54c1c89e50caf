//! Trace context: W3C `traceparent` and B3 headers are propagated; a request that arrives with
//! neither gets a new `traceparent`, and every hop gets a new span ID as Envoy's tracer does.
//! `x-request-id` is kept or created.

use http::HeaderMap;
use http::header::HeaderValue;

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn random_hex(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| fastrand::u8(..)).collect();
    hex(&bytes)
}

/// The trace ID of a request, after making sure it carries trace context.
pub fn propagate(headers: &mut HeaderMap) -> String {
    if headers.get("x-request-id").is_none()
        && let Ok(v) = HeaderValue::from_str(&uuid_like())
    {
        headers.insert("x-request-id", v);
    }
    // W3C: version-traceid-parentid-flags; a new span ID for this hop.
    let parsed = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    let (trace_id, flags) = match parsed {
        Some((t, f)) => (t, f),
        None => match headers.get("x-b3-traceid").and_then(|v| v.to_str().ok()) {
            // Continue a B3 trace in W3C form too (128-bit IDs; 64-bit ones left-padded).
            Some(b3) if b3.len() == 32 || b3.len() == 16 => (
                format!("{b3:0>32}").to_ascii_lowercase(),
                if headers.get("x-b3-sampled").is_some_and(|v| v == "1") {
                    "01".to_string()
                } else {
                    "00".to_string()
                },
            ),
            _ => (random_hex(16), "01".to_string()),
        },
    };
    let span = random_hex(8);
    if let Ok(v) = HeaderValue::from_str(&format!("00-{trace_id}-{span}-{flags}")) {
        headers.insert("traceparent", v);
    }
    if headers.contains_key("x-b3-traceid") {
        if let Some(parent) = headers.get("x-b3-spanid").cloned() {
            headers.insert("x-b3-parentspanid", parent);
        }
        if let Ok(v) = HeaderValue::from_str(&span) {
            headers.insert("x-b3-spanid", v);
        }
    }
    trace_id
}

fn parse_traceparent(v: &str) -> Option<(String, String)> {
    let mut it = v.trim().split('-');
    let version = it.next()?;
    let trace = it.next()?;
    let _parent = it.next()?;
    let flags = it.next()?;
    let ok = version.len() == 2
        && trace.len() == 32
        && trace.bytes().all(|b| b.is_ascii_hexdigit())
        && trace != "00000000000000000000000000000000"
        && flags.len() == 2;
    ok.then(|| (trace.to_ascii_lowercase(), flags.to_string()))
}

fn uuid_like() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[16..20],
        &h[20..32]
    )
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
        assert_eq!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
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
        assert_eq!(id, "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(h["x-b3-parentspanid"], "e457b5a2e4d86bd1");
        assert_ne!(h["x-b3-spanid"], "e457b5a2e4d86bd1");
        assert!(h["traceparent"].to_str().unwrap().contains(&id));
    }

    #[test]
    fn a_request_without_context_starts_a_trace() {
        let mut h = HeaderMap::new();
        let id = propagate(&mut h);
        assert_eq!(id.len(), 32);
        assert!(
            h["traceparent"]
                .to_str()
                .unwrap()
                .starts_with(&format!("00-{id}-"))
        );
    }
}
