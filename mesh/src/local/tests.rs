//! The copy lifecycle against a fake runtime, the embedded store and tokio's paused clock:
//! every state a copy passes through, and what each transition leaves in the cache, the
//! registry and the runtime.

use super::*;
use crate::error::MeshError;
use crate::kv::KvStore;
use crate::kv::memory::MemoryStore;
use crate::load_queue::Priority;
use crate::registry::table::Update;
use modelmesh_proto::mmesh as pb;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// What the fake runtime does with the next load of a model.
#[derive(Debug, Clone)]
enum Plan {
    /// Loads after this long, at this size.
    Ok(Duration, u64),
    /// The runtime refuses the model.
    Fail(&'static str),
    /// The runtime is down.
    Down,
    /// Never answers.
    Hang,
}

const MIB: u64 = 1 << 20;

#[derive(Default)]
struct Fake {
    plans: Mutex<HashMap<String, VecDeque<Plan>>>,
    loads: Mutex<Vec<String>>,
    unloads: Mutex<Vec<String>>,
    unload_calls: AtomicU32,
    /// The next this many unloads fail.
    failing_unloads: AtomicU32,
    loading: AtomicUsize,
    most_loading: AtomicUsize,
}

struct Loading<'a>(&'a AtomicUsize);

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Fake {
    fn plan(&self, id: &str, plans: &[Plan]) {
        self.plans
            .lock()
            .unwrap()
            .insert(id.to_string(), plans.iter().cloned().collect());
    }
    fn loads(&self) -> Vec<String> {
        self.loads.lock().unwrap().clone()
    }
    fn unloads(&self) -> Vec<String> {
        self.unloads.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl Runtime for Fake {
    async fn status(&self) -> Result<pb::RuntimeStatusResponse, tonic::Status> {
        Ok(pb::RuntimeStatusResponse::default())
    }
    async fn load(&self, id: &str, _: &str, _: &str, _: &str) -> Result<u64, MeshError> {
        self.loads.lock().unwrap().push(id.to_string());
        let now = self.loading.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_loading.fetch_max(now, Ordering::SeqCst);
        let _loading = Loading(&self.loading);
        let plan = self
            .plans
            .lock()
            .unwrap()
            .get_mut(id)
            .and_then(|p| p.pop_front())
            .unwrap_or(Plan::Ok(Duration::from_millis(10), MIB));
        match plan {
            Plan::Ok(after, size) => {
                tokio::time::sleep(after).await;
                Ok(size)
            }
            Plan::Fail(m) => Err(MeshError::Runtime(tonic::Code::Internal, m.into())),
            Plan::Down => Err(MeshError::Unavailable("runtime connection refused".into())),
            Plan::Hang => std::future::pending().await,
        }
    }
    async fn predict_size(&self, _: &str, _: &str, _: &str, _: &str) -> Option<u64> {
        None
    }
    async fn unload(&self, id: &str) -> Result<(), MeshError> {
        self.unload_calls.fetch_add(1, Ordering::SeqCst);
        let failing = self.failing_unloads.load(Ordering::SeqCst);
        if failing > 0 {
            self.failing_unloads.store(failing - 1, Ordering::SeqCst);
            return Err(MeshError::Unavailable("runtime busy".into()));
        }
        self.unloads.lock().unwrap().push(id.to_string());
        Ok(())
    }
}

struct Pod {
    local: Arc<LocalModels>,
    fake: Arc<Fake>,
    registry: Arc<Table<ModelRecord>>,
}

/// A pod with room for `models` copies of 1 MiB, `slots` loads at a time, a 5 s load timeout.
async fn pod(models: u64, slots: u32, tune: impl FnOnce(&mut LocalConfig)) -> Pod {
    let store: Arc<dyn KvStore> = Arc::new(MemoryStore::new());
    let registry = Table::start(store, "/mm/registry/".into())
        .await
        .expect("registry");
    let info = RuntimeInfo {
        capacity_bytes: models * MIB,
        max_loading_concurrency: slots,
        load_timeout: Duration::from_secs(5),
        default_model_size: MIB,
        version: "fake".into(),
        method_infos: HashMap::new(),
        allow_any_method: true,
    };
    let mut cfg = LocalConfig::new("me");
    cfg.failure_expiry = Duration::from_secs(30);
    cfg.unload_retry_delay = Duration::from_secs(1);
    cfg.space_wait = Duration::from_secs(10);
    tune(&mut cfg);
    let fake = Arc::new(Fake::default());
    let local = LocalModels::new(cfg, fake.clone(), info, registry.clone());
    Pod {
        local,
        fake,
        registry,
    }
}

impl Pod {
    async fn register(&self, id: &str) -> ModelRecord {
        let rec = ModelRecord {
            model_type: "fake".into(),
            path: format!("models/{id}"),
            ..Default::default()
        };
        self.registry
            .update(id, |_| Update::Put(rec.clone()))
            .await
            .expect("register");
        rec
    }
    async fn ensure(&self, id: &str) -> Result<(), MeshError> {
        let rec = self.registry.get(id).map(|(r, _)| r).expect("registered");
        self.local.ensure(id, &rec, Priority::Urgent).await
    }
    fn holders(&self, id: &str) -> Vec<String> {
        self.registry
            .get(id)
            .map(|(r, _)| r.instance_ids.keys().cloned().collect())
            .unwrap_or_default()
    }
    fn used_bytes(&self) -> u64 {
        self.local.usage().1
    }
}

/// Lets spawned tasks (unloads, deregistrations) run until `done`, in paused time.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(start_paused = true)]
async fn a_copy_loads_registers_and_is_hit_without_another_load() {
    let p = pod(4, 1, |_| {}).await;
    p.register("a").await;
    assert_eq!(p.local.status("a"), None);
    p.ensure("a").await.expect("loaded");
    assert_eq!(p.local.status("a"), Some(CopyStatus::Loaded));
    assert_eq!(p.holders("a"), vec!["me"], "registered as a holder");
    assert_eq!(p.used_bytes(), MIB);
    assert!(p.local.try_hit("a"));
    p.ensure("a").await.expect("still loaded");
    assert_eq!(p.fake.loads(), vec!["a"], "one load");
}

#[tokio::test(start_paused = true)]
async fn queued_loads_wait_for_a_slot_and_take_room_only_when_they_start() {
    let p = pod(4, 1, |_| {}).await;
    p.register("a").await;
    p.register("b").await;
    p.fake.plan("a", &[Plan::Ok(Duration::from_secs(2), MIB)]);
    p.fake.plan("b", &[Plan::Ok(Duration::from_secs(2), MIB)]);
    let (la, lb) = (p.local.clone(), p.local.clone());
    let (ra, rb) = (
        p.registry.get("a").unwrap().0,
        p.registry.get("b").unwrap().0,
    );
    let a = tokio::spawn(async move { la.ensure("a", &ra, Priority::Urgent).await });
    until("a loading", || p.fake.loads() == vec!["a"]).await;
    let b = tokio::spawn(async move { lb.ensure("b", &rb, Priority::Urgent).await });
    until("b queued", || {
        p.local.status("b") == Some(CopyStatus::Loading)
    })
    .await;
    // b is registered while it waits (peers send its requests here) but holds no room yet.
    until("b registered", || p.holders("b") == vec!["me"]).await;
    assert_eq!(p.local.lock().lru.len(), 1, "only a is in the cache");
    a.await.unwrap().expect("a");
    b.await.unwrap().expect("b");
    assert_eq!(p.fake.most_loading.load(Ordering::SeqCst), 1, "one slot");
    assert_eq!(p.fake.loads(), vec!["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_load_past_its_timeout_fails_is_remembered_and_expires() {
    let p = pod(4, 1, |_| {}).await;
    p.register("a").await;
    p.fake.plan("a", &[Plan::Hang]);
    let started = Instant::now();
    match p.ensure("a").await {
        Err(MeshError::LoadFailed { message, .. }) => {
            assert!(message.contains("timed out"), "{message}")
        }
        other => panic!("not a load failure: {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "the load timeout"
    );
    let (rec, _) = p.registry.get("a").unwrap();
    assert!(rec.failed_in.contains_key("me") && rec.instance_ids.is_empty());
    assert!(matches!(p.local.status("a"), Some(CopyStatus::Failed(_))));
    until("the runtime told to unload", || {
        p.fake.unloads() == vec!["a"]
    })
    .await;
    assert_eq!(p.used_bytes(), 0, "the failed copy's room is free");
    // Within the expiry the failure answers at once, without asking the runtime.
    assert!(matches!(
        p.ensure("a").await,
        Err(MeshError::LoadFailed { .. })
    ));
    assert_eq!(p.fake.loads().len(), 1);
    tokio::time::advance(Duration::from_secs(31)).await;
    p.ensure("a")
        .await
        .expect("loads again once the failure expired");
    assert_eq!(p.fake.loads().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_load_holds_nothing_against_the_model() {
    let p = pod(4, 1, |_| {}).await;
    p.register("a").await;
    p.fake.plan("a", &[Plan::Down]);
    assert!(matches!(
        p.ensure("a").await,
        Err(MeshError::Unavailable(_))
    ));
    let (rec, _) = p.registry.get("a").unwrap();
    assert!(rec.failed_in.is_empty(), "not the model's failure");
    until("deregistered", || p.holders("a").is_empty()).await;
    assert_eq!(p.local.status("a"), None);
    p.ensure("a").await.expect("the next request loads it");
    assert_eq!(p.fake.loads().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_superseded_generation_never_touches_its_successor() {
    let p = pod(4, 1, |_| {}).await;
    p.register("a").await;
    p.fake.plan(
        "a",
        &[
            Plan::Ok(Duration::from_secs(2), MIB),
            Plan::Fail("second generation fails"),
        ],
    );
    let (l1, r1) = (p.local.clone(), p.registry.get("a").unwrap().0);
    let first = tokio::spawn(async move { l1.ensure("a", &r1, Priority::Urgent).await });
    until("first generation loading", || p.fake.loads().len() == 1).await;
    // Removed while it loads, then wanted again: a second generation.
    p.local.remove("a", "unregistered");
    match first.await.unwrap() {
        Err(MeshError::LoadFailed { message, .. }) => assert!(message.contains("removed")),
        other => panic!("the first waiter: {other:?}"),
    }
    match p.ensure("a").await {
        Err(MeshError::LoadFailed { message, .. }) => {
            assert!(message.contains("second generation fails"), "{message}")
        }
        other => panic!("the first generation's success leaked into the second: {other:?}"),
    }
    assert!(matches!(p.local.status("a"), Some(CopyStatus::Failed(_))));
    assert_eq!(p.fake.loads().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn unloads_are_retried_and_a_lost_unload_keeps_its_room() {
    let p = pod(4, 1, |c| c.unload_retries = 5).await;
    p.register("a").await;
    p.register("b").await;
    p.ensure("a").await.expect("a");
    p.fake.failing_unloads.store(3, Ordering::SeqCst);
    p.local.remove("a", "unregistered");
    until("unloaded after retries", || p.fake.unloads() == vec!["a"]).await;
    assert_eq!(p.fake.unload_calls.load(Ordering::SeqCst), 4);
    until("room back", || p.used_bytes() == 0).await;
    // An unload that never succeeds keeps the copy's memory reserved: the runtime may still
    // hold the model.
    p.ensure("b").await.expect("b");
    p.fake.failing_unloads.store(100, Ordering::SeqCst);
    p.local.remove("b", "unregistered");
    until("every attempt made", || {
        p.fake.unload_calls.load(Ordering::SeqCst) == 9
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(p.local.usage().2, MIB, "reserved as unloading");
}

#[tokio::test(start_paused = true)]
async fn a_lost_model_is_forgotten_without_an_unload() {
    let p = pod(4, 1, |_| {}).await;
    p.register("a").await;
    p.ensure("a").await.expect("a");
    p.local.forget("a").await;
    assert_eq!(p.local.status("a"), None);
    assert!(p.holders("a").is_empty(), "deregistered");
    assert!(p.fake.unloads().is_empty());
    assert_eq!(p.used_bytes(), 0);
    p.ensure("a").await.expect("reloaded");
    assert_eq!(p.fake.loads().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn eviction_makes_room_and_announces_the_victim() {
    let p = pod(2, 1, |_| {}).await;
    let mut evicted = p.local.evictions();
    for id in ["a", "b", "c"] {
        p.register(id).await;
        p.ensure(id).await.expect(id);
    }
    let victim = evicted.recv().await.expect("an eviction");
    assert!(victim == "a" || victim == "b", "{victim}");
    until("victim unloaded", || {
        p.fake.unloads() == vec![victim.clone()]
    })
    .await;
    assert_eq!(p.local.status("c"), Some(CopyStatus::Loaded));
    assert_eq!(p.local.status(&victim), None);
    assert!(p.used_bytes() <= 2 * MIB);
    until("victim deregistered", || p.holders(&victim).is_empty()).await;
}

#[tokio::test(start_paused = true)]
async fn scale_down_drops_an_extra_copy_but_never_the_last() {
    let p = pod(4, 1, |_| {}).await;
    p.register("a").await;
    p.ensure("a").await.expect("a");
    // Another live pod holds a copy too.
    p.registry
        .update("a", |r| {
            let mut r = r.cloned().unwrap_or_default();
            r.instance_ids.insert("other".into(), 1);
            Update::Put(r)
        })
        .await
        .unwrap();
    let live: HashSet<String> = ["other".to_string()].into();
    assert!(p.local.scale_down("a", &live).await);
    assert_eq!(p.holders("a"), vec!["other"]);
    until("unloaded", || p.fake.unloads() == vec!["a"]).await;
    // The only copy stays.
    p.register("b").await;
    p.ensure("b").await.expect("b");
    assert!(!p.local.scale_down("b", &live).await);
    assert_eq!(p.local.status("b"), Some(CopyStatus::Loaded));
}

#[tokio::test(start_paused = true)]
async fn a_full_load_queue_refuses_new_loads() {
    let p = pod(8, 1, |c| c.max_queued_loads = 1).await;
    for id in ["a", "b", "c"] {
        p.register(id).await;
    }
    p.fake.plan("a", &[Plan::Hang]);
    p.fake.plan("b", &[Plan::Ok(Duration::from_secs(1), MIB)]);
    let (la, ra) = (p.local.clone(), p.registry.get("a").unwrap().0);
    let (lb, rb) = (p.local.clone(), p.registry.get("b").unwrap().0);
    tokio::spawn(async move { la.ensure("a", &ra, Priority::Urgent).await });
    until("a loading", || p.fake.loads() == vec!["a"]).await;
    tokio::spawn(async move { lb.ensure("b", &rb, Priority::Urgent).await });
    until("b queued", || {
        p.local.status("b") == Some(CopyStatus::Loading)
    })
    .await;
    match p.ensure("c").await {
        Err(MeshError::ResourceExhausted(m)) => assert!(m.contains("MM_MAX_QUEUED_LOADS"), "{m}"),
        other => panic!("not refused: {other:?}"),
    }
}
