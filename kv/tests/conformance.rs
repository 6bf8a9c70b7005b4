//! One conformance suite for every KV backend: the embedded store, and a real etcd (Debian
//! `etcd-server`) that the test starts on free loopback ports, including a watch that must
//! resume without missing events after etcd is killed and restarted.

use futures::StreamExt;
use modelmesh_kv::etcd::{EtcdConfig, EtcdStore};
use modelmesh_kv::memory::MemoryStore;
use modelmesh_kv::{Compare, Event, KvError, KvStore, LeaseKeeper, Op, WatchStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn next_events(w: &mut WatchStream, want: usize) -> Vec<Event> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, w.next()).await {
            Ok(Some(Ok(batch))) => got.extend(batch),
            Ok(Some(Err(e))) => panic!("watch error: {e}"),
            Ok(None) => panic!("watch ended after {got:?}"),
            Err(_) => panic!("timed out waiting for {want} events; got {got:?}"),
        }
    }
    got
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        lease: 0,
    }
}

/// The behaviour every backend must have.
async fn conformance(store: Arc<dyn KvStore>, p: &str) {
    // Conditional create, update, and the current value on conflict.
    let r1 = store
        .put_if(&format!("{p}/a"), b"1".to_vec(), 0, 0)
        .await
        .unwrap()
        .expect("create");
    let conflict = store
        .put_if(&format!("{p}/a"), b"x".to_vec(), 0, 0)
        .await
        .unwrap()
        .expect_err("must conflict");
    let cur = conflict.expect("current value returned");
    assert_eq!(cur.value, b"1");
    assert_eq!(cur.mod_revision, r1);
    let r2 = store
        .put_if(&format!("{p}/a"), b"2".to_vec(), r1, 0)
        .await
        .unwrap()
        .expect("update");
    assert!(r2 > r1);
    let stale = store
        .put_if(&format!("{p}/a"), b"3".to_vec(), r1, 0)
        .await
        .unwrap();
    assert!(stale.is_err(), "a stale revision must not overwrite");
    let got = store
        .get(&format!("{p}/a"))
        .await
        .unwrap()
        .expect("present");
    assert_eq!(
        (got.value.as_slice(), got.create_revision, got.mod_revision),
        (&b"2"[..], r1, r2)
    );

    // Prefix range is sorted and exact.
    store
        .put_if(&format!("{p}/c"), b"c".to_vec(), 0, 0)
        .await
        .unwrap()
        .expect("c");
    store
        .put_if(&format!("{p}/b"), b"b".to_vec(), 0, 0)
        .await
        .unwrap()
        .expect("b");
    store
        .put_if(&format!("{p}x/other"), b"o".to_vec(), 0, 0)
        .await
        .unwrap()
        .expect("other");
    let (kvs, rev) = store.range(&format!("{p}/")).await.unwrap();
    let keys: Vec<&str> = kvs.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, [format!("{p}/a"), format!("{p}/b"), format!("{p}/c")]);
    assert!(rev >= r2);

    // Multi-key transaction: all or nothing; a failure returns every compared key.
    let (a, b) = (
        store.get(&format!("{p}/a")).await.unwrap().unwrap(),
        store.get(&format!("{p}/b")).await.unwrap().unwrap(),
    );
    let fail = store
        .txn(
            vec![
                Compare::ModRevision(format!("{p}/a"), a.mod_revision),
                Compare::ModRevision(format!("{p}/b"), 1),
            ],
            vec![
                put(&format!("{p}/a"), "never"),
                Op::Delete(format!("{p}/b")),
            ],
        )
        .await
        .unwrap();
    assert!(!fail.succeeded);
    assert_eq!(fail.current.len(), 2);
    assert_eq!(
        fail.current[1].as_ref().map(|k| k.mod_revision),
        Some(b.mod_revision)
    );
    assert_eq!(
        store.get(&format!("{p}/a")).await.unwrap().unwrap().value,
        b"2"
    );
    let ok = store
        .txn(
            vec![
                Compare::ModRevision(format!("{p}/a"), a.mod_revision),
                Compare::ModRevision(format!("{p}/b"), b.mod_revision),
            ],
            vec![put(&format!("{p}/a"), "txn"), Op::Delete(format!("{p}/b"))],
        )
        .await
        .unwrap();
    assert!(ok.succeeded);
    assert_eq!(
        store
            .get(&format!("{p}/a"))
            .await
            .unwrap()
            .unwrap()
            .mod_revision,
        ok.revision
    );
    assert!(store.get(&format!("{p}/b")).await.unwrap().is_none());
    let del = store.delete_if(&format!("{p}/c"), 12345).await.unwrap();
    assert!(del.is_err(), "delete with a wrong revision must fail");

    // Watch from a past revision replays in order, then follows live changes, prefix only.
    let mut w = store.watch(&format!("{p}/"), r1).await.unwrap();
    let replay = next_events(&mut w, 6).await;
    let revs: Vec<i64> = replay.iter().map(Event::revision).collect();
    assert!(
        revs.windows(2).all(|x| x[0] <= x[1]),
        "replay out of order: {revs:?}"
    );
    assert_eq!(replay[0].revision(), r1);
    assert!(replay.iter().all(|e| e.key().starts_with(&format!("{p}/"))));
    assert!(
        replay
            .iter()
            .any(|e| matches!(e, Event::Delete { key, .. } if key == &format!("{p}/b")))
    );
    store
        .put_if(&format!("{p}x/ignored"), b"i".to_vec(), 0, 0)
        .await
        .unwrap()
        .expect("ignored");
    store
        .put_if(&format!("{p}/live"), b"l".to_vec(), 0, 0)
        .await
        .unwrap()
        .expect("live");
    let live = next_events(&mut w, 1).await;
    assert_eq!(live[0].key(), format!("{p}/live"));

    // Leases: kept alive, the key survives its TTL; left alone, it expires and the watch sees it.
    let lease = store.grant_lease(2).await.unwrap();
    store
        .put_if(&format!("{p}/leased"), b"l".to_vec(), 0, lease)
        .await
        .unwrap()
        .expect("leased put");
    let _ = next_events(&mut w, 1).await;
    {
        let _keeper = LeaseKeeper::start(store.clone(), lease, 2);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(
            store.get(&format!("{p}/leased")).await.unwrap().is_some(),
            "kept-alive key expired"
        );
    }
    let gone = next_events(&mut w, 1).await;
    assert!(
        matches!(&gone[0], Event::Delete { key, .. } if key == &format!("{p}/leased")),
        "{gone:?}"
    );
    assert_eq!(
        store.keep_alive(lease).await,
        Err(KvError::LeaseNotFound(lease))
    );
    let lease2 = store.grant_lease(30).await.unwrap();
    store
        .put_if(&format!("{p}/leased2"), b"l".to_vec(), 0, lease2)
        .await
        .unwrap()
        .expect("leased put");
    store.revoke_lease(lease2).await.unwrap();
    assert!(
        store.get(&format!("{p}/leased2")).await.unwrap().is_none(),
        "revoke deletes the lease's keys"
    );
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(Arc::new(MemoryStore::new()), "/mm/memtest").await;
}

#[tokio::test]
async fn memory_snapshot_keeps_persistent_keys_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.json");
    {
        let s = MemoryStore::with_snapshot(&path).unwrap();
        s.put_if("/k/persist", b"{\"a\":1}".to_vec(), 0, 0)
            .await
            .unwrap()
            .unwrap();
        let lease = s.grant_lease(30).await.unwrap();
        s.put_if("/k/leased", b"x".to_vec(), 0, lease)
            .await
            .unwrap()
            .unwrap();
    }
    let s = MemoryStore::with_snapshot(&path).unwrap();
    let kv = s.get("/k/persist").await.unwrap().expect("restored");
    assert_eq!(kv.value, b"{\"a\":1}");
    assert!(
        s.get("/k/leased").await.unwrap().is_none(),
        "lease-bound keys are not restored"
    );
    let r = s
        .put_if("/k/new", b"n".to_vec(), 0, 0)
        .await
        .unwrap()
        .unwrap();
    assert!(r > kv.mod_revision, "revisions continue after a restart");
    std::fs::write(&path, b"not json").unwrap();
    assert!(MemoryStore::with_snapshot(&path).is_err());
}

/// A real etcd on free ports, killed on drop.
struct Etcd {
    child: Child,
    client_port: u16,
    peer_port: u16,
    data: std::path::PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    fn start(data: &Path, client_port: u16, peer_port: u16) -> Etcd {
        let bin = Path::new("/usr/bin/etcd");
        assert!(
            bin.exists(),
            "etcd is missing: run scripts/setup-peers.sh (installs Debian etcd-server)"
        );
        let child = Command::new(bin)
            .args(["--name", "t1", "--data-dir"])
            .arg(data)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .args([
                "--initial-cluster",
                &format!("t1=http://127.0.0.1:{peer_port}"),
            ])
            .args([
                "--logger=zap",
                "--log-level=error",
                "--heartbeat-interval=10",
                "--election-timeout=100",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        Etcd {
            child,
            client_port,
            peer_port,
            data: data.to_path_buf(),
        }
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(self.child.try_wait().unwrap().is_none(), "etcd exited");
            let cfg = EtcdConfig {
                endpoints: vec![self.endpoint()],
                user: None,
                tls: None,
            };
            if EtcdStore::connect(&cfg, Duration::from_millis(500))
                .await
                .is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "etcd not healthy after 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn restart(&mut self) {
        self.kill();
        *self = Etcd::start(&self.data.clone(), self.client_port, self.peer_port);
        self.wait_healthy().await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn etcd(dir: &Path) -> (Etcd, Arc<dyn KvStore>) {
    let mut e = Etcd::start(&dir.join("etcd"), free_port(), free_port());
    e.wait_healthy().await;
    let cfg = EtcdConfig {
        endpoints: vec![e.endpoint()],
        user: None,
        tls: None,
    };
    let store = EtcdStore::connect(&cfg, Duration::from_secs(5))
        .await
        .expect("connect");
    (e, Arc::new(store))
}

#[tokio::test]
async fn etcd_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, store) = etcd(dir.path()).await;
    conformance(store, "/mm/etcdtest").await;
}

#[tokio::test]
async fn etcd_watch_resumes_after_etcd_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut etcd, store) = etcd(dir.path()).await;
    let mut w = store.watch("/r/", 0).await.unwrap();
    store
        .put_if("/r/before", b"1".to_vec(), 0, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next_events(&mut w, 1).await[0].key(), "/r/before");
    etcd.restart().await;
    // Written by another client as soon as etcd is back, before the watcher has reconnected.
    let other = EtcdStore::connect(
        &EtcdConfig {
            endpoints: vec![etcd.endpoint()],
            user: None,
            tls: None,
        },
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    for i in 0..3 {
        other
            .put_if(&format!("/r/after{i}"), b"2".to_vec(), 0, 0)
            .await
            .unwrap()
            .unwrap();
    }
    let after = next_events(&mut w, 3).await;
    let keys: Vec<&str> = after.iter().map(Event::key).collect();
    assert_eq!(
        keys,
        ["/r/after0", "/r/after1", "/r/after2"],
        "events missed or repeated across the restart"
    );
    // The original client keeps working too.
    store
        .put_if("/r/again", b"3".to_vec(), 0, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next_events(&mut w, 1).await[0].key(), "/r/again");
}

#[tokio::test]
async fn etcd_unreachable_fails_fast_with_a_clear_error() {
    let cfg = EtcdConfig {
        endpoints: vec![format!("http://127.0.0.1:{}", free_port())],
        user: None,
        tls: None,
    };
    let err = EtcdStore::connect(&cfg, Duration::from_secs(2))
        .await
        .err()
        .expect("must fail");
    assert!(matches!(err, KvError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}
