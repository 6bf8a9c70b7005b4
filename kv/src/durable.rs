//! The embedded store's files: a snapshot of every persistent key and an append-only log of the
//! changes committed since. A change is appended and fsynced before the transaction is applied,
//! so a write that cannot reach the disk fails the transaction, and nothing acknowledged is lost
//! to a kill. Each write costs one log record (not a rewrite of the whole store); the log is
//! folded into a new snapshot once it outgrows the snapshot, which keeps the total work per
//! write constant.
//!
//! Files: `<path>` (the snapshot, JSON, the format earlier versions wrote) and `<path>.log`
//! (one JSON record per line). A last line cut short by a crash was never acknowledged and is
//! dropped; a bad line before the end means the file was damaged, and opening fails.

use super::{KeyValue, KvError, Revision};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The log is folded into the snapshot once it is larger than this and than the snapshot.
const MIN_COMPACT_BYTES: u64 = 1 << 20;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum SnapValue {
    Text(String),
    Bytes(Vec<u8>),
}

impl SnapValue {
    fn of(v: &[u8]) -> SnapValue {
        match std::str::from_utf8(v) {
            Ok(t) => SnapValue::Text(t.to_string()),
            Err(_) => SnapValue::Bytes(v.to_vec()),
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        match self {
            SnapValue::Text(t) => t.into_bytes(),
            SnapValue::Bytes(b) => b,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SnapKey {
    key: String,
    value: SnapValue,
    create_revision: Revision,
    mod_revision: Revision,
}

impl SnapKey {
    fn of(kv: &KeyValue) -> SnapKey {
        SnapKey {
            key: kv.key.clone(),
            value: SnapValue::of(&kv.value),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        }
    }

    fn into_kv(self) -> KeyValue {
        KeyValue {
            key: self.key,
            value: self.value.into_bytes(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: 0,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    revision: Revision,
    keys: Vec<SnapKey>,
}

/// One committed transaction's persistent changes.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    rev: Revision,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    put: Vec<SnapKey>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    del: Vec<String>,
}

/// The persistent keys and revision read back from the files.
#[derive(Debug)]
pub struct Loaded {
    /// The store revision.
    pub revision: Revision,
    /// Every persistent key.
    pub keys: BTreeMap<String, KeyValue>,
}

/// The open files of one store.
#[derive(Debug)]
pub struct Durable {
    snapshot: PathBuf,
    log: PathBuf,
    /// Bytes in the log (its length: every append is counted, compaction empties it).
    log_bytes: u64,
    snapshot_bytes: u64,
    /// Set when a failed append could not be taken back: the log's end is unknown, so no
    /// further write is accepted (a restart reopens and repairs it).
    poisoned: Option<String>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> KvError {
    KvError::Unavailable(format!("cannot {what} {}: {e}", path.display()))
}

/// Makes a new or renamed entry of `path`'s directory survive a crash.
fn sync_dir(path: &Path) -> Result<(), KvError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync the directory of", path, e))
}

impl Durable {
    /// Opens (or creates) the store at `path`, reads the snapshot, replays the log and folds
    /// it into a fresh snapshot.
    pub fn open(path: impl Into<PathBuf>) -> Result<(Durable, Loaded), KvError> {
        let snapshot = path.into();
        let mut log = snapshot.clone().into_os_string();
        log.push(".log");
        let mut d = Durable {
            log: PathBuf::from(log),
            snapshot,
            log_bytes: 0,
            snapshot_bytes: 0,
            poisoned: None,
        };
        let mut loaded = Loaded {
            revision: 0,
            keys: BTreeMap::new(),
        };
        match std::fs::read(&d.snapshot) {
            Ok(bytes) => {
                let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| {
                    KvError::Other(format!(
                        "snapshot {} is not valid: {e}",
                        d.snapshot.display()
                    ))
                })?;
                loaded.revision = snap.revision;
                for k in snap.keys {
                    loaded.keys.insert(k.key.clone(), k.into_kv());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read snapshot", &d.snapshot, e)),
        }
        let log_len = std::fs::metadata(&d.log).map_or(0, |m| m.len());
        d.replay(&mut loaded)?;
        // Any log (a torn last line too, which the next append would otherwise extend) is
        // folded into the snapshot now.
        if log_len > 0 || !d.snapshot.exists() {
            d.compact(loaded.revision, loaded.keys.values())?;
        } else {
            d.snapshot_bytes = std::fs::metadata(&d.snapshot).map_or(0, |m| m.len());
        }
        Ok((d, loaded))
    }

    /// Applies the log's records newer than the snapshot; returns how many it applied.
    fn replay(&self, into: &mut Loaded) -> Result<usize, KvError> {
        let text = match std::fs::read(&self.log) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io("read log", &self.log, e)),
        };
        let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        let mut applied = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.is_empty() {
                continue;
            }
            let rec: Record = match serde_json::from_slice(line) {
                Ok(r) => r,
                // Cut short by a crash before it was acknowledged.
                Err(_) if i + 1 == lines.len() => {
                    tracing::warn!(log = %self.log.display(), "dropping an unfinished last record (the process stopped while writing it)");
                    break;
                }
                Err(e) => {
                    return Err(KvError::Other(format!(
                        "log {} is damaged at line {}: {e}",
                        self.log.display(),
                        i + 1
                    )));
                }
            };
            if rec.rev <= into.revision {
                continue; // already in the snapshot (a crash between snapshot and truncation)
            }
            into.revision = rec.rev;
            for k in rec.del {
                into.keys.remove(&k);
            }
            for k in rec.put {
                into.keys.insert(k.key.clone(), k.into_kv());
            }
            applied += 1;
        }
        Ok(applied)
    }

    /// Appends one transaction's persistent changes and waits until they are on disk. An error
    /// means the transaction must not be applied.
    pub fn append<'a>(
        &mut self,
        rev: Revision,
        puts: impl IntoIterator<Item = &'a KeyValue>,
        deletes: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), KvError> {
        let rec = Record {
            rev,
            put: puts.into_iter().map(SnapKey::of).collect(),
            del: deletes.into_iter().map(str::to_string).collect(),
        };
        let mut line = serde_json::to_vec(&rec)
            .map_err(|e| KvError::Other(format!("cannot encode a log record: {e}")))?;
        line.push(b'\n');
        if let Some(why) = &self.poisoned {
            return Err(KvError::Unavailable(why.clone()));
        }
        let created = !self.log.exists();
        // Opened per write, so a log that disappears or cannot be written fails this write
        // instead of a handle writing into a file no one will read.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| io("open log", &self.log, e))?;
        if let Err(e) = f.write_all(&line).and_then(|()| f.sync_data()) {
            // Part of the record may be on disk: cut the log back to where it ended, or the
            // next record would be glued to this one (a damaged line), and a replay would
            // apply a transaction that failed.
            let cut = f.set_len(self.log_bytes).and_then(|()| f.sync_data());
            if let Err(c) = cut {
                let why = format!(
                    "the KV log {} could not be repaired after a failed write ({c}); restart to recover",
                    self.log.display()
                );
                tracing::error!(error = %why, "embedded store stops accepting writes");
                self.poisoned = Some(why);
            }
            return Err(io("write log", &self.log, e));
        }
        if created {
            sync_dir(&self.log)?;
        }
        self.log_bytes += line.len() as u64;
        Ok(())
    }

    /// Whether the log has grown enough to be folded into the snapshot.
    pub fn wants_compaction(&self) -> bool {
        self.log_bytes > MIN_COMPACT_BYTES.max(self.snapshot_bytes)
    }

    /// Writes a snapshot of `keys` at `revision` (atomically: temporary file, fsync, rename,
    /// fsync of the directory), then empties the log.
    pub fn compact<'a>(
        &mut self,
        revision: Revision,
        keys: impl Iterator<Item = &'a KeyValue>,
    ) -> Result<(), KvError> {
        let snap = Snapshot {
            revision,
            keys: keys.filter(|kv| kv.lease == 0).map(SnapKey::of).collect(),
        };
        let bytes = serde_json::to_vec(&snap)
            .map_err(|e| KvError::Other(format!("cannot encode the snapshot: {e}")))?;
        let mut tmp = self.snapshot.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
            .map_err(|e| io("write snapshot", &tmp, e))?;
        std::fs::rename(&tmp, &self.snapshot)
            .map_err(|e| io("replace snapshot", &self.snapshot, e))?;
        sync_dir(&self.snapshot)?;
        // Records up to `revision` are in the snapshot now; replay skips them if this
        // truncation does not happen.
        std::fs::File::create(&self.log)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("truncate log", &self.log, e))?;
        self.snapshot_bytes = bytes.len() as u64;
        self.log_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, rev: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            create_revision: rev,
            mod_revision: rev,
            lease: 0,
        }
    }

    #[test]
    fn replays_the_log_over_the_snapshot_and_drops_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let (mut d, l) = Durable::open(&path).unwrap();
        assert_eq!(l.revision, 0);
        d.append(1, [&kv("/a", "1", 1)], []).unwrap();
        d.append(2, [&kv("/b", "2", 2)], []).unwrap();
        d.append(3, [], ["/a"]).unwrap();
        drop(d);
        // A crash in the middle of a fourth record.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("state.json.log"))
            .unwrap();
        f.write_all(br#"{"rev":4,"put":[{"key":"/c","val"#).unwrap();
        drop(f);
        let (_, l) = Durable::open(&path).unwrap();
        assert_eq!(l.revision, 3);
        assert_eq!(l.keys.keys().collect::<Vec<_>>(), ["/b"]);
        // Opening folded the log into the snapshot.
        assert_eq!(
            std::fs::metadata(dir.path().join("state.json.log"))
                .unwrap()
                .len(),
            0
        );
        let (_, l) = Durable::open(&path).unwrap();
        assert_eq!(l.revision, 3);
    }

    #[test]
    fn a_damaged_record_before_the_end_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(dir.path().join("s.log"), "garbage\n{\"rev\":1}\n").unwrap();
        let e = Durable::open(&path).unwrap_err();
        assert!(e.to_string().contains("damaged at line 1"), "{e}");
    }

    #[test]
    fn a_write_that_cannot_reach_the_disk_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("s");
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        let (mut d, _) = Durable::open(&path).unwrap();
        std::fs::remove_dir_all(dir.path().join("sub")).unwrap();
        let e = d.append(1, [&kv("/a", "1", 1)], []).unwrap_err();
        assert!(matches!(e, KvError::Unavailable(_)), "{e}");
    }

    #[test]
    fn a_failed_append_leaves_no_part_of_it_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let (mut d, _) = Durable::open(&path).unwrap();
        d.append(1, [&kv("/a", "1", 1)], []).unwrap();
        let good = std::fs::read(dir.path().join("s.log")).unwrap();
        // As if the disk had taken half of a record before failing, then the log is cut back.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("s.log"))
            .unwrap();
        f.write_all(b"{\"rev\":2,\"put\":[{\"ke").unwrap();
        drop(f);
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("s.log"))
            .and_then(|f| f.set_len(d.log_bytes))
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("s.log")).unwrap(), good);
        d.append(2, [&kv("/b", "2", 2)], []).unwrap();
        let (_, l) = Durable::open(&path).unwrap();
        assert_eq!(l.keys.keys().collect::<Vec<_>>(), ["/a", "/b"]);
    }

    #[test]
    fn compaction_keeps_records_newer_than_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let (mut d, _) = Durable::open(&path).unwrap();
        let a = kv("/a", "1", 1);
        d.append(1, [&a], []).unwrap();
        d.compact(1, [&a].into_iter()).unwrap();
        d.append(2, [&kv("/b", "2", 2)], []).unwrap();
        // A log that still holds a record the snapshot has (a crash before truncation).
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("s.log"))
            .unwrap();
        f.write_all(b"{\"rev\":1,\"del\":[\"/a\"]}\n").unwrap();
        drop(f);
        let (_, l) = Durable::open(&path).unwrap();
        assert_eq!(l.revision, 2);
        assert_eq!(l.keys.keys().collect::<Vec<_>>(), ["/a", "/b"]);
    }
}
