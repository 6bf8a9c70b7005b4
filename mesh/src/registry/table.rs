//! A KV prefix kept as an in-memory copy by a watch, with a compare-and-set update loop.
//! Reads are local and never block on the store; every write is a CAS on the record's
//! revision, retried with the current value on conflict.

use crate::kv::{Event, KvError, KvStore, Revision};
use futures::StreamExt;
use serde::{Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

/// A change to one record, as seen by the table's watch.
#[derive(Debug, Clone)]
pub enum Change<R> {
    /// Created or updated.
    Put(String, R),
    /// Deleted.
    Delete(String),
}

/// What an update function decides for a record.
#[derive(Debug, Clone)]
pub enum Update<R> {
    /// Write this value.
    Put(R),
    /// Delete the record.
    Delete,
    /// Leave it as it is.
    Keep,
}

type Cache<R> = Arc<RwLock<BTreeMap<String, (R, Revision)>>>;

/// One table (e.g. the model registry).
pub struct Table<R> {
    store: Arc<dyn KvStore>,
    prefix: String,
    cache: Cache<R>,
    changes: broadcast::Sender<Change<R>>,
    task: tokio::task::JoinHandle<()>,
}

impl<R> Drop for Table<R> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn decode<R: DeserializeOwned>(key: &str, bytes: &[u8]) -> Option<R> {
    match serde_json::from_slice(bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(key, error = %e, "skipping a record that does not parse");
            None
        }
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl<R> Table<R>
where
    R: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// Loads the prefix and starts following it. `prefix` ends with `/`.
    pub async fn start(store: Arc<dyn KvStore>, prefix: String) -> Result<Arc<Self>, KvError> {
        let cache: Cache<R> = Arc::default();
        let rev = Self::reload(&*store, &prefix, &cache, None).await?;
        let (changes, _) = broadcast::channel(4096);
        let task = tokio::spawn(Self::follow(
            store.clone(),
            prefix.clone(),
            cache.clone(),
            changes.clone(),
            rev + 1,
        ));
        Ok(Arc::new(Table {
            store,
            prefix,
            cache,
            changes,
            task,
        }))
    }

    /// Reads the whole prefix into the cache. With `changes`, what differs from the cache is
    /// also announced: after a compaction the events in between are gone, and a record
    /// deleted meanwhile must still reach the subscribers (an unregistered model's copy is
    /// unloaded on its Delete).
    async fn reload(
        store: &dyn KvStore,
        prefix: &str,
        cache: &Cache<R>,
        changes: Option<&broadcast::Sender<Change<R>>>,
    ) -> Result<Revision, KvError> {
        let (kvs, rev) = store.range(prefix).await?;
        let mut map = BTreeMap::new();
        for kv in kvs {
            let id = kv.key[prefix.len()..].to_string();
            if let Some(r) = decode(&kv.key, &kv.value) {
                map.insert(id, (r, kv.mod_revision));
            }
        }
        // Merged, not replaced: a record this table wrote after the snapshot's revision (or
        // created since) is newer than the snapshot and stays; only records at or before it
        // that the snapshot lacks were deleted.
        let mut deleted_ids = Vec::new();
        let mut changed_ids = Vec::new();
        {
            let mut c = write(cache);
            let old = std::mem::take(&mut *c);
            let mut merged = map;
            let mut old_revs: BTreeMap<String, Revision> = BTreeMap::new();
            for (id, (r, orev)) in old {
                old_revs.insert(id.clone(), orev);
                match merged.get(&id) {
                    Some((_, srev)) if *srev >= orev => {}
                    Some(_) => {
                        merged.insert(id, (r, orev));
                    }
                    None if orev > rev => {
                        merged.insert(id, (r, orev));
                    }
                    None => deleted_ids.push(id),
                }
            }
            for (id, (_, r)) in merged.iter() {
                if old_revs.get(id) != Some(r) {
                    changed_ids.push(id.clone());
                }
            }
            *c = merged;
        }
        if let Some(tx) = changes {
            let map = read(cache);
            let (deleted, changed) = (deleted_ids.len(), changed_ids.len());
            for id in deleted_ids {
                let _ = tx.send(Change::Delete(id));
            }
            for id in changed_ids {
                if let Some((r, _)) = map.get(&id) {
                    let _ = tx.send(Change::Put(id.clone(), r.clone()));
                }
            }
            tracing::info!(
                prefix,
                deleted,
                changed,
                revision = rev,
                "reloaded after the watch history was compacted"
            );
        }
        Ok(rev)
    }

    async fn follow(
        store: Arc<dyn KvStore>,
        prefix: String,
        cache: Cache<R>,
        changes: broadcast::Sender<Change<R>>,
        mut from: Revision,
    ) {
        loop {
            let mut w = match store.watch(&prefix, from).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(prefix, error = %e, "cannot watch; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
            };
            while let Some(batch) = w.next().await {
                match batch {
                    Ok(events) => {
                        for e in events {
                            from = e.revision() + 1;
                            let Some(id) =
                                e.key().strip_prefix(prefix.as_str()).map(str::to_string)
                            else {
                                continue;
                            };
                            match e {
                                Event::Put(kv) => {
                                    if let Some(r) = decode::<R>(&kv.key, &kv.value) {
                                        let newer = read(&cache)
                                            .get(&id)
                                            .is_none_or(|(_, rev)| *rev < kv.mod_revision);
                                        if newer {
                                            write(&cache)
                                                .insert(id.clone(), (r.clone(), kv.mod_revision));
                                        }
                                        let _ = changes.send(Change::Put(id, r));
                                    }
                                }
                                Event::Delete { mod_revision, .. } => {
                                    let mut c = write(&cache);
                                    if c.get(&id).is_some_and(|(_, rev)| *rev < mod_revision) {
                                        c.remove(&id);
                                    }
                                    drop(c);
                                    let _ = changes.send(Change::Delete(id));
                                }
                            }
                        }
                    }
                    Err(KvError::Compacted(_)) => {
                        // History is gone: start over from a full read.
                        match Self::reload(&*store, &prefix, &cache, Some(&changes)).await {
                            Ok(rev) => from = rev + 1,
                            Err(e) => {
                                tracing::warn!(prefix, error = %e, "reload after compaction failed")
                            }
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(prefix, error = %e, "watch failed; restarting");
                        break;
                    }
                }
            }
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// The local copy of a record and its revision.
    pub fn get(&self, id: &str) -> Option<(R, Revision)> {
        read(&self.cache).get(id).cloned()
    }

    /// Every record of the local copy.
    pub fn list(&self) -> Vec<(String, R)> {
        read(&self.cache)
            .iter()
            .map(|(k, (r, _))| (k.clone(), r.clone()))
            .collect()
    }

    /// The records of the local copy that `keep` selects (only those are copied: with a
    /// million records, copying them all takes a good part of a second).
    pub fn list_where(&self, keep: impl Fn(&R) -> bool) -> Vec<(String, R)> {
        read(&self.cache)
            .iter()
            .filter(|(_, (r, _))| keep(r))
            .map(|(k, (r, _))| (k.clone(), r.clone()))
            .collect()
    }

    /// Folds `f` over every record of the local copy under its read lock, copying nothing.
    /// `f` must not block: writers wait for it.
    pub fn fold<T>(&self, init: T, mut f: impl FnMut(T, &str, &R) -> T) -> T {
        read(&self.cache)
            .iter()
            .fold(init, |acc, (k, (r, _))| f(acc, k, r))
    }

    /// Number of records in the local copy.
    pub fn len(&self) -> usize {
        read(&self.cache).len()
    }

    /// Whether the local copy is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A record read from the store itself (not the local copy).
    pub async fn get_strong(&self, id: &str) -> Result<Option<(R, Revision)>, KvError> {
        Ok(self
            .store
            .get(&self.key(id))
            .await?
            .and_then(|kv| decode(&kv.key, &kv.value).map(|r| (r, kv.mod_revision))))
    }

    /// Follows changes (put or delete) from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change<R>> {
        self.changes.subscribe()
    }

    fn remember(&self, id: &str, value: Option<(R, Revision)>) {
        let mut c = write(&self.cache);
        match value {
            Some((r, rev)) => {
                if c.get(id).is_none_or(|(_, old)| *old <= rev) {
                    c.insert(id.to_string(), (r, rev));
                }
            }
            None => {
                c.remove(id);
            }
        }
    }

    /// Read-modify-write with compare-and-set, retried on conflict with the current value.
    /// `f` sees the current record (None if absent). Returns the record as written (None if
    /// deleted or absent).
    pub async fn update<F>(&self, id: &str, mut f: F) -> Result<Option<R>, KvError>
    where
        F: FnMut(Option<&R>) -> Update<R>,
    {
        let key = self.key(id);
        let mut current = self.get(id);
        // Decisions to leave a record alone are confirmed against the store once: the local
        // copy may lag behind a write made elsewhere.
        let mut confirmed = false;
        for attempt in 0..100 {
            let (value, rev) = match &current {
                Some((r, rev)) => (Some(r), *rev),
                None => (None, 0),
            };
            let decision = f(value);
            let no_write = matches!(decision, Update::Keep)
                || (matches!(decision, Update::Delete) && value.is_none());
            if no_write {
                if !confirmed {
                    confirmed = true;
                    let strong = self.get_strong(id).await?;
                    if strong.as_ref().map(|(_, r)| *r) != current.as_ref().map(|(_, r)| *r) {
                        current = strong;
                        continue;
                    }
                }
                return Ok(value.cloned());
            }
            let outcome = match decision {
                Update::Keep => return Ok(value.cloned()),
                Update::Put(new) => {
                    let bytes =
                        serde_json::to_vec(&new).map_err(|e| KvError::Other(e.to_string()))?;
                    self.store
                        .put_if(&key, bytes, rev, 0)
                        .await?
                        .map(|r| Some((new, r)))
                }
                Update::Delete => self.store.delete_if(&key, rev).await?.map(|_| None),
            };
            match outcome {
                Ok(written) => {
                    let out = written.as_ref().map(|(r, _)| r.clone());
                    self.remember(id, written);
                    return Ok(out);
                }
                Err(now) => {
                    tracing::debug!(key, attempt, "conflict; retrying with the current value");
                    confirmed = true;
                    current =
                        now.and_then(|kv| decode(&kv.key, &kv.value).map(|r| (r, kv.mod_revision)));
                }
            }
        }
        Err(KvError::Other(format!(
            "too many concurrent updates of {key}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::memory::MemoryStore;
    use crate::registry::records::ModelRecord;

    #[tokio::test]
    async fn a_reload_merges_and_announces_only_real_changes() {
        let store = MemoryStore::new();
        let prefix = "/t/registry/";
        let rec = serde_json::to_vec(&ModelRecord::default()).unwrap();
        for id in ["a", "b"] {
            store
                .txn(
                    vec![],
                    vec![crate::kv::Op::Put {
                        key: format!("{prefix}{id}"),
                        value: rec.clone(),
                        lease: 0,
                    }],
                )
                .await
                .unwrap();
        }
        // The cache before: `a` as stored (revision 1), `d` deleted since (revision 1, not in
        // the store), `c` written by this table after the snapshot would be taken (revision 99).
        let cache: Cache<ModelRecord> = Arc::default();
        for (id, rev) in [("a", 1), ("c", 99), ("d", 1)] {
            write(&cache).insert(id.to_string(), (ModelRecord::default(), rev));
        }
        let (tx, mut rx) = broadcast::channel(16);
        Table::<ModelRecord>::reload(&store, prefix, &cache, Some(&tx))
            .await
            .unwrap();
        let mut ids: Vec<String> = read(&cache).keys().cloned().collect();
        ids.sort();
        assert_eq!(ids, ["a", "b", "c"]);
        let mut changes = Vec::new();
        while let Ok(c) = rx.try_recv() {
            changes.push(match c {
                Change::Put(id, _) => format!("put {id}"),
                Change::Delete(id) => format!("delete {id}"),
            });
        }
        assert_eq!(changes, ["delete d", "put b"]);
    }

    #[tokio::test]
    async fn concurrent_updates_never_lose_a_write() {
        let store: Arc<dyn KvStore> = Arc::new(MemoryStore::new());
        let a = Table::<ModelRecord>::start(store.clone(), "/t/registry/".into())
            .await
            .unwrap();
        let b = Table::<ModelRecord>::start(store.clone(), "/t/registry/".into())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let t = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                t.update("m", |cur| {
                    let mut r = cur.cloned().unwrap_or_default();
                    r.refs += 1;
                    Update::Put(r)
                })
                .await
                .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(a.get_strong("m").await.unwrap().unwrap().0.refs, 20);
        // The other table's copy catches up through its watch.
        for _ in 0..100 {
            if b.get("m").map(|(r, _)| r.refs) == Some(20) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("watch did not deliver the last update");
    }
}
