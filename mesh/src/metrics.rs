//! Prometheus metrics on `/metrics`, with upstream's metric names and millisecond buckets.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use metrics_util::MetricKindMask;
use std::net::SocketAddr;
use std::time::Duration;

/// Labelled series not updated for this long are dropped from `/metrics`, so ids and methods
/// seen once do not stay forever.
const IDLE_SERIES: Duration = Duration::from_secs(3600);

/// The methods the proxy labels by name: KServe v2 / Triton, TF Serving and MLServer's
/// repository API. A client can send any path; anything else is `other`, so no request can
/// mint a new series.
const KNOWN_METHODS: &[&str] = &[
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "ModelStreamInfer",
    "ModelConfig",
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
    "TraceSetting",
    "LogSettings",
    "Predict",
    "Classify",
    "Regress",
    "MultiInference",
    "GetModelMetadata",
    "ChatCompletions",
    "Completions",
    "Embeddings",
];

/// The services whose methods are labelled by name.
const KNOWN_SERVICES: &[&str] = &[
    "inference.GRPCInferenceService",
    "tensorflow.serving.PredictionService",
    "inference.model_repository.ModelRepositoryService",
    "mmesh.OpenAI",
];

/// The metric label of a gRPC path (`package.Service/Method`): the method name if it is a known
/// method of a known service, else `other`.
pub fn method_label(path: &str) -> &'static str {
    let path = path.trim_start_matches('/');
    let Some((service, method)) = path.split_once('/') else {
        return "other";
    };
    if !KNOWN_SERVICES.contains(&service) {
        return "other";
    }
    KNOWN_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// The metric label of an outcome: `OK` or the gRPC code's name.
pub fn code_label(code: Option<tonic::Code>) -> &'static str {
    use tonic::Code::*;
    match code {
        None | Some(Ok) => "OK",
        Some(Cancelled) => "Cancelled",
        Some(Unknown) => "Unknown",
        Some(InvalidArgument) => "InvalidArgument",
        Some(DeadlineExceeded) => "DeadlineExceeded",
        Some(NotFound) => "NotFound",
        Some(AlreadyExists) => "AlreadyExists",
        Some(PermissionDenied) => "PermissionDenied",
        Some(ResourceExhausted) => "ResourceExhausted",
        Some(FailedPrecondition) => "FailedPrecondition",
        Some(Aborted) => "Aborted",
        Some(OutOfRange) => "OutOfRange",
        Some(Unimplemented) => "Unimplemented",
        Some(Internal) => "Internal",
        Some(Unavailable) => "Unavailable",
        Some(DataLoss) => "DataLoss",
        Some(Unauthenticated) => "Unauthenticated",
    }
}

/// Upstream's histogram buckets (ms).
const MS_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 75.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
    10000.0, 20000.0, 60000.0, 120000.0, 300000.0,
];

/// Installs the global recorder and serves `/metrics` on `addr`.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_milliseconds".into()), MS_BUCKETS)
        .map_err(|e| e.to_string())?
        .idle_timeout(
            MetricKindMask::COUNTER | MetricKindMask::HISTOGRAM,
            Some(IDLE_SERIES),
        )
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_methods_become_labels() {
        assert_eq!(
            method_label("inference.GRPCInferenceService/ModelInfer"),
            "ModelInfer"
        );
        assert_eq!(
            method_label("/inference.GRPCInferenceService/ModelStreamInfer"),
            "ModelStreamInfer"
        );
        assert_eq!(
            method_label("tensorflow.serving.PredictionService/Predict"),
            "Predict"
        );
        assert_eq!(
            method_label("inference.GRPCInferenceService/Random123"),
            "other"
        );
        assert_eq!(method_label("evil.Service/ModelInfer"), "other");
        assert_eq!(method_label("x"), "other");
        assert_eq!(method_label(""), "other");
        assert_eq!(code_label(None), "OK");
        assert_eq!(
            code_label(Some(tonic::Code::ResourceExhausted)),
            "ResourceExhausted"
        );
    }
}
