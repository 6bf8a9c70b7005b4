//! This pod's instance record (`.../instances/<instanceId>`): capacity, use, copies and the LRU
//! time, bound to a lease so it disappears when the pod does. Checked every `every` and written
//! only when it changed, plus once per [`HEARTBEAT`] (rewriting an unchanged record every second
//! cost each pod one etcd write a second, for nothing).

use crate::clock::now_ms;
use crate::kv::{KvError, KvStore, LeaseKeeper, Op};
use crate::local::LocalModels;
use crate::registry::Layout;
use crate::registry::records::InstanceRecord;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Default lease TTL of the instance record, in seconds (upstream's minimum).
pub const LEASE_TTL_SECS: i64 = 20;

/// An unchanged record is rewritten this often (the lease keeps it alive in between; this
/// restores it if someone deleted it).
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// The record describing this pod now.
pub fn record(
    local: &LocalModels,
    started: u64,
    shutting_down: bool,
    internal_address: &str,
    labels: &[String],
) -> InstanceRecord {
    let (cap, used, _, count) = local.usage();
    let unit = crate::cache::UNIT_BYTES;
    InstanceRecord {
        start_time: started,
        capacity: (cap / unit) as i64,
        used: (used / unit) as i64,
        count: count as i64,
        lru_time: local.lru_time(),
        loading_threads: i64::from(local.runtime_info().max_loading_concurrency),
        shutdown: shutting_down,
        internal_address: internal_address.to_string(),
        labels: labels.to_vec(),
        ..Default::default()
    }
}

/// What peers need to know about this pod besides its load.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `host:port` of the internal hop port (empty: not reachable).
    pub internal_address: String,
    /// `MM_LABELS`.
    pub labels: Vec<String>,
    /// Lease TTL of the record, in seconds.
    pub lease_ttl_secs: i64,
}

/// Publishes the record under a lease every `every` until the task is dropped; `shutdown` is
/// reflected in the next publication.
pub fn spawn_publisher(
    store: Arc<dyn KvStore>,
    layout: &Layout,
    local: Arc<LocalModels>,
    shutdown: Arc<AtomicBool>,
    every: Duration,
    me: Identity,
) -> tokio::task::JoinHandle<()> {
    let Identity {
        internal_address,
        labels,
        lease_ttl_secs,
    } = me;
    let key = format!("{}{}", layout.instances(), local.instance_id());
    let started = now_ms();
    tokio::spawn(async move {
        let mut keeper: Option<LeaseKeeper> = None;
        // What was last written, and when.
        let mut last: Option<(Vec<u8>, tokio::time::Instant)> = None;
        loop {
            // An expired lease took the record with it: a new lease, and the record at once.
            if keeper.as_ref().is_some_and(|k| !k.is_alive()) {
                keeper = None;
            }
            let lease = match &keeper {
                Some(k) => k.lease,
                None => match store.grant_lease(lease_ttl_secs).await {
                    Ok(id) => {
                        keeper = Some(LeaseKeeper::start(store.clone(), id, lease_ttl_secs));
                        last = None; // a new lease: the record must be written under it
                        id
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot create the instance lease; retrying");
                        tokio::time::sleep(every).await;
                        continue;
                    }
                },
            };
            let rec = record(
                &local,
                started,
                shutdown.load(Ordering::Relaxed),
                &internal_address,
                &labels,
            );
            let value = serde_json::to_vec(&rec).unwrap_or_default();
            let due = match &last {
                Some((v, at)) => *v != value || at.elapsed() >= HEARTBEAT,
                None => true,
            };
            if !due {
                tokio::time::sleep(every).await;
                continue;
            }
            match store
                .txn(
                    vec![],
                    vec![Op::Put {
                        key: key.clone(),
                        value: value.clone(),
                        lease,
                    }],
                )
                .await
            {
                Ok(_) => last = Some((value, tokio::time::Instant::now())),
                Err(KvError::LeaseNotFound(_)) => keeper = None,
                Err(e) => tracing::warn!(error = %e, "cannot publish the instance record"),
            }
            tokio::time::sleep(every).await;
        }
    })
}
