//! The HTTP server loop: hyper's HTTP/1.1 connection builder over the axum router, with the
//! bounds `axum::serve` lacks (issue 16) and a graceful shutdown with a grace period (issue 15).
//!
//! - A server-wide cap on open connections: past it, a new connection is closed at accept,
//!   before it costs more than its socket for an instant.
//! - A header-read timeout (hyper's): a client that opens a connection and sends no complete
//!   request head in time is disconnected.
//! - An idle timeout: a keep-alive connection with no request in flight and no byte moving for
//!   that long is closed; a request body that stalls that long fails (tower-http's per-frame
//!   body timeout), so a slow-body client cannot hold a handler forever.
//! - Shutdown: once `shutdown` resolves, the listener closes and every connection is asked
//!   to close gracefully (idle ones at once, busy ones after their response). The caller gets
//!   a [`Drain`] to wait for them up to its grace period and then force the rest closed.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::Service as _;

/// The server's connection bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// What is left once the listener has closed: the open connections.
pub struct Drain {
    conns: Arc<Semaphore>,
    max: usize,
    force: watch::Sender<bool>,
}

impl Drain {
    /// Waits until every connection has closed or `within` has passed; true when all closed.
    pub async fn wait(&self, within: Duration) -> bool {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        tokio::time::timeout(within, self.conns.acquire_many(all))
            .await
            .is_ok()
    }

    /// Closes every connection still open, whatever it is doing.
    pub fn force_close(&self) {
        self.force.send_replace(true);
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; returns the connections to drain.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Drain {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let conns = Arc::new(Semaphore::new(max));
    let (stop, _) = watch::channel(false);
    let (force, _) = watch::channel(false);
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.idle_timeout,
    ));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of fds (EMFILE/ENFILE) or a connection reset before accept: wait a
                // moment instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection cap reached: closing a new connection");
            continue;
        };
        let conn = connection(
            stream,
            peer,
            app.clone(),
            limits,
            stop.subscribe(),
            force.subscribe(),
        );
        tokio::spawn(async move {
            conn.await;
            drop(permit);
        });
    }
    drop(listener);
    stop.send_replace(true);
    Drain { conns, max, force }
}

/// Serves one connection until it ends, is idle too long, or shutdown closes it.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    mut force: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let in_flight = Arc::new(AtomicUsize::new(0));
    let io = TokioIo::new(Tracked {
        io: stream,
        activity: activity.clone(),
    });
    let counter = in_flight.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        let busy = InFlight::enter(&counter);
        async move {
            let response = app.call(req.map(Body::new)).await;
            drop(busy);
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let idle = async {
        loop {
            activity.idle_for(limits.idle_timeout).await;
            if in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            activity.touch();
        }
    };
    tokio::select! {
        r = conn.as_mut() => return log_end(peer, r),
        () = idle => {}
        _ = stop.wait_for(|s| *s) => {}
        _ = force.wait_for(|f| *f) => return,
    }
    // Graceful: an idle connection closes now, a busy one after its response.
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        r = conn => log_end(peer, r),
        _ = force.wait_for(|f| *f) => {}
    }
}

fn log_end(peer: SocketAddr, r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        tracing::debug!(%peer, "connection: {e}");
    }
}

/// Counts a request from its arrival to its response head.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When a byte last moved through a connection.
struct Activity {
    since: Instant,
    /// Milliseconds from `since` to the last byte read or written.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
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

/// A client connection, noting in [`Activity`] every byte read or written.
struct Tracked {
    io: TcpStream,
    activity: Arc<Activity>,
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: every sandbox, pipe and proxied
/// connection costs descriptors, and the usual soft default (1,024) is far below what the
/// connection cap allows.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("could not raise the open-file limit to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("could not read the open-file limit: {e}"),
    }
}
