//! The mesh's side of the ModelRuntime SPI: start-up polling of runtimeStatus, validation of
//! what the runtime reports, and load / unload / size calls.

use crate::cache::UNIT_BYTES;
use crate::error::MeshError;
use modelmesh_proto::mmesh::{
    self as pb, model_runtime_client::ModelRuntimeClient,
    runtime_status_response::Status as RtStatus,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::transport::Channel;

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

/// A ModelRuntime client.
#[derive(Debug, Clone)]
pub struct RuntimeClient {
    client: ModelRuntimeClient<Channel>,
}

fn runtime_err(what: &str, id: &str, s: tonic::Status) -> MeshError {
    // A runtime that died mid-call shows as a transport error with no status of its own.
    let lost = crate::proxy::connection_lost(&s);
    match s.code() {
        _ if lost => MeshError::Unavailable(format!(
            "runtime connection lost during {what} of {id}: {}",
            s.message()
        )),
        Code::Unavailable => MeshError::Unavailable(format!(
            "runtime unavailable during {what} of {id}: {}",
            s.message()
        )),
        c => MeshError::Runtime(c, format!("{what} of {id} failed: {}", s.message())),
    }
}

impl RuntimeClient {
    /// A client over `channel`.
    pub fn new(channel: Channel) -> Self {
        RuntimeClient {
            client: ModelRuntimeClient::new(channel),
        }
    }

    /// Polls runtimeStatus every `every` until READY (validated) or `timeout`.
    pub async fn bootstrap(
        &self,
        every: Duration,
        timeout: Duration,
    ) -> Result<RuntimeInfo, MeshError> {
        let deadline = Instant::now() + timeout;
        let mut last: String;
        loop {
            match self
                .client
                .clone()
                .runtime_status(pb::RuntimeStatusRequest {})
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    match RtStatus::try_from(r.status) {
                        Ok(RtStatus::Ready) => {
                            return validate(&r).map_err(MeshError::FailedPrecondition);
                        }
                        Ok(RtStatus::Starting) => last = "STARTING".into(),
                        _ => {
                            return Err(MeshError::FailedPrecondition(
                                "runtime reported FAILING".into(),
                            ));
                        }
                    }
                }
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

    /// Loads a model; returns its size in bytes (asking modelSize when the load reports 0).
    pub async fn load(
        &self,
        id: &str,
        model_type: &str,
        path: &str,
        key: &str,
    ) -> Result<u64, MeshError> {
        let req = pb::LoadModelRequest {
            model_id: id.into(),
            model_type: model_type.into(),
            model_path: path.into(),
            model_key: key.into(),
        };
        let r = self
            .client
            .clone()
            .load_model(req)
            .await
            .map_err(|s| runtime_err("load", id, s))?
            .into_inner();
        if r.size_in_bytes > 0 {
            return Ok(r.size_in_bytes);
        }
        let s = self
            .client
            .clone()
            .model_size(pb::ModelSizeRequest {
                model_id: id.into(),
            })
            .await;
        Ok(s.map(|s| s.into_inner().size_in_bytes).unwrap_or(0))
    }

    /// A fast size estimate, if the runtime offers one.
    pub async fn predict_size(
        &self,
        id: &str,
        model_type: &str,
        path: &str,
        key: &str,
    ) -> Option<u64> {
        let req = pb::PredictModelSizeRequest {
            model_id: id.into(),
            model_type: model_type.into(),
            model_path: path.into(),
            model_key: key.into(),
        };
        let mut req = tonic::Request::new(req);
        req.set_timeout(Duration::from_millis(500));
        self.client
            .clone()
            .predict_model_size(req)
            .await
            .ok()
            .map(|r| r.into_inner().size_in_bytes)
            .filter(|s| *s > 0)
    }

    /// Unloads a model; NOT_FOUND counts as done.
    pub async fn unload(&self, id: &str) -> Result<(), MeshError> {
        match self
            .client
            .clone()
            .unload_model(pb::UnloadModelRequest {
                model_id: id.into(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(runtime_err("unload", id, s)),
        }
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
