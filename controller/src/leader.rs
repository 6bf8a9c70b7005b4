//! Leader election with a `coordination.k8s.io/v1` Lease (`modelmesh-controller-leader-lock`),
//! so only one controller replica reconciles: the holder renews it every few seconds; another
//! replica takes it over once it has not been renewed for its duration. A holder that cannot
//! renew in time stops leading (the process exits and restarts as a candidate).
//! The decision is a pure function; the loop does the API calls, with optimistic concurrency.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::time::Duration;

/// The Lease's name (upstream's).
pub const LEASE_NAME: &str = "modelmesh-controller-leader-lock";
/// How long a lease holds without renewal (upstream: 15 s).
pub const LEASE_SECONDS: i32 = 15;
/// How often the holder renews and candidates retry (upstream: 2 s).
pub const RETRY: Duration = Duration::from_secs(2);
/// Longest wait for one renewal.
pub const RENEW_TIMEOUT: Duration = Duration::from_secs(5);
/// A holder that could not renew for this long stops leading (before its lease, 15 s, runs
/// out and another replica may take over; upstream's renew deadline is 10 s).
pub const STEP_DOWN_AFTER: Duration = Duration::from_secs(10);

/// What a replica should do with the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// No lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Another holder let it expire: take it over.
    TakeOver,
    /// Another holder is alive: wait.
    Wait,
}

/// Decides from the lease's spec, this replica's identity and the time (ms).
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now_ms: i64) -> LeaseAction {
    let Some(spec) = spec else {
        return LeaseAction::Create;
    };
    if spec.holder_identity.as_deref() == Some(me) {
        return LeaseAction::Renew;
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0.as_millisecond())
        .unwrap_or(i64::MIN);
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS)) * 1000;
    if spec.holder_identity.as_deref().unwrap_or("").is_empty()
        || renewed.saturating_add(duration) < now_ms
    {
        LeaseAction::TakeOver
    } else {
        LeaseAction::Wait
    }
}

fn micro(ms: i64) -> Option<MicroTime> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(MicroTime)
}

/// One round: returns whether this replica leads now.
pub async fn try_acquire(api: &Api<Lease>, me: &str, now_ms: i64) -> Result<bool, kube::Error> {
    let current = api.get_opt(LEASE_NAME).await?;
    let action = decide(current.as_ref().and_then(|l| l.spec.as_ref()), me, now_ms);
    let held = |acquire: Option<MicroTime>, transitions: i32| LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        acquire_time: acquire,
        renew_time: micro(now_ms),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let result = match (action, current) {
        (LeaseAction::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..Default::default()
                },
                spec: Some(held(micro(now_ms), 0)),
            };
            api.create(&PostParams::default(), &lease)
                .await
                .map(|_| true)
        }
        (LeaseAction::Wait, _) => Ok(false),
        (LeaseAction::Renew | LeaseAction::TakeOver, Some(mut lease)) => {
            let old = lease.spec.clone().unwrap_or_default();
            lease.spec = Some(if action == LeaseAction::Renew {
                held(old.acquire_time.clone(), old.lease_transitions.unwrap_or(0))
            } else {
                held(micro(now_ms), old.lease_transitions.unwrap_or(0) + 1)
            });
            // `replace` carries the resourceVersion read above: a concurrent change by another
            // replica makes this fail with a conflict instead of both leading.
            api.replace(LEASE_NAME, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        }
        (_, None) => Ok(false),
    };
    match result {
        Ok(leading) => Ok(leading),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_ms: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: micro(renewed_ms),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", 0), LeaseAction::Create);
        assert_eq!(decide(Some(&spec("a", 0)), "a", 99_000), LeaseAction::Renew);
        assert_eq!(
            decide(Some(&spec("b", 100_000)), "a", 110_000),
            LeaseAction::Wait
        );
        assert_eq!(
            decide(Some(&spec("b", 100_000)), "a", 115_001),
            LeaseAction::TakeOver
        );
        assert_eq!(
            decide(Some(&spec("", 100_000)), "a", 100_001),
            LeaseAction::TakeOver
        );
    }
}
