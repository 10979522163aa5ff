//! Nodes (issue 11) and the limits across nodes: each `async fn(Db)` here runs on both backends
//! (listed in `both!` in `store.rs`).

use std::sync::Arc;

use cerver_store::{NodeInfo, Store, StoreError, now_ms, utc_day};

use super::{HOUR, sandbox, user};
use crate::common::{Backend, Db};

const LEASE: i64 = 15_000;

fn info(name: &str, url: &str, capacity: Option<u64>) -> NodeInfo {
    NodeInfo {
        name: name.to_owned(),
        advertise_url: Some(url.to_owned()),
        capacity,
    }
}

pub async fn nodes_register_renew_their_lease_and_drain(db: Db) {
    let store = db.open().await;
    assert!(store.list_nodes().await.unwrap().is_empty());
    let t0 = 1_000_000;
    let a = store
        .register_node(&info("a", "http://10.0.0.1:8080", Some(50)), t0, LEASE)
        .await
        .unwrap();
    assert_eq!(
        (a.started_at, a.heartbeat_at, a.lease_expires_at),
        (t0, t0, t0 + LEASE)
    );
    assert_eq!(
        (a.draining, a.live_sandboxes, a.capacity),
        (false, 0, Some(50))
    );
    assert!(a.is_alive(t0 + LEASE - 1) && !a.is_alive(t0 + LEASE));
    store
        .register_node(&info("b", "http://10.0.0.2:8080", None), t0, LEASE)
        .await
        .unwrap();

    let beat = store
        .heartbeat_node("a", t0 + 5_000, LEASE, 7)
        .await
        .unwrap();
    assert_eq!(beat.lease_expires_at, t0 + 5_000 + LEASE);
    assert_eq!((beat.live_sandboxes, beat.started_at), (7, t0));

    let drained = store.set_node_draining("a", true).await.unwrap();
    assert!(drained.draining);
    let nodes = store.list_nodes().await.unwrap();
    let names: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(nodes[0], drained);
    assert_eq!(nodes[1].capacity, None);

    // A restart re-registers: new start, URL and capacity, load back to zero, still drained.
    let again = store
        .register_node(
            &info("a", "http://10.0.0.9:8080", Some(10)),
            t0 + 60_000,
            LEASE,
        )
        .await
        .unwrap();
    assert_eq!(again.started_at, t0 + 60_000);
    assert_eq!(again.advertise_url.as_deref(), Some("http://10.0.0.9:8080"));
    assert_eq!(
        (again.live_sandboxes, again.capacity, again.draining),
        (0, Some(10), true)
    );
    assert!(!store.set_node_draining("a", false).await.unwrap().draining);

    // Unknown nodes are an error, not a silent no-op.
    assert!(matches!(
        store.set_node_draining("nope", true).await,
        Err(StoreError::NodeNotFound(name)) if name == "nope"
    ));
    assert!(matches!(
        store.heartbeat_node("nope", t0, LEASE, 0).await,
        Err(StoreError::NodeNotFound(_))
    ));
}

pub async fn sandboxes_belong_to_the_node_that_recorded_them(db: Db) {
    let a = db.open_as(2, Some("node-a")).await;
    let b = db.open_as(2, Some("node-b")).await;
    let admin = db.open_as(2, None).await;
    let alice = user(&*a, "alice@example.com").await;
    let now = now_ms();
    let on_a = a
        .try_insert_sandbox_if_below(sandbox("sb-a", &alice.id, now, now + HOUR), 5, now)
        .await
        .unwrap();
    assert_eq!(on_a.node.as_deref(), Some("node-a"));
    let on_b = b
        .insert_sandbox(sandbox("sb-b", &alice.id, now, now + HOUR))
        .await
        .unwrap();
    assert_eq!(on_b.node.as_deref(), Some("node-b"));
    assert_eq!(admin.sandbox("sb-a").await.unwrap(), Some(on_a));
    assert_eq!(admin.sandbox("sb-b").await.unwrap(), Some(on_b));

    let left = |store: Arc<dyn Store>| async move {
        let mut ids: Vec<String> = store
            .sandboxes_left_active()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(left(admin.clone()).await, ["sb-a", "sb-b"]);
    match db.backend {
        // A restarting node reaps only its own sandboxes: the others are alive elsewhere.
        Backend::Postgres => {
            assert_eq!(left(a.clone()).await, ["sb-a"]);
            assert_eq!(left(b.clone()).await, ["sb-b"]);
        }
        // A SQLite database belongs to one server, whatever it was called.
        Backend::Sqlite => assert_eq!(left(a.clone()).await, ["sb-a", "sb-b"]),
    }
}

/// The issue's example: 150 parallel requests on a fresh trial key spread over three nodes
/// (three pools) admit exactly 100.
pub async fn quota_is_exact_across_three_nodes(db: Db) {
    let nodes = [
        db.open_as(6, Some("n1")).await,
        db.open_as(6, Some("n2")).await,
        db.open_as(6, Some("n3")).await,
    ];
    let alice = user(&*nodes[0], "alice@example.com").await;
    let day = utc_day(now_ms());
    let tasks: Vec<_> = (0..150)
        .map(|i| {
            let store = nodes[i % 3].clone();
            let id = alice.id.clone();
            tokio::spawn(async move { store.try_consume_request(&id, day, 100).await })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(StoreError::QuotaExceeded { limit: 100 }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(admitted, 100);
    assert_eq!(nodes[2].requests_on(&alice.id, day).await.unwrap(), 100);
}

/// A trial user (one sandbox at a time) creating on three nodes at once gets one sandbox;
/// resuming a paused one on another node at the same moment cannot make it two either.
pub async fn one_sandbox_slot_claimed_on_three_nodes_at_once_goes_once(db: Db) {
    let nodes = [
        db.open_as(4, Some("n1")).await,
        db.open_as(4, Some("n2")).await,
        db.open_as(4, Some("n3")).await,
    ];
    let alice = user(&*nodes[0], "alice@example.com").await;
    let now = now_ms();
    nodes[0]
        .insert_sandbox(sandbox("paused", &alice.id, now, now + HOUR))
        .await
        .unwrap();
    assert!(
        nodes[0]
            .set_sandbox_paused("paused", r#"{"paused":{}}"#, now + HOUR)
            .await
            .unwrap()
    );
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = nodes[i % 3].clone();
        let (id, user_id) = (format!("sb-{i}"), alice.id.clone());
        tasks.push(tokio::spawn(async move {
            if i % 4 == 3 {
                store
                    .try_resume_sandbox_if_below("paused", &user_id, 1, now, "{}", now + HOUR)
                    .await
            } else {
                let new = sandbox(&id, &user_id, now, now + HOUR);
                store
                    .try_insert_sandbox_if_below(new, 1, now)
                    .await
                    .map(|_| true)
            }
        }));
    }
    let mut claimed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(true) => claimed += 1,
            Ok(false) => panic!("the paused sandbox exists"),
            Err(StoreError::SandboxLimit { limit: 1 }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(claimed, 1);
    assert_eq!(
        nodes[1].active_sandbox_count(&alice.id, now).await.unwrap(),
        1
    );
}

pub async fn dead_nodes_sandboxes_end_and_labels_find_their_node(db: Db) {
    let a = db.open_as(2, Some("node-a")).await;
    let b = db.open_as(2, Some("node-b")).await;
    let alice = user(&*a, "alice@example.com").await;
    let now = now_ms();
    for (store, name) in [(&a, "node-a"), (&b, "node-b")] {
        store
            .register_node(&info(name, "http://127.0.0.1:1", None), now, LEASE)
            .await
            .unwrap();
    }
    let on_a = "0a1b2c3d-0000-4000-8000-000000000001";
    let on_b = "9f8e7d6c-0000-4000-8000-000000000002";
    a.insert_sandbox(sandbox(on_a, &alice.id, now, now + HOUR))
        .await
        .unwrap();
    b.insert_sandbox(sandbox(on_b, &alice.id, now, now + HOUR))
        .await
        .unwrap();

    // Labels (an id's first hex digits) find the holding node; wildcards find nothing.
    assert_eq!(
        a.node_of_label("0a1b2c3d").await.unwrap().as_deref(),
        Some("node-a")
    );
    assert_eq!(
        a.node_of_label("9F8E7D6C").await.unwrap().as_deref(),
        Some("node-b")
    );
    for nothing in ["", "%", "0a1b%", "_a1b2c3d", "ffffffff"] {
        assert_eq!(a.node_of_label(nothing).await.unwrap(), None, "{nothing:?}");
    }

    // While every lease runs nothing ends; once b's has run out, a ends b's sandboxes (never
    // its own), once.
    assert_eq!(
        a.end_sandboxes_of_dead_nodes("node-a", now).await.unwrap(),
        0
    );
    let later = now + LEASE;
    a.heartbeat_node("node-a", later, LEASE, 1).await.unwrap();
    assert_eq!(
        a.end_sandboxes_of_dead_nodes("node-a", later)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        a.end_sandboxes_of_dead_nodes("node-a", later)
            .await
            .unwrap(),
        0
    );
    assert!(a.sandbox(on_b).await.unwrap().unwrap().deleted_at.is_some());
    assert!(a.sandbox(on_a).await.unwrap().unwrap().deleted_at.is_none());
    assert_eq!(a.node_of_label("9f8e7d6c").await.unwrap(), None);
    assert_eq!(a.active_sandbox_count(&alice.id, later).await.unwrap(), 1);
}
