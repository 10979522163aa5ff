//! What keeps a forwarded exchange's connection slots and decides when it must end: its
//! sandbox ended, the server is shutting down, or no byte moved for the idle timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;

/// How often a proxied exchange checks that its sandbox still lives (a deleted sandbox's
/// network vanishes without closing connections, so they would otherwise hang).
const LIVENESS_POLL: Duration = Duration::from_secs(1);

/// What keeps an exchange's resources (its connection slots) and knows when it must end.
pub(super) struct Guard {
    pub(super) _permits: [Option<OwnedSemaphorePermit>; 2],
    pub(super) alive: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    pub(super) closing: Option<watch::Receiver<bool>>,
    pub(super) idle_timeout: Duration,
    pub(super) activity: Arc<Activity>,
}

impl Guard {
    /// Resolves once the sandbox has ended or the server starts shutting down.
    pub(super) async fn ended(&self) {
        tokio::select! {
            _ = self.sandbox_ended() => {}
            _ = self.shutting_down() => {}
        }
    }

    /// [`Guard::ended`], or no byte moved through the upstream connection (the only way
    /// anything goes between client and sandbox) for the idle timeout.
    pub(super) async fn ended_or_idle(&self) {
        tokio::select! {
            _ = self.ended() => {}
            _ = self.activity.idle_for(self.idle_timeout) => {}
        }
    }

    /// Never resolves without a liveness check.
    async fn sandbox_ended(&self) {
        let Some(alive) = &self.alive else {
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval(LIVENESS_POLL);
        loop {
            tick.tick().await;
            if !alive() {
                return;
            }
        }
    }

    /// Never resolves without a `closing` watch (or once its sender is gone).
    async fn shutting_down(&self) {
        let Some(closing) = &self.closing else {
            return std::future::pending().await;
        };
        if closing.clone().wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// When a byte last moved through an upstream connection.
pub(super) struct Activity {
    since: Instant,
    /// Milliseconds from `since` to the last byte read or written.
    last_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub(super) fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// The upstream connection, noting in [`Activity`] every byte read or written.
pub(super) struct Tracked {
    pub(super) io: TcpStream,
    pub(super) activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
