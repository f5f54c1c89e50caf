//! Writes an HTTP/2 connection makes in one turn of its task, gathered into one. The `h2`
//! crate writes a large data frame's payload straight from its buffer (vectored, no copy) and
//! flushes it before it takes the next frame: a gRPC response's data and then its trailers were
//! two writes — two TLS records, two system calls, two wake-ups of the peer — and so were the
//! frames of several streams answered in one turn. Gathered here, what a turn wrote goes out in
//! one write when the connection next reads, which it does (woken for it) before it waits.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most a turn gathers; beyond it what was gathered is written first, and a write larger
/// than this goes straight through (a large body is not copied).
const GATHER_LIMIT: usize = 64 * 1024;
/// Room kept once everything is written; a larger buffer (a burst's) is given back, so that
/// many idle connections do not each hold one.
const KEPT_CAPACITY: usize = 8 * 1024;

/// `io` with its writes gathered until the connection's task reads again (or is shut down).
pub struct Gathered<T> {
    io: T,
    out: BytesMut,
    /// The task was woken to write `out` in its next turn.
    woken: bool,
    /// The socket took no more when `out` was last written: a flush waits for it.
    blocked: bool,
}

impl<T> Gathered<T> {
    pub fn new(io: T) -> Gathered<T> {
        Gathered {
            io,
            out: BytesMut::new(),
            woken: false,
            blocked: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> Gathered<T> {
    /// Writes everything gathered and flushes it (a TLS stream's records too).
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let gathered = self.out.len();
        while !self.out.is_empty() {
            let n = match Pin::new(&mut self.io).poll_write(cx, &self.out) {
                Poll::Pending => {
                    self.blocked = true;
                    return Poll::Pending;
                }
                Poll::Ready(n) => n?,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        if gathered > KEPT_CAPACITY {
            // Its allocation is at least that large (emptied, it is kept for reuse).
            self.out = BytesMut::new();
        }
        self.blocked = false;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Room for `len` more bytes: what was gathered is written first when they would not fit.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if !self.out.is_empty() && self.out.len() + len > GATHER_LIMIT {
            ready!(self.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Gathered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.woken = false;
        // The last turn's writes go out before the task waits for the peer. A full socket
        // wakes the task when it drains, and the connection reads meanwhile.
        if !this.out.is_empty()
            && let Poll::Ready(Err(e)) = this.poll_write_out(cx)
        {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gathered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_room(cx, buf.len()))?;
        if this.out.is_empty() && buf.len() > GATHER_LIMIT {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let len = bufs.iter().map(|b| b.len()).sum();
        ready!(this.poll_room(cx, len))?;
        if this.out.is_empty() && len > GATHER_LIMIT {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.out.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Deferred to the task's next turn, which this wakes; a flush while the socket is full
    /// waits for it, so a connection that cannot write is not woken round and round.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.out.is_empty() {
            return Pin::new(&mut this.io).poll_flush(cx);
        }
        if this.blocked {
            return this.poll_write_out(cx);
        }
        if !this.woken {
            this.woken = true;
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// `io` counting the writes made on it (tests count what reaches a peer in how many writes).
#[cfg(test)]
pub(crate) struct CountedWrites<T> {
    io: T,
    pub writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[cfg(test)]
impl<T> CountedWrites<T> {
    pub fn new(io: T) -> CountedWrites<T> {
        CountedWrites {
            io,
            writes: Default::default(),
        }
    }

    fn counted(&self, done: &Poll<io::Result<usize>>) {
        if matches!(done, Poll::Ready(Ok(n)) if *n > 0) {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
impl<T: AsyncRead + Unpin> AsyncRead for CountedWrites<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

#[cfg(test)]
impl<T: AsyncWrite + Unpin> AsyncWrite for CountedWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut self.io).poll_write(cx, buf);
        self.counted(&done);
        done
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.counted(&done);
        done
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair(
        capacity: usize,
    ) -> (
        Gathered<CountedWrites<tokio::io::DuplexStream>>,
        tokio::io::DuplexStream,
        Arc<AtomicUsize>,
    ) {
        let (ours, theirs) = tokio::io::duplex(capacity);
        let io = CountedWrites::new(ours);
        let writes = io.writes.clone();
        (Gathered::new(io), theirs, writes)
    }

    /// One turn's writes and flushes become one write, made when the task reads next — which
    /// the flush woke it for.
    #[tokio::test]
    async fn a_turns_writes_go_out_together_when_the_task_reads_next() {
        let (mut gathered, mut peer, writes) = pair(1 << 20);
        let woken = std::future::poll_fn(|cx| {
            let mut g = Pin::new(&mut gathered);
            for part in [&b"headers"[..], b"data", b"trailers"] {
                assert!(matches!(
                    g.as_mut().poll_write(cx, part),
                    Poll::Ready(Ok(_))
                ));
                assert!(matches!(g.as_mut().poll_flush(cx), Poll::Ready(Ok(()))));
            }
            Poll::Ready(())
        });
        woken.await;
        assert_eq!(
            writes.load(Ordering::Relaxed),
            0,
            "nothing written in the turn"
        );
        // The next turn reads: the gathered writes go out first, as one.
        let mut buf = [0u8; 8];
        let read = std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf);
            let _ = Pin::new(&mut gathered).poll_read(cx, &mut rb);
            Poll::Ready(())
        });
        read.await;
        assert_eq!(writes.load(Ordering::Relaxed), 1);
        let mut got = vec![0u8; 19];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"headersdatatrailers");
    }

    /// A flush wakes the task so that its next turn writes; shutting down writes what is left.
    #[tokio::test]
    async fn a_flush_wakes_the_task_and_shutdown_writes_the_rest() {
        let (mut gathered, mut peer, writes) = pair(1 << 20);
        let waker = Arc::new(CountingWaker::default());
        let w = std::task::Waker::from(waker.clone());
        let mut cx = Context::from_waker(&w);
        let mut g = Pin::new(&mut gathered);
        assert!(matches!(
            g.as_mut().poll_write(&mut cx, b"one"),
            Poll::Ready(Ok(3))
        ));
        assert!(matches!(
            g.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert!(matches!(
            g.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(
            waker.wakes.load(Ordering::Relaxed),
            1,
            "woken once per turn"
        );
        gathered.shutdown().await.unwrap();
        assert_eq!(writes.load(Ordering::Relaxed), 1);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"one");
    }

    /// A peer that does not read holds the writer back: past the limit a write waits, and a
    /// flush then waits for room instead of waking the task round and round.
    #[tokio::test]
    async fn a_full_socket_holds_back_the_writer() {
        let (mut gathered, mut peer, _) = pair(1024);
        let chunk = vec![7u8; 16 * 1024];
        let mut accepted = 0;
        let stuck = std::future::poll_fn(|cx| {
            let mut g = Pin::new(&mut gathered);
            loop {
                match g.as_mut().poll_write(cx, &chunk) {
                    Poll::Ready(Ok(n)) => accepted += n,
                    Poll::Ready(Err(e)) => panic!("{e}"),
                    Poll::Pending => break,
                }
            }
            Poll::Ready(g.as_mut().poll_flush(cx).is_pending())
        })
        .await;
        assert!(stuck, "the flush waits for the socket");
        assert!(
            accepted <= GATHER_LIMIT + chunk.len(),
            "{accepted} bytes taken"
        );
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).await.unwrap();
            all.len()
        });
        gathered.shutdown().await.unwrap();
        drop(gathered);
        assert_eq!(reader.await.unwrap(), accepted);
    }

    #[derive(Default)]
    struct CountingWaker {
        wakes: AtomicUsize,
    }

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::Relaxed);
        }
    }
}
