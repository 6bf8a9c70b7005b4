//! The leader Lease, when several replicas run: wait to take it before reconciling, renew it
//! while running, and stop once renewals have failed for longer than the lease lasts (another
//! replica may lead by then).

use crate::leader::{LEASE_SECONDS, RETRY, try_acquire};
use crate::reconcile::wall_clock_ms;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use std::time::{Duration, Instant};

/// Waits until this replica (`me`) holds the lease.
pub async fn wait_to_lead(leases: &Api<Lease>, me: &str) {
    tracing::info!(identity = %me, lease = crate::leader::LEASE_NAME, "waiting to lead");
    loop {
        match try_acquire(leases, me, wall_clock_ms()).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read or take the leader lease; retrying"),
        }
        tokio::time::sleep(RETRY).await;
    }
    tracing::info!(identity = %me, "leading");
}

/// Renews the lease for `identity`; returns when it is lost. Without an identity (one
/// replica), never returns.
pub async fn keep(leases: Api<Lease>, identity: Option<String>) {
    let Some(me) = identity else {
        return std::future::pending::<()>().await;
    };
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(RETRY).await;
        match try_acquire(&leases, &me, wall_clock_ms()).await {
            Ok(true) => last_ok = Instant::now(),
            Ok(false) => return,
            Err(e) => tracing::warn!(error = %e, "cannot renew the leader lease"),
        }
        if last_ok.elapsed() > Duration::from_secs(LEASE_SECONDS as u64) {
            return;
        }
    }
}
