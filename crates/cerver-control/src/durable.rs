//! Sandboxes that outlive the server: what a sandbox needs to be rebuilt is recorded in the
//! store next to its record (its disk image's label, env, lifetime, exposed ports), and its
//! files stay in its disk image. A server that stops keeps both ([`Control::shutdown`] stops
//! sandboxes without deleting them); the next one on the same data dir rebuilds every sandbox
//! that has not expired (same id, same files, fresh processes; expiry still counts from the
//! original deadline) and deletes what is left: expired or unrecorded sandboxes' records and
//! images. After a `kill -9` the helpers tear their sandboxes down themselves (the lifeline),
//! so the same rebuild applies.
//!
//! Rebuild rather than re-adoption: a sandbox's helper and zygote die with the server's
//! lifeline by design (nothing of a sandbox may outlive a dead server unnoticed), so its
//! processes end; `GET /sandbox/:id/processes` shows none.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cerver_store::SandboxRecord;
use serde_json::{Value, json};

use crate::processes::ProcessTable;
use crate::registry::{Entry, Lifetime};
use crate::{Control, Engine, ports};
use cerver_runtime::rates::EgressRates;

/// What became of a recorded sandbox at start.
enum Revival {
    /// Registered again, on this disk.
    Rebuilt(String),
    /// Not rebuilt this time (logged); its disk and record stay for the next start.
    Failed(String),
    /// Expired or not rebuildable: its record is closed and its disk deleted.
    Closed,
}

/// What is recorded per sandbox, as JSON in its store record.
struct Durable {
    /// The runtime's label of its disk image (`<data-dir>/sandboxes/<disk>`).
    disk: String,
    envs: BTreeMap<String, String>,
    timeout_ms: u64,
    exposed_ports: BTreeSet<u16>,
    /// The egress bounds its plan gave it (the plan is not known again at start).
    egress_rates: EgressRates,
}

impl Durable {
    fn of(entry: &Entry) -> Durable {
        Durable {
            disk: entry.sandbox.label().to_string(),
            envs: entry.envs.clone(),
            timeout_ms: entry.lifetime.lock().unwrap().timeout_ms,
            exposed_ports: entry.exposed_ports.lock().unwrap().clone(),
            egress_rates: entry.egress_rates,
        }
    }

    fn to_json(&self) -> String {
        json!({
            "disk": self.disk,
            "envs": self.envs,
            "timeout_ms": self.timeout_ms,
            "exposed_ports": self.exposed_ports,
            "egress_bytes_per_second": self.egress_rates.bytes_per_second,
            "egress_connections_per_second": self.egress_rates.connections_per_second,
        })
        .to_string()
    }

    fn parse(text: &str) -> Option<Durable> {
        let v: Value = serde_json::from_str(text).ok()?;
        Some(Durable {
            disk: v["disk"].as_str()?.to_string(),
            envs: serde_json::from_value(v["envs"].clone()).ok()?,
            timeout_ms: v["timeout_ms"].as_u64()?,
            exposed_ports: serde_json::from_value(v["exposed_ports"].clone()).ok()?,
            egress_rates: EgressRates {
                bytes_per_second: v["egress_bytes_per_second"].as_u64()?,
                connections_per_second: u32::try_from(v["egress_connections_per_second"].as_u64()?)
                    .ok()?,
            },
        })
    }
}

fn at_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn ms_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

async fn persist(store: &dyn cerver_store::Store, entry: &Entry) {
    let state = Durable::of(entry).to_json();
    let expires_at = ms_of(entry.lifetime.lock().unwrap().expires_at);
    if let Err(e) = store
        .set_sandbox_durable(&entry.id, &state, expires_at)
        .await
    {
        tracing::error!(sandbox.id = %entry.id, "could not record the sandbox for restarts: {e}");
    }
}

impl Control {
    /// Records what rebuilding `entry` takes (and its expiry). Logged, not returned: the
    /// sandbox works without it, it only would not survive a restart.
    pub(crate) async fn persist(&self, entry: &Entry) {
        persist(self.store.as_ref(), entry).await;
    }

    /// [`persist`](Self::persist) in the background (for callers that cannot wait).
    pub(crate) fn persist_later(&self, entry: Arc<Entry>) {
        let store = self.store.clone();
        tokio::spawn(async move { persist(store.as_ref(), &entry).await });
    }

    /// At start: rebuilds every sandbox the store shows active and recorded, closes the other
    /// records, and deletes the disk images nobody uses. Returns how many were rebuilt.
    pub(crate) async fn revive_all(&self) -> Result<usize, crate::ControlError> {
        let records = self
            .store
            .sandboxes_left_active()
            .await
            .map_err(crate::registry::store_err)?;
        let now = cerver_store::now_ms();
        let (mut kept, mut revived) = (HashSet::new(), 0);
        for record in records {
            let id = record.id.clone();
            match self.revive(&record, now).await {
                Revival::Rebuilt(disk) => {
                    kept.insert(disk);
                    revived += 1;
                }
                // The user's files are kept and the record stays: the next start tries again,
                // until the sandbox expires (which bounds how long an image can linger).
                Revival::Failed(disk) => {
                    kept.insert(disk);
                }
                Revival::Closed => {
                    if let Err(e) = self.store.mark_sandbox_deleted(&id, now).await {
                        tracing::error!(sandbox.id = %id, "could not close the record: {e}");
                    }
                }
            }
        }
        let reaped = self.runtime.reap_disks(kept).await;
        if revived > 0 || reaped > 0 {
            tracing::info!(revived, reaped, "sandboxes of the previous server");
        }
        Ok(revived)
    }

    /// Rebuilds one recorded sandbox.
    async fn revive(&self, record: &SandboxRecord, now: i64) -> Revival {
        let Some(durable) = record.durable.as_deref().and_then(Durable::parse) else {
            return Revival::Closed;
        };
        let engine = match record.engine.as_str() {
            "workers" => Engine::Workers,
            "containers" => Engine::Containers,
            _ => return Revival::Closed,
        };
        if record.expires_at <= now {
            return Revival::Closed;
        }
        let Ok(slot) = self.sandbox_slot() else {
            tracing::warn!(sandbox.id = %record.id, "no server slot left to rebuild the sandbox");
            return Revival::Failed(durable.disk);
        };
        let revived = match self.runtime.revive(engine, &durable.disk).await {
            Ok(sandbox) => match sandbox.limit_egress(durable.egress_rates).await {
                Ok(()) => Ok(sandbox),
                Err(e) => {
                    sandbox.stop().await;
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        let sandbox = match revived {
            Ok(sandbox) => sandbox,
            Err(e) => {
                tracing::warn!(sandbox.id = %record.id, "could not rebuild the sandbox: {e}");
                return Revival::Failed(durable.disk);
            }
        };
        let metadata = serde_json::from_value(record.metadata.clone()).unwrap_or_default();
        let entry = Arc::new(Entry {
            id: record.id.clone(),
            owner: record.user_id.clone(),
            engine,
            sandbox,
            envs: durable.envs,
            metadata,
            created_at: at_ms(record.created_at),
            lifetime: Mutex::new(Lifetime {
                timeout_ms: durable.timeout_ms,
                expires_at: at_ms(record.expires_at),
            }),
            runs: Arc::new(tokio::sync::Semaphore::new(self.cfg.max_concurrent_runs)),
            label: ports::host_label(&record.id),
            exposed_ports: Mutex::new(durable.exposed_ports),
            proxy_connections: Arc::new(tokio::sync::Semaphore::new(
                self.cfg.max_proxy_connections,
            )),
            processes: ProcessTable::new(self.cfg.processes),
            contexts: Default::default(),
            slot: Mutex::new(Some(slot)),
            egress_rates: durable.egress_rates,
            transfers: crate::transfers::sandbox_slots(&self.cfg),
        });
        tracing::info!(sandbox.id = %entry.id, user.id = %entry.owner, "sandbox rebuilt after a restart");
        crate::metrics::sandbox_created(engine);
        self.sandboxes
            .lock()
            .unwrap()
            .insert(entry.id.clone(), entry);
        Revival::Rebuilt(durable.disk)
    }

    /// Server shutdown: every sandbox's processes end, its record and disk image stay for the
    /// next server on this data dir.
    pub async fn shutdown(&self) {
        let all: Vec<_> = self
            .sandboxes
            .lock()
            .unwrap()
            .drain()
            .map(|(_, e)| e)
            .collect();
        for e in all {
            e.sandbox.stop().await;
            e.slot.lock().unwrap().take();
        }
        self.runtime.shutdown().await;
    }
}
