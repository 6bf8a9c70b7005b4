//! This pod's instance record (`.../instances/<instanceId>`): capacity, use, copies and the LRU
//! time, bound to a lease so it disappears when the pod does. Republished every few seconds.

use crate::kv::{KvError, KvStore, LeaseKeeper, Op};
use crate::local::{LocalModels, now_ms};
use crate::registry::Layout;
use crate::registry::records::InstanceRecord;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Default lease TTL of the instance record, in seconds (upstream's minimum).
pub const LEASE_TTL_SECS: i64 = 20;

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
        loop {
            let lease = match &keeper {
                Some(k) => k.lease,
                None => match store.grant_lease(lease_ttl_secs).await {
                    Ok(id) => {
                        keeper = Some(LeaseKeeper::start(store.clone(), id, lease_ttl_secs));
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
            match store
                .txn(
                    vec![],
                    vec![Op::Put {
                        key: key.clone(),
                        value,
                        lease,
                    }],
                )
                .await
            {
                Ok(_) => {}
                Err(KvError::LeaseNotFound(_)) => keeper = None,
                Err(e) => tracing::warn!(error = %e, "cannot publish the instance record"),
            }
            tokio::time::sleep(every).await;
        }
    })
}
