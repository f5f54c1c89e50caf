//! Protocol detection from a connection's first bytes, pure: a TLS ClientHello (with its server
//! name and ALPN), the HTTP/2 prior-knowledge preface, an HTTP/1 request line, or anything else
//! (opaque TCP). Says when it needs more bytes to decide.

/// What the first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    Tls {
        server_name: Option<String>,
        alpn: Vec<String>,
    },
    /// HTTP/2 with prior knowledge (`h2c`).
    Http2,
    Http1,
    Opaque,
}

impl Detected {
    /// The transport protocol as filter chains name it.
    pub fn transport(&self) -> &'static str {
        match self {
            Detected::Tls { .. } => "tls",
            _ => "raw_buffer",
        }
    }

    /// Application protocols as filter chains name them.
    pub fn application_protocols(&self) -> Vec<String> {
        match self {
            Detected::Tls { alpn, .. } => alpn.clone(),
            Detected::Http2 => vec!["h2c".into()],
            Detected::Http1 => vec!["http/1.1".into()],
            Detected::Opaque => vec![],
        }
    }
}

pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
/// Enough to read any ClientHello we accept.
pub const MAX_PEEK: usize = 16 * 1024 + 5;

/// `None`: the bytes so far could still be more than one thing; read more (or give up and call
/// it opaque after the detection timeout).
pub fn detect(bytes: &[u8]) -> Option<Detected> {
    if bytes.is_empty() {
        return None;
    }
    if bytes[0] == 0x16 {
        return match client_hello(bytes) {
            Hello::Incomplete => None,
            Hello::Parsed { server_name, alpn } => Some(Detected::Tls { server_name, alpn }),
            Hello::NotTls => Some(Detected::Opaque),
        };
    }
    let could_be = |pattern: &[u8]| {
        let n = pattern.len().min(bytes.len());
        bytes[..n] == pattern[..n]
    };
    if could_be(H2_PREFACE) {
        return (bytes.len() >= H2_PREFACE.len()).then_some(Detected::Http2);
    }
    let mut undecided = false;
    for m in METHODS {
        if could_be(m) {
            if bytes.len() >= m.len() {
                return Some(Detected::Http1);
            }
            undecided = true;
        }
    }
    if undecided {
        None
    } else {
        Some(Detected::Opaque)
    }
}

enum Hello {
    Incomplete,
    NotTls,
    Parsed {
        server_name: Option<String>,
        alpn: Vec<String>,
    },
}

/// A little cursor that fails softly.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = self.u8()?;
        self.take(n).map(|b| Reader { b })
    }
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = self.u16()?;
        self.take(n).map(|b| Reader { b })
    }
}

fn client_hello(bytes: &[u8]) -> Hello {
    if bytes.len() < 5 {
        return Hello::Incomplete;
    }
    if bytes[1] != 0x03 {
        return Hello::NotTls;
    }
    let record_len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
    if record_len > 16 * 1024 {
        return Hello::NotTls;
    }
    if bytes.len() < 5 + record_len {
        return Hello::Incomplete;
    }
    parse_hello(&bytes[5..5 + record_len]).unwrap_or(Hello::NotTls)
}

fn parse_hello(record: &[u8]) -> Option<Hello> {
    let mut r = Reader { b: record };
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let len = r.u24()?;
    let mut r = Reader { b: r.take(len)? };
    r.take(2 + 32)?; // version, random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut server_name = None;
    let mut alpn = Vec::new();
    let Some(mut exts) = r.vec16() else {
        return Some(Hello::Parsed { server_name, alpn });
    };
    while !exts.b.is_empty() {
        let kind = exts.u16()?;
        let mut body = exts.vec16()?;
        match kind {
            0 => {
                let mut list = body.vec16()?;
                while !list.b.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 {
                        server_name = std::str::from_utf8(name.b).ok().map(str::to_string);
                    }
                }
            }
            16 => {
                let mut list = body.vec16()?;
                while !list.b.is_empty() {
                    let proto = list.vec8()?;
                    alpn.push(String::from_utf8_lossy(proto.b).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(Hello::Parsed { server_name, alpn })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a minimal, well-formed ClientHello record.
    fn hello(sni: Option<&str>, alpn: &[&str]) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(name) = sni {
            let mut list = vec![0u8];
            list.extend((name.len() as u16).to_be_bytes());
            list.extend(name.as_bytes());
            let mut body = (list.len() as u16).to_be_bytes().to_vec();
            body.extend(list);
            exts.extend(0u16.to_be_bytes());
            exts.extend((body.len() as u16).to_be_bytes());
            exts.extend(body);
        }
        if !alpn.is_empty() {
            let mut list = Vec::new();
            for p in alpn {
                list.push(p.len() as u8);
                list.extend(p.as_bytes());
            }
            let mut body = (list.len() as u16).to_be_bytes().to_vec();
            body.extend(list);
            exts.extend(16u16.to_be_bytes());
            exts.extend((body.len() as u16).to_be_bytes());
            exts.extend(body);
        }
        let mut hs = vec![3, 3];
        hs.extend([0u8; 32]);
        hs.push(0); // session id
        hs.extend(2u16.to_be_bytes());
        hs.extend([0x13, 0x01]);
        hs.extend([1, 0]); // compression
        hs.extend((exts.len() as u16).to_be_bytes());
        hs.extend(exts);
        let mut msg = vec![1];
        msg.extend(&(hs.len() as u32).to_be_bytes()[1..]);
        msg.extend(hs);
        let mut rec = vec![0x16, 3, 1];
        rec.extend((msg.len() as u16).to_be_bytes());
        rec.extend(msg);
        rec
    }

    #[test]
    fn tls_server_name_and_alpn() {
        let h = hello(
            Some("outbound_.9080_._.reviews.bookinfo.svc.cluster.local"),
            &["istio", "h2"],
        );
        assert_eq!(
            detect(&h),
            Some(Detected::Tls {
                server_name: Some("outbound_.9080_._.reviews.bookinfo.svc.cluster.local".into()),
                alpn: vec!["istio".into(), "h2".into()],
            })
        );
        // Every prefix of it asks for more.
        for n in 1..h.len() {
            assert_eq!(detect(&h[..n]), None, "at {n} bytes");
        }
        assert_eq!(
            detect(&hello(None, &[])),
            Some(Detected::Tls {
                server_name: None,
                alpn: vec![]
            })
        );
    }

    #[test]
    fn http_versions_and_opaque_bytes() {
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(detect(b"OPTIONS * HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(detect(b"PO"), None);
        assert_eq!(detect(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(detect(H2_PREFACE), Some(Detected::Http2));
        assert_eq!(detect(b"\x00\x00\x00\x01hello"), Some(Detected::Opaque));
        assert_eq!(detect(b"GETX"), Some(Detected::Opaque));
        assert_eq!(detect(b"\x16\x01garbage"), Some(Detected::Opaque));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(42);
        let base = hello(Some("a.b"), &["h2"]);
        for _ in 0..20_000 {
            let mut b = base.clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..b.len());
                b[i] = rng.u8(..);
            }
            b.truncate(rng.usize(1..=b.len()));
            let _ = detect(&b);
        }
    }
}
