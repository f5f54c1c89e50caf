//! Telling HTTP/2 from HTTP/1.1 on a new connection: HTTP/2 starts with a fixed 24-byte
//! preface (RFC 9113 §3.4), which no HTTP/1.1 request line can. The bytes read to tell are
//! given back in front of the rest ([`Rewind`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes seen either are the whole preface or stop matching it (the first
/// byte, for an HTTP/1.1 request): those bytes, and whether they are the preface.
pub async fn preface<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<(Vec<u8>, bool)> {
    let mut seen = [0u8; 24];
    let mut n = 0;
    while n < PREFACE.len() {
        let read = io.read(&mut seen[n..]).await?;
        if read == 0 {
            break;
        }
        n += read;
        if seen[..n] != PREFACE[..n] {
            return Ok((seen[..n].to_vec(), false));
        }
    }
    Ok((seen[..n].to_vec(), n == PREFACE.len()))
}

/// A connection whose first bytes were already read: those are read again first.
pub struct Rewind<I> {
    seen: Vec<u8>,
    at: usize,
    inner: I,
}

impl<I> Rewind<I> {
    pub fn new(seen: Vec<u8>, inner: I) -> Rewind<I> {
        Rewind { seen, at: 0, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.seen.len() {
            let left = &this.seen[this.at..];
            let n = left.len().min(buf.remaining());
            buf.put_slice(&left[..n]);
            this.at += n;
            if this.at == this.seen.len() {
                this.seen = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn sniffed(sent: &'static [&'static [u8]]) -> (Vec<u8>, bool, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            for piece in sent {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let (seen, http2) = preface(&mut server).await.unwrap();
        let mut all = Vec::new();
        Rewind::new(seen.clone(), server)
            .read_to_end(&mut all)
            .await
            .unwrap();
        (seen, http2, all)
    }

    #[tokio::test]
    async fn http2s_preface_is_told_from_http11_and_every_byte_is_read_again() {
        let (seen, http2, all) = sniffed(&[b"GET / HTTP/1.1\r\n\r\n"]).await;
        assert!(!http2);
        assert!(seen.len() <= 24);
        assert_eq!(all, b"GET / HTTP/1.1\r\n\r\n");
        // The preface in pieces, then a frame.
        let (seen, http2, all) =
            sniffed(&[b"PRI * HTTP/2", b".0\r\n\r\nSM\r\n\r\n", b"frame"]).await;
        assert!(http2);
        assert_eq!(seen, PREFACE);
        assert_eq!(all, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nframe");
        // Close to the preface, but not it; and a connection closed early.
        let (_, http2, all) = sniffed(&[b"PRI * HTTP/1.1\r\n\r\n"]).await;
        assert!(!http2);
        assert_eq!(all, b"PRI * HTTP/1.1\r\n\r\n");
        let (_, http2, all) = sniffed(&[b"PRI * HT"]).await;
        assert!(!http2);
        assert_eq!(all, b"PRI * HT");
    }
}
