//! The runtime seam: what the mesh needs from the model runtime behind it (the ModelRuntime
//! SPI: its status, load, unload, sizes), as a trait, so the copy lifecycle runs against a fake
//! in unit tests and against `grpc::RuntimeClient` in a pod.

pub mod errors;
pub mod grpc;
pub mod http;

use crate::cache::UNIT_BYTES;
use crate::error::MeshError;
use modelmesh_proto::mmesh::{self as pb, runtime_status_response::Status as RtStatus};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::Code;

/// What the mesh asks of its runtime.
#[tonic::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// runtimeStatus.
    async fn status(&self) -> Result<pb::RuntimeStatusResponse, tonic::Status>;
    /// Loads a model; its size in bytes (0 when the runtime cannot tell).
    async fn load(
        &self,
        id: &str,
        model_type: &str,
        path: &str,
        key: &str,
    ) -> Result<u64, MeshError>;
    /// A fast size estimate, if the runtime offers one.
    async fn predict_size(&self, id: &str, model_type: &str, path: &str, key: &str) -> Option<u64>;
    /// Unloads a model; one the runtime does not hold counts as done.
    async fn unload(&self, id: &str) -> Result<(), MeshError>;
}

/// What the runtime told us at start-up, validated.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    /// Model capacity in bytes.
    pub capacity_bytes: u64,
    /// Loads the runtime can run at once.
    pub max_loading_concurrency: u32,
    /// Load timeout.
    pub load_timeout: Duration,
    /// Size assumed before a model's size is known.
    pub default_model_size: u64,
    /// Runtime version string.
    pub version: String,
    /// Allowed methods → model-id injection path (empty map: any method, no injection).
    pub method_infos: HashMap<String, Vec<u32>>,
    /// Whether any method is allowed even when `method_infos` is not empty.
    pub allow_any_method: bool,
}

/// Checks a READY status as upstream does; the error says which value is wrong.
pub fn validate(r: &pb::RuntimeStatusResponse) -> Result<RuntimeInfo, String> {
    if r.max_loading_concurrency < 1 {
        return Err("runtime reported maxLoadingConcurrency < 1".into());
    }
    if r.default_model_size_in_bytes < UNIT_BYTES {
        return Err(format!(
            "runtime reported defaultModelSizeInBytes {} < {UNIT_BYTES}",
            r.default_model_size_in_bytes
        ));
    }
    if r.model_loading_timeout_ms < 100 {
        return Err(format!(
            "runtime reported modelLoadingTimeoutMs {} < 100",
            r.model_loading_timeout_ms
        ));
    }
    let d = r.default_model_size_in_bytes;
    let min_cap = (2 * d).max((512u64 << 20).min(10 * d));
    if r.capacity_in_bytes < min_cap {
        return Err(format!(
            "runtime capacity {} bytes is below the minimum {min_cap} (max(2 x default size, min(512 MiB, 10 x default size)))",
            r.capacity_in_bytes
        ));
    }
    Ok(RuntimeInfo {
        capacity_bytes: r.capacity_in_bytes,
        max_loading_concurrency: r.max_loading_concurrency,
        load_timeout: Duration::from_millis(u64::from(r.model_loading_timeout_ms)),
        default_model_size: d,
        version: r.runtime_version.clone(),
        method_infos: r
            .method_infos
            .iter()
            .map(|(k, v)| (k.clone(), v.id_injection_path.clone()))
            .collect(),
        allow_any_method: r.allow_any_method,
    })
}

/// Polls runtimeStatus every `every` until READY (validated) or `timeout`.
pub async fn bootstrap(
    runtime: &dyn Runtime,
    every: Duration,
    timeout: Duration,
) -> Result<RuntimeInfo, MeshError> {
    let deadline = Instant::now() + timeout;
    let mut last: String;
    loop {
        match runtime.status().await {
            Ok(r) => match RtStatus::try_from(r.status) {
                Ok(RtStatus::Ready) => {
                    return validate(&r).map_err(MeshError::FailedPrecondition);
                }
                Ok(RtStatus::Starting) => last = "STARTING".into(),
                _ => {
                    return Err(MeshError::FailedPrecondition(
                        "runtime reported FAILING".into(),
                    ));
                }
            },
            Err(s) if s.code() == Code::Unimplemented => {
                return Err(MeshError::FailedPrecondition(
                    "runtime does not implement mmesh.ModelRuntime".into(),
                ));
            }
            Err(s) => last = format!("{}: {}", s.code(), s.message()),
        }
        if Instant::now() >= deadline {
            return Err(MeshError::Unavailable(format!(
                "runtime not READY after {timeout:?} (last: {last})"
            )));
        }
        tracing::info!(last = %last, "waiting for the runtime to be ready");
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_follows_upstream_rules() {
        let ok = pb::RuntimeStatusResponse {
            status: 1,
            capacity_in_bytes: 1 << 30,
            max_loading_concurrency: 1,
            model_loading_timeout_ms: 30000,
            default_model_size_in_bytes: 1_000_000,
            ..Default::default()
        };
        assert!(validate(&ok).is_ok());
        let mut bad = ok.clone();
        bad.max_loading_concurrency = 0;
        assert!(validate(&bad).is_err());
        let mut bad = ok.clone();
        bad.capacity_in_bytes = 5_000_000;
        assert!(validate(&bad).unwrap_err().contains("minimum"));
        let mut bad = ok;
        bad.model_loading_timeout_ms = 10;
        assert!(validate(&bad).is_err());
    }
}
