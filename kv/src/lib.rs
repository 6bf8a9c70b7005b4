//! The key-value store the mesh keeps its shared state in: one trait, two backends, and the
//! layout of the mesh's keys (`layout`), shared by the sidecar and the controller.
//!
//! - [`memory::MemoryStore`]: embedded, for `modelmesh up` and tests; optional snapshot file.
//! - [`etcd::EtcdStore`]: a real etcd cluster, for meshes of many pods.
//!
//! Semantics follow etcd: every write gets a new store-wide revision; each key carries the
//! revision of its last write (`mod_revision`); conditional writes compare it (0 = absent);
//! watches deliver every change after a given revision, in order, and resume after reconnects.

pub mod config;
pub mod connect;
pub mod durable;
pub mod etcd;
pub mod layout;
pub mod memory;

use futures::stream::BoxStream;

/// A store-wide, strictly increasing write counter.
pub type Revision = i64;

/// A lease id (0 = none).
pub type LeaseId = i64;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Full key.
    pub key: String,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Revision of the key's creation.
    pub create_revision: Revision,
    /// Revision of the key's last write.
    pub mod_revision: Revision,
    /// Lease the key is bound to (0 = none).
    pub lease: LeaseId,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals the value (0: the key must not exist).
    ModRevision(String, Revision),
}

/// A write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put a value, optionally bound to a lease.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Lease (0 = none).
        lease: LeaseId,
    },
    /// Delete a key (absent is fine).
    Delete(String),
}

/// Outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every comparison held and the writes were applied.
    pub succeeded: bool,
    /// The store revision after the transaction (unchanged when it failed).
    pub revision: Revision,
    /// When it failed: the current value of each compared key, in comparison order, so the
    /// caller can retry without another read.
    pub current: Vec<Option<KeyValue>>,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key was created or updated.
    Put(KeyValue),
    /// A key was deleted (explicitly or by lease expiry), at this revision.
    Delete {
        /// Key.
        key: String,
        /// Revision of the deletion.
        mod_revision: Revision,
    },
}

impl Event {
    /// The key this event is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }

    /// The revision of this change.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// Errors of a store.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KvError {
    /// The store cannot be reached (retryable).
    #[error("KV store unavailable: {0}")]
    Unavailable(String),
    /// The watch start revision was compacted away: re-read the prefix and watch from there.
    #[error("revision {0} has been compacted")]
    Compacted(Revision),
    /// The lease does not exist (expired or revoked).
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// Anything else the store reported.
    #[error("KV store error: {0}")]
    Other(String),
}

/// A watch: batches of events in revision order.
pub type WatchStream = BoxStream<'static, Result<Vec<Event>, KvError>>;

/// The store interface the mesh uses. Every backend passes the same conformance suite.
#[tonic::async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError>;

    /// Reads every key under `prefix` (sorted by key) and the revision the read saw.
    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), KvError>;

    /// Applies `ops` atomically if every comparison holds.
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome, KvError>;

    /// Watches every change under `prefix` with revision >= `from` (0 = from now). Backends
    /// reconnect by themselves and resume after the last delivered revision, so no event is
    /// missed or repeated.
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, KvError>;

    /// Creates a lease that expires `ttl_secs` after its last keep-alive.
    async fn grant_lease(&self, ttl_secs: i64) -> Result<LeaseId, KvError>;

    /// Refreshes a lease; [`KvError::LeaseNotFound`] once it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), KvError>;

    /// Revokes a lease, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError>;

    /// Conditional put: writes if the key's `mod_revision` is `expected` (0 = must be absent).
    /// Returns `Ok(new revision)` or `Err(current value)` when the condition failed.
    async fn put_if(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        lease: LeaseId,
    ) -> Result<Result<Revision, Option<KeyValue>>, KvError> {
        let o = self
            .txn(
                vec![Compare::ModRevision(key.to_string(), expected)],
                vec![Op::Put {
                    key: key.to_string(),
                    value,
                    lease,
                }],
            )
            .await?;
        Ok(if o.succeeded {
            Ok(o.revision)
        } else {
            Err(o.current.into_iter().next().flatten())
        })
    }

    /// Conditional delete: deletes if the key's `mod_revision` is `expected`.
    async fn delete_if(
        &self,
        key: &str,
        expected: Revision,
    ) -> Result<Result<Revision, Option<KeyValue>>, KvError> {
        let o = self
            .txn(
                vec![Compare::ModRevision(key.to_string(), expected)],
                vec![Op::Delete(key.to_string())],
            )
            .await?;
        Ok(if o.succeeded {
            Ok(o.revision)
        } else {
            Err(o.current.into_iter().next().flatten())
        })
    }
}

/// Keeps a lease alive in the background every `ttl/3` until dropped.
pub struct LeaseKeeper {
    task: tokio::task::JoinHandle<()>,
    /// The lease kept alive.
    pub lease: LeaseId,
    alive: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LeaseKeeper {
    /// Starts keeping `lease` (of `ttl_secs`) alive on `store`.
    pub fn start(store: std::sync::Arc<dyn KvStore>, lease: LeaseId, ttl_secs: i64) -> Self {
        let period = std::time::Duration::from_millis((ttl_secs.max(1) as u64 * 1000) / 3);
        let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = alive.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match store.keep_alive(lease).await {
                    Ok(()) => {}
                    Err(KvError::LeaseNotFound(_)) => {
                        tracing::warn!(lease, "lease expired; stopping keep-alive");
                        flag.store(false, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(lease, error = %e, "lease keep-alive failed; retrying")
                    }
                }
            }
        });
        LeaseKeeper { task, lease, alive }
    }

    /// Whether the lease is still alive (false once it expired: its keys are gone, and the
    /// owner should take a new lease and write them again).
    pub fn is_alive(&self) -> bool {
        self.alive.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}
