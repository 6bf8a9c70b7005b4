//! Leader election through the KV store, and the tasks only the leader runs: the reaper (drop
//! registrations of pods gone longer than a timeout), minimum copy counts, proactive loading of
//! recently used models into free space, and the cluster-wide gauges.
//!
//! Each instance puts `<base>leaderLatch/_<instanceId>` under its own lease; the candidate with
//! the lowest create revision leads (upstream's scheme). A dead leader's key expires with its
//! lease and the next candidate takes over.

use crate::kv::{KvStore, LeaseKeeper, Op};
use crate::mesh::Mesh;
use crate::placement::Placed;
use crate::registry::Layout;
use crate::registry::table::Update;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Timing of the leader's work.
#[derive(Debug, Clone, Copy)]
pub struct LeaderConfig {
    /// Lease TTL of the candidate key, in seconds.
    pub lease_ttl_secs: i64,
    /// How often the reaper runs.
    pub reaper_every: Duration,
    /// How long an instance must be missing before its registrations are dropped.
    pub gone_after: Duration,
    /// How often recently used unloaded models are loaded into free space (`None`: never).
    pub proactive_every: Option<Duration>,
}

/// Which registrations to drop: instances referenced by records but missing from the live set
/// for longer than `gone_after`. Pure; `missing_since` is updated in place.
pub fn gone_instances(
    referenced: &HashSet<String>,
    live: &HashSet<String>,
    missing_since: &mut HashMap<String, Instant>,
    now: Instant,
    gone_after: Duration,
) -> HashSet<String> {
    missing_since.retain(|id, _| referenced.contains(id) && !live.contains(id));
    let mut gone = HashSet::new();
    for id in referenced.difference(live) {
        let since = *missing_since.entry(id.clone()).or_insert(now);
        if now.duration_since(since) >= gone_after {
            gone.insert(id.clone());
        }
    }
    gone
}

/// How long a model must keep looking unloaded before the leader loads it proactively. A
/// registration with loadNow (or a request's first load) writes the record before the pod that
/// loads it records its copy; acting on the first sighting would add a second copy in that gap.
pub const PROACTIVE_SETTLE: Duration = Duration::from_secs(3);

/// Which of this pass's proactive picks to load now: those picked in every pass since at least
/// `settle` ago. Pure; `picked_since` keeps only this pass's picks, so it stays as small as the
/// free space allows.
pub fn settled_picks(
    picked: Vec<String>,
    picked_since: &mut HashMap<String, Instant>,
    now: Instant,
    settle: Duration,
) -> Vec<String> {
    let this_pass: HashSet<&String> = picked.iter().collect();
    picked_since.retain(|id, _| this_pass.contains(id));
    picked
        .into_iter()
        .filter(|id| {
            let since = *picked_since.entry(id.clone()).or_insert(now);
            now.duration_since(since) >= settle
        })
        .collect()
}

/// Runs the election and, while leading, the reaper. `is_leader` reflects the current state.
pub fn spawn(
    store: Arc<dyn KvStore>,
    layout: &Layout,
    mesh: Arc<Mesh>,
    cfg: LeaderConfig,
    is_leader: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let prefix = format!(
        "{}leaderLatch/",
        layout.instances().trim_end_matches("instances/")
    );
    let me = mesh.local.instance_id().to_string();
    let key = format!("{prefix}_{me}");
    tokio::spawn(async move {
        let mut keeper: Option<LeaseKeeper> = None;
        let mut missing_since = HashMap::new();
        let mut last_reap = Instant::now();
        let mut last_min_check = Instant::now();
        let mut last_proactive = Instant::now();
        // Copies recently asked for: a queued load only shows in the registry once it starts,
        // so without this every pass would ask again. Minimum copies remember how many copies
        // the model should have once the asked-for ones appear.
        let mut asked: HashMap<String, Instant> = HashMap::new();
        let mut picked_since: HashMap<String, Instant> = HashMap::new();
        let mut recheck = false;
        let mut asked_min: HashMap<String, (usize, Instant)> = HashMap::new();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if keeper.is_none() {
                if let Ok(lease) = store.grant_lease(cfg.lease_ttl_secs).await
                    && store
                        .txn(
                            vec![],
                            vec![Op::Put {
                                key: key.clone(),
                                value: me.clone().into_bytes(),
                                lease,
                            }],
                        )
                        .await
                        .is_ok()
                {
                    keeper = Some(LeaseKeeper::start(store.clone(), lease, cfg.lease_ttl_secs));
                }
                continue;
            }
            let Ok((candidates, _)) = store.range(&prefix).await else {
                continue;
            };
            if !candidates.iter().any(|c| c.key == key) {
                keeper = None; // our key expired: stand again
                continue;
            }
            let leader = candidates
                .iter()
                .min_by_key(|c| c.create_revision)
                .map(|c| c.key.clone());
            let leading = leader.as_deref() == Some(key.as_str());
            if leading != is_leader.swap(leading, Ordering::Relaxed) {
                tracing::info!(leader = leading, "leadership changed");
            }
            if !leading {
                continue;
            }
            if last_min_check.elapsed() >= MIN_COPIES_EVERY {
                last_min_check = Instant::now();
                asked_min.retain(|_, (_, t)| t.elapsed() < ASKED_FOR);
                ensure_min_copies(&mesh, &mut asked_min).await;
            }
            // A pass whose picks wait to settle is followed by one after PROACTIVE_SETTLE, not
            // a whole interval later.
            if let Some(every) = cfg.proactive_every
                && (last_proactive.elapsed() >= every
                    || (recheck && last_proactive.elapsed() >= PROACTIVE_SETTLE))
            {
                last_proactive = Instant::now();
                asked.retain(|_, t| t.elapsed() < ASKED_FOR);
                recheck = load_proactively(&mesh, &mut asked, &mut picked_since).await;
            }
            if last_reap.elapsed() < cfg.reaper_every {
                continue;
            }
            last_reap = Instant::now();
            reap(&mesh, &mut missing_since, cfg.gone_after).await;
            gauges(&mesh);
        }
    })
}

async fn reap(
    mesh: &Arc<Mesh>,
    missing_since: &mut HashMap<String, Instant>,
    gone_after: Duration,
) {
    let live: HashSet<String> = mesh
        .instances
        .list()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // Scanned in place: copying a large registry every few seconds would stall the pod.
    let referenced: HashSet<String> = mesh.registry.fold(HashSet::new(), |mut acc, _, r| {
        for i in r.instance_ids.keys().chain(r.failed_in.keys()) {
            if !acc.contains(i) {
                acc.insert(i.clone());
            }
        }
        acc
    });
    let gone = gone_instances(
        &referenced,
        &live,
        missing_since,
        Instant::now(),
        gone_after,
    );
    if gone.is_empty() {
        return;
    }
    let affected = mesh.registry.list_where(|r| {
        r.instance_ids
            .keys()
            .chain(r.failed_in.keys())
            .any(|i| gone.contains(i))
    });
    for (id, _) in affected {
        let gone = gone.clone();
        let _ = mesh
            .registry
            .update(&id, |cur| match cur {
                Some(r) => {
                    let mut r = r.clone();
                    r.instance_ids.retain(|i, _| !gone.contains(i));
                    r.failed_in.retain(|i, _| !gone.contains(i));
                    r.fails.retain(|i, _| !gone.contains(i));
                    Update::Put(r)
                }
                None => Update::Keep,
            })
            .await;
    }
    tracing::info!(instances = ?gone, "reaper removed registrations of instances that are gone");
}

/// How often the leader checks per-model minimum copy counts.
const MIN_COPIES_EVERY: Duration = Duration::from_secs(2);
/// How long the leader waits for a copy it asked for before asking again.
const ASKED_FOR: Duration = Duration::from_secs(30);

/// Loads one more copy of every model below its minimum copy count, on the best eligible pod
/// without one.
async fn ensure_min_copies(mesh: &Arc<Mesh>, asked: &mut HashMap<String, (usize, Instant)>) {
    for (id, rec) in mesh.registry.list_where(|r| r.min_copies > 0) {
        let instances = mesh.placement.eligible_instances(&rec.model_type);
        let up = instances.values().filter(|i| !i.shutdown).count();
        let live = rec
            .instance_ids
            .keys()
            .filter(|p| instances.get(*p).is_some_and(|i| !i.shutdown))
            .count();
        let want = (rec.min_copies as usize).min(up);
        // Copies asked for earlier that have not shown up yet.
        if asked.get(&id).is_some_and(|(expected, _)| live < *expected) {
            continue;
        }
        if live >= want {
            asked.remove(&id);
            continue;
        }
        // All the missing copies at once, each on a different pod.
        let mut placed: Vec<String> = Vec::new();
        for _ in live..want {
            match mesh.placement.add_copy(&id, &rec, &placed, false).await {
                Ok(Placed::Here) => {
                    tracing::info!(model = %id, min = rec.min_copies, "below its minimum copies: loading here");
                    placed.push(mesh.placement.me().to_string());
                }
                Ok(Placed::Peer(pod, _)) => {
                    tracing::info!(model = %id, pod = %pod, min = rec.min_copies, "below its minimum copies: loading on another pod");
                    placed.push(pod);
                }
                Err(e) => {
                    tracing::debug!(model = %id, error = %e, "below its minimum copies: no pod can take another copy");
                    break;
                }
            }
        }
        asked.insert(id.clone(), (live + placed.len(), Instant::now()));
    }
}

/// Loads recently used models that have no copy into free space (`scaling::proactive_loads`),
/// so their next request does not wait for a load. True when some picks wait to settle.
async fn load_proactively(
    mesh: &Arc<Mesh>,
    asked: &mut HashMap<String, Instant>,
    picked_since: &mut HashMap<String, Instant>,
) -> bool {
    // Copying and sorting a million records takes about a second: off the async workers, so
    // requests on this pod do not wait for it.
    let (m, skip) = (mesh.clone(), asked.keys().cloned().collect::<HashSet<_>>());
    let decided = tokio::task::spawn_blocking(move || {
        let instances: std::collections::BTreeMap<_, _> = m.instances.list().into_iter().collect();
        // Only models without a copy on a pod that is up are candidates: copy just those.
        let up = |p: &String| instances.get(p).is_some_and(|i| !i.shutdown);
        let records: Vec<_> = m
            .registry
            .list_where(|r| !r.instance_ids.keys().any(up))
            .into_iter()
            .filter(|(id, _)| !skip.contains(id))
            .collect();
        let ids = crate::scaling::proactive_loads(
            &records,
            &instances,
            |model_type, pod| m.placement.may_hold(model_type, pod),
            |_, r| m.local.predicted_units(r),
            crate::clock::now_ms(),
            m.local.failure_expiry_ms(),
        );
        (ids, records)
    })
    .await;
    let Ok((picked, records)) = decided else {
        return false;
    };
    let n = picked.len();
    let ids = settled_picks(picked, picked_since, Instant::now(), PROACTIVE_SETTLE);
    let waiting = ids.len() < n;
    if ids.is_empty() {
        return waiting;
    }
    tracing::info!(
        models = ids.len(),
        "loading recently used models into free space"
    );
    let by_id: HashMap<String, _> = records.into_iter().collect();
    for id in ids {
        let Some(rec) = by_id.get(&id) else { continue };
        asked.insert(id.clone(), Instant::now());
        if let Err(e) = mesh.placement.add_copy(&id, rec, &[], false).await {
            tracing::debug!(model = %id, error = %e, "proactive load not placed");
        }
    }
    waiting
}

fn gauges(mesh: &Arc<Mesh>) {
    let (managed, loaded, failed) = mesh.registry.fold((0, 0, 0), |(n, l, f), _, r| {
        (
            n + 1,
            l + usize::from(!r.instance_ids.is_empty()),
            f + usize::from(!r.failed_in.is_empty()),
        )
    });
    metrics::gauge!("modelmesh_models_loaded_total").set(loaded as f64);
    metrics::gauge!("modelmesh_models_with_failure_total").set(failed as f64);
    metrics::gauge!("modelmesh_models_managed_total").set(managed as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_gone_only_after_the_timeout() {
        let referenced: HashSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let live: HashSet<String> = ["a"].iter().map(|s| s.to_string()).collect();
        let mut since = HashMap::new();
        let t0 = Instant::now();
        assert!(
            gone_instances(&referenced, &live, &mut since, t0, Duration::from_secs(10)).is_empty()
        );
        let later = t0 + Duration::from_secs(11);
        let gone = gone_instances(
            &referenced,
            &live,
            &mut since,
            later,
            Duration::from_secs(10),
        );
        assert_eq!(gone, ["b".to_string()].into_iter().collect());
        // It came back: forgotten.
        let live2: HashSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        assert!(
            gone_instances(
                &referenced,
                &live2,
                &mut since,
                later,
                Duration::from_secs(10)
            )
            .is_empty()
        );
        assert!(since.is_empty());
    }

    #[test]
    fn proactive_picks_wait_until_they_settle() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let settle = Duration::from_secs(3);
        let mut since = HashMap::new();
        let t0 = Instant::now();
        // First sighting: nothing yet (its loading copy may not be recorded so far).
        assert!(settled_picks(ids(&["a", "b"]), &mut since, t0, settle).is_empty());
        // "b" got a copy meanwhile (not picked): forgotten; "a" still picked but too soon.
        let t1 = t0 + Duration::from_secs(1);
        assert!(settled_picks(ids(&["a"]), &mut since, t1, settle).is_empty());
        assert_eq!(since.len(), 1);
        let t2 = t0 + Duration::from_secs(3);
        assert_eq!(
            settled_picks(ids(&["a", "b"]), &mut since, t2, settle),
            ids(&["a"])
        );
        // "b" starts over from its new first sighting.
        let t3 = t2 + Duration::from_secs(3);
        assert_eq!(
            settled_picks(ids(&["a", "b"]), &mut since, t3, settle),
            ids(&["a", "b"])
        );
    }
}
