//! Copies for busy models: each routed request is counted per model (scaling.rs decides when a
//! model is busy enough per copy); new copies are placed one after another on the best pods
//! that have none, in the background.

use super::Router;
use crate::placement::Placed;
use crate::registry::records::ModelRecord;
use crate::scaling::{RateWindow, note_request};
use std::collections::HashMap;
use std::sync::Mutex;

/// Default `MM_SCALEUP_RPM_THRESHOLD`.
pub const DEFAULT_SCALEUP_RPM: u64 = 2_000;

/// Request counts per model.
#[derive(Debug, Default)]
pub struct Rates(Mutex<HashMap<String, RateWindow>>);

impl Router {
    /// Counts a request for `id` (served by `copies` live copies among `pods` eligible pods)
    /// and starts adding copies when it is busy.
    pub(super) fn count_request(&self, id: &str, rec: &ModelRecord, copies: usize, pods: usize) {
        let n = {
            let mut m = self.rates.0.lock().unwrap_or_else(|e| e.into_inner());
            let w = match m.get_mut(id) {
                Some(w) => w,
                None => m.entry(id.to_string()).or_default(),
            };
            note_request(
                w,
                crate::clock::now_ms(),
                self.scaleup_rpm,
                copies,
                pods,
                rec.max_copies,
            )
        };
        if n > 0 {
            self.spawn_scaleup(id, rec, n);
        }
    }

    fn spawn_scaleup(&self, id: &str, rec: &ModelRecord, n: usize) {
        let (placement, id, rec) = (self.mesh.placement.clone(), id.to_string(), rec.clone());
        tokio::spawn(async move {
            let mut placed: Vec<String> = Vec::new();
            for _ in 0..n {
                match placement.add_copy(&id, &rec, &placed, false).await {
                    Ok(Placed::Here) => {
                        tracing::info!(model = %id, "busy model: adding a copy here");
                        placed.push(placement.me().to_string());
                    }
                    Ok(Placed::Peer(pod, _)) => {
                        tracing::info!(model = %id, pod = %pod, "busy model: adding a copy on another pod");
                        placed.push(pod);
                    }
                    Err(e) => {
                        tracing::debug!(model = %id, error = %e, "busy model: no pod for another copy");
                        return;
                    }
                }
            }
        });
    }
}
