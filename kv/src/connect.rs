//! Opening the store a `KV_STORE` setting names.

use crate::config::KvConfig;
use crate::etcd::EtcdStore;
use crate::memory::MemoryStore;
use crate::{KvError, KvStore};
use std::sync::Arc;
use std::time::Duration;

/// How long to wait for etcd at start-up.
pub const ETCD_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// The store `kv` names: the embedded one (durable with a file), or a connection to etcd.
pub async fn connect(kv: &KvConfig) -> Result<Arc<dyn KvStore>, KvError> {
    Ok(match kv {
        KvConfig::Memory(None) => Arc::new(MemoryStore::new()),
        KvConfig::Memory(Some(p)) => Arc::new(MemoryStore::with_snapshot(p)?),
        KvConfig::Etcd { .. } => {
            let cfg = kv
                .etcd()
                .ok_or_else(|| KvError::Other("etcd config missing".into()))?;
            Arc::new(EtcdStore::connect(&cfg, ETCD_CONNECT_TIMEOUT).await?)
        }
    })
}
