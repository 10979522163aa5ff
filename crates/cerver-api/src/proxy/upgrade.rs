//! A WebSocket (or any `Upgrade`) the sandbox's server accepted: both upgraded connections
//! are joined until either side closes or the exchange's guard ends it.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::guard::Guard;

/// Spawns the task that joins the client's upgraded connection with the upstream's once both
/// hand-overs complete; `guard` (and its slots) lives as long as that task.
pub(super) fn join(
    client_upgrade: OnUpgrade,
    response: &mut hyper::Response<Incoming>,
    guard: Arc<Guard>,
    target: SocketAddr,
) {
    let upstream_upgrade = hyper::upgrade::on(response);
    tokio::spawn(async move {
        let (client, upstream) = match tokio::join!(client_upgrade, upstream_upgrade) {
            (Ok(c), Ok(u)) => (c, u),
            (c, u) => {
                tracing::debug!(%target, client_ok = c.is_ok(), upstream_ok = u.is_ok(), "proxy: upgrade failed");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = r {
                    tracing::debug!(%target, "proxy: upgraded connection: {e}");
                }
            }
            _ = guard.ended_or_idle() => {}
        }
    });
}
