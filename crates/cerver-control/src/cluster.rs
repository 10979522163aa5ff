//! Cluster mode: several nodes share one Postgres store and any node answers any request.
//!
//! Every node registers itself in the store's `nodes` table and renews a lease there (the
//! heartbeat, see `serve.rs`); each sandbox record names the node that holds it. This module
//! answers the two questions the API's routing layer asks before a handler runs:
//!
//! - **where does sandbox X live?** ([`Cluster::locate`]): here, on a live node (forward the
//!   request to it), on a node whose lease ran out less than the grace period ago
//!   (`503 node_unavailable`), or nowhere (the handler's usual 404);
//! - **where should a new sandbox go?** ([`Cluster::place`]): here when this node has room and
//!   is not draining, else the least loaded live, undrained node with room.
//!
//! The node table is read at most once per [`NODES_TTL`] (a cached copy serves the requests in
//! between), and a sandbox's owner once per request for sandboxes not held here: a sandbox held
//! here never costs a database round trip to route.
//!
//! Node-to-node requests carry the cluster secret in [`SECRET_HEADER`]; a request with a wrong
//! one is refused, a request with the right one is served here and never forwarded again (no
//! loops), and its caller's daily request was already counted by the node that received it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use cerver_store::now_ms;
use cerver_store::{Node, Store};

use crate::ControlError;

/// The header in which a node forwards a request to another with the cluster secret.
pub const SECRET_HEADER: &str = "x-cerver-cluster-secret";
/// How long a read of the node table serves routing decisions.
pub const NODES_TTL: Duration = Duration::from_secs(1);
/// How long a label → node lookup (port proxy) is remembered.
const LABELS_TTL: Duration = Duration::from_secs(2);
/// How long a sandbox → node lookup is remembered, and how many sandbox or label lookups are
/// (then that memory starts over: a client sending random ids or labels must not grow it;
/// unknown ids are not remembered).
const OWNERS_TTL: Duration = Duration::from_secs(30);
const MAX_CACHED_OWNERS: usize = 100_000;

/// The settings of this node in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This node's name (unique in the cluster).
    pub node: String,
    /// Where the other nodes reach this node.
    pub advertise_url: String,
    /// What node-to-node requests carry; the same on every node.
    pub secret: String,
    /// How long after its lease ran out a node's sandboxes still answer 503 rather than 404
    /// (the lease itself is the grace period a dead node's sandboxes get: while it runs,
    /// forwarding to the node fails and answers 503).
    pub grace: Duration,
}

/// Where a sandbox lives, as far as routing a request for it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On this node (or nowhere: the handler answers 404).
    Here,
    /// On a live node, reached at this address.
    There { node: String, addr: SocketAddr },
    /// On a node whose lease has run out, within the grace period: 503 `node_unavailable`.
    Unavailable { node: String },
}

/// A node as routing sees it.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub name: String,
    pub addr: Option<SocketAddr>,
    /// Milliseconds since the epoch at which the lease runs out.
    pub lease_expires_at: i64,
    pub draining: bool,
    pub sandboxes: u64,
    pub capacity: u64,
}

impl NodeView {
    pub fn from_record(r: &Node) -> NodeView {
        NodeView {
            name: r.name.clone(),
            addr: r.advertise_url.as_deref().and_then(socket_addr_of),
            lease_expires_at: r.lease_expires_at,
            draining: r.draining,
            sandboxes: r.live_sandboxes,
            capacity: r.capacity.unwrap_or(u64::MAX),
        }
    }

    pub fn is_live(&self, now: i64) -> bool {
        self.lease_expires_at > now
    }

    fn has_room(&self) -> bool {
        self.sandboxes < self.capacity
    }
}

/// `host:port` of an `http://host:port[/]` advertise URL (names resolved once, at parse).
pub fn socket_addr_of(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&with_port)
        .ok()?
        .next()
}

/// Where a sandbox held by `owner` is routed at `now`, given the node table.
pub fn placement_of(
    owner: Option<&str>,
    me: &str,
    nodes: &[NodeView],
    now: i64,
    grace: Duration,
) -> Placement {
    let Some(owner) = owner else {
        return Placement::Here;
    };
    if owner == me {
        return Placement::Here;
    }
    let Some(node) = nodes.iter().find(|n| n.name == owner) else {
        return Placement::Here;
    };
    match node.addr {
        Some(addr) if node.is_live(now) => Placement::There {
            node: node.name.clone(),
            addr,
        },
        _ if now < node.lease_expires_at + grace.as_millis() as i64 => Placement::Unavailable {
            node: node.name.clone(),
        },
        // Beyond the grace period its sandboxes are terminated: the handler answers 404.
        _ => Placement::Here,
    }
}

/// Where a new sandbox goes: here when this node has room and is not draining, else the live,
/// undrained node with room and the fewest sandboxes (relative to its capacity); `None` when
/// no node has room.
pub fn choose_node<'a>(
    me: &str,
    here_has_room: bool,
    nodes: &'a [NodeView],
    now: i64,
) -> Option<&'a NodeView> {
    let usable = |n: &&NodeView| n.is_live(now) && !n.draining && n.addr.is_some();
    let me_usable = nodes
        .iter()
        .find(|n| n.name == me)
        .is_none_or(|n| !n.draining);
    if here_has_room && me_usable {
        return nodes.iter().find(|n| n.name == me);
    }
    nodes
        .iter()
        .filter(usable)
        .filter(|n| n.name != me && n.has_room())
        .min_by(|a, b| {
            let load = |n: &NodeView| n.sandboxes as f64 / n.capacity.max(1) as f64;
            load(a).total_cmp(&load(b)).then(a.name.cmp(&b.name))
        })
}

/// What a create should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Destination {
    Here,
    There(SocketAddr),
    /// No node has room (the handler's usual 429/503 path runs here).
    Nowhere,
}

/// This node's view of the cluster.
pub struct Cluster {
    cfg: ClusterConfig,
    store: Arc<dyn Store>,
    nodes: Mutex<Option<(Instant, Arc<Vec<NodeView>>)>>,
    labels: Mutex<HashMap<String, (Instant, Option<String>)>>,
    owners: Mutex<HashMap<String, (Instant, String)>>,
}

impl Cluster {
    pub fn new(cfg: ClusterConfig, store: Arc<dyn Store>) -> Arc<Cluster> {
        Arc::new(Cluster {
            cfg,
            store,
            nodes: Mutex::new(None),
            labels: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// Whether `presented` is the cluster secret (constant time).
    pub fn is_secret(&self, presented: &[u8]) -> bool {
        cerver_store::keys::constant_time_eq(presented, self.cfg.secret.as_bytes())
    }

    /// The node table, at most [`NODES_TTL`] old.
    pub async fn nodes(&self) -> Result<Arc<Vec<NodeView>>, ControlError> {
        if let Some((at, nodes)) = self.nodes.lock().unwrap().as_ref()
            && at.elapsed() < NODES_TTL
        {
            return Ok(nodes.clone());
        }
        let records = self
            .store
            .list_nodes()
            .await
            .map_err(crate::registry::store_err)?;
        let nodes = Arc::new(
            records
                .iter()
                .map(NodeView::from_record)
                .collect::<Vec<_>>(),
        );
        *self.nodes.lock().unwrap() = Some((Instant::now(), nodes.clone()));
        Ok(nodes)
    }

    /// Forgets the cached node table (after this node's own heartbeat, or a failed forward).
    pub fn forget_nodes(&self) {
        *self.nodes.lock().unwrap() = None;
    }

    /// Where the sandbox `id` (not held here) lives. A sandbox never moves to another node, so
    /// its holder is remembered for [`OWNERS_TTL`]: forwarding a run costs no database round
    /// trip in steady state (a sandbox deleted meanwhile answers 404 from its holder).
    pub async fn locate(&self, id: &str) -> Result<Placement, ControlError> {
        let cached = self
            .owners
            .lock()
            .unwrap()
            .get(id)
            .filter(|(at, _)| at.elapsed() < OWNERS_TTL)
            .map(|(_, node)| node.clone());
        let owner = match cached {
            Some(owner) => Some(owner),
            None => {
                let record = self
                    .store
                    .sandbox(id)
                    .await
                    .map_err(crate::registry::store_err)?;
                let owner = record
                    .filter(|r| r.deleted_at.is_none())
                    .and_then(|r| r.node);
                if let Some(node) = &owner {
                    let mut owners = self.owners.lock().unwrap();
                    if owners.len() >= MAX_CACHED_OWNERS {
                        owners.clear();
                    }
                    owners.insert(id.to_string(), (Instant::now(), node.clone()));
                }
                owner
            }
        };
        self.placement(owner.as_deref()).await
    }

    /// Where the live sandbox with port label `label` (not held here) lives.
    pub async fn locate_label(&self, label: &str) -> Result<Placement, ControlError> {
        let cached = self
            .labels
            .lock()
            .unwrap()
            .get(label)
            .filter(|(at, _)| at.elapsed() < LABELS_TTL)
            .map(|(_, node)| node.clone());
        let owner = match cached {
            Some(owner) => owner,
            None => {
                let owner = self
                    .store
                    .node_of_label(label)
                    .await
                    .map_err(crate::registry::store_err)?;
                // Port hosts need no key: a flood of made-up labels must neither grow this
                // memory without bound nor make every miss walk it.
                let mut labels = self.labels.lock().unwrap();
                if labels.len() >= MAX_CACHED_OWNERS {
                    labels.clear();
                }
                labels.insert(label.to_string(), (Instant::now(), owner.clone()));
                owner
            }
        };
        self.placement(owner.as_deref()).await
    }

    async fn placement(&self, owner: Option<&str>) -> Result<Placement, ControlError> {
        if owner.is_none_or(|o| o == self.cfg.node) {
            return Ok(Placement::Here);
        }
        let nodes = self.nodes().await?;
        let now = now_ms();
        let placement = placement_of(owner, &self.cfg.node, &nodes, now, self.cfg.grace);
        let dead = nodes
            .iter()
            .any(|n| Some(n.name.as_str()) == owner && !n.is_live(now));
        if placement == Placement::Here && dead {
            // Its node's lease has run out: end its sandboxes now rather than at the next
            // sweep, so that the 404 and the user's freed sandbox slot come together.
            self.sweep().await?;
        }
        Ok(placement)
    }

    /// Ends the sandboxes of nodes whose lease has run out (they answer 404 from then on and
    /// stop counting against their users' limits); how many.
    pub async fn sweep(&self) -> Result<u64, ControlError> {
        self.store
            .end_sandboxes_of_dead_nodes(&self.cfg.node, now_ms())
            .await
            .map_err(crate::registry::store_err)
    }

    /// Where a new sandbox goes, given whether this node has a free sandbox slot.
    pub async fn place(&self, here_has_room: bool) -> Result<Destination, ControlError> {
        let nodes = self.nodes().await?;
        Ok(
            match choose_node(&self.cfg.node, here_has_room, &nodes, now_ms()) {
                Some(n) if n.name == self.cfg.node => Destination::Here,
                Some(n) => n.addr.map_or(Destination::Here, Destination::There),
                None if here_has_room => Destination::Here,
                None => Destination::Nowhere,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, port: u16, lease: i64, draining: bool, sandboxes: u64) -> NodeView {
        NodeView {
            name: name.into(),
            addr: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            lease_expires_at: lease,
            draining,
            sandboxes,
            capacity: 10,
        }
    }

    const GRACE: Duration = Duration::from_secs(15);

    #[test]
    fn a_sandbox_is_routed_by_its_owners_lease() {
        let nodes = [node("a", 1, 2_000, false, 0), node("b", 2, 2_000, false, 0)];
        assert_eq!(
            placement_of(Some("a"), "a", &nodes, 1_000, GRACE),
            Placement::Here
        );
        assert_eq!(
            placement_of(None, "a", &nodes, 1_000, GRACE),
            Placement::Here
        );
        assert_eq!(
            placement_of(Some("b"), "a", &nodes, 1_000, GRACE),
            Placement::There {
                node: "b".into(),
                addr: SocketAddr::from(([127, 0, 0, 1], 2))
            }
        );
        // Lease ran out: 503 within the grace period, then the sandbox is gone (404 here).
        assert_eq!(
            placement_of(Some("b"), "a", &nodes, 2_000, GRACE),
            Placement::Unavailable { node: "b".into() }
        );
        assert_eq!(
            placement_of(Some("b"), "a", &nodes, 16_999, GRACE),
            Placement::Unavailable { node: "b".into() }
        );
        assert_eq!(
            placement_of(Some("b"), "a", &nodes, 17_000, GRACE),
            Placement::Here
        );
        // A node nobody registered: nothing to forward to.
        assert_eq!(
            placement_of(Some("zz"), "a", &nodes, 1_000, GRACE),
            Placement::Here
        );
    }

    #[test]
    fn creates_stay_here_with_room_else_go_to_the_least_loaded_live_node() {
        let nodes = [
            node("a", 1, 5_000, false, 10),
            node("b", 2, 5_000, false, 7),
            node("c", 3, 5_000, false, 3),
            node("d", 4, 5_000, true, 0),
            node("e", 5, 500, false, 0),
        ];
        let here = choose_node("a", true, &nodes, 1_000).unwrap();
        assert_eq!(here.name, "a");
        // Full here: c (fewest), never the draining d or the dead e.
        assert_eq!(choose_node("a", false, &nodes, 1_000).unwrap().name, "c");
        // Draining here: elsewhere even with room.
        assert_eq!(choose_node("d", true, &nodes, 1_000).unwrap().name, "c");
        // Nobody has room.
        let full = [
            node("a", 1, 5_000, false, 10),
            node("b", 2, 5_000, false, 10),
        ];
        assert!(choose_node("a", false, &full, 1_000).is_none());
    }

    #[test]
    fn advertise_urls_parse_to_socket_addresses() {
        assert_eq!(
            socket_addr_of("http://127.0.0.1:8080"),
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        assert_eq!(
            socket_addr_of("http://127.0.0.1:8080/"),
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        assert_eq!(
            socket_addr_of("http://[::1]:81"),
            Some("[::1]:81".parse().unwrap())
        );
        assert_eq!(socket_addr_of("https://127.0.0.1:1"), None);
        assert_eq!(socket_addr_of("ftp://x"), None);
    }
}
