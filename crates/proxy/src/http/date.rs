//! The `Date` header value of the current second (RFC 9110 §6.6.1), formatted once a second
//! per worker thread rather than once a response.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

thread_local! {
    static CACHED: RefCell<(u64, HeaderValue)> =
        const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
}

/// The current time as a `Date` header value.
pub fn now() -> HeaderValue {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            if let Ok(v) = HeaderValue::from_str(&text) {
                *cached = (second, v);
            }
        }
        cached.1.clone()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_date_is_an_http_date_of_now() {
        let v = super::now();
        let parsed = httpdate::parse_http_date(v.to_str().unwrap()).unwrap();
        let off = std::time::SystemTime::now()
            .duration_since(parsed)
            .unwrap_or_default();
        assert!(off.as_secs() <= 1, "{v:?}");
        assert_eq!(super::now(), v, "the same second, the same value");
    }
}
