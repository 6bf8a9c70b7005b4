//! Adapter settings. Names and defaults are the upstream adapters' environment variables
//! (`ADAPTER_PORT`, `RUNTIME_PORT`, `CONTAINER_MEM_REQ_BYTES`, ...); the CLI exposes each as a flag.

use std::path::PathBuf;

/// Which model server the adapter drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerType {
    /// Triton (or `modelmesh runtime`), through `inference.GRPCInferenceService`.
    Triton,
    /// MLServer, through its model-repository API.
    Mlserver,
    /// llama.cpp's `llama-server` in router mode (GGUF LLMs), over its HTTP API.
    Llamacpp,
}

impl ServerType {
    /// Directory under `ROOT_MODEL_DIR` holding the server's adapted models.
    pub fn layout_subdir(self) -> &'static str {
        match self {
            ServerType::Triton => "_triton_models",
            ServerType::Mlserver => "_mlserver_models",
            ServerType::Llamacpp => "_llamacpp_models",
        }
    }
}

/// Everything the adapter needs to know.
#[derive(Debug, Clone)]
pub struct AdapterConfig {
    /// Server kind.
    pub server_type: ServerType,
    /// Host of the model server (same pod: localhost).
    pub runtime_host: String,
    /// Model server port (`RUNTIME_PORT`): gRPC for Triton and MLServer, HTTP for llama.cpp.
    pub runtime_port: u16,
    /// Memory requested by the model server container (`CONTAINER_MEM_REQ_BYTES`).
    pub container_mem_req_bytes: i64,
    /// Memory held back from model capacity (`MEM_BUFFER_BYTES`).
    pub mem_buffer_bytes: i64,
    /// Loads the server can do at once (`LOADING_CONCURRENCY`).
    pub loading_concurrency: u32,
    /// Load timeout in ms (`LOADTIME_TIMEOUT`).
    pub loadtime_timeout_ms: u32,
    /// Size assumed for a model whose size is unknown (`DEFAULT_MODELSIZE`).
    pub default_model_size: u64,
    /// Memory per byte on disk (`MODELSIZE_MULTIPLIER`).
    pub model_size_multiplier: f64,
    /// Version reported when the server does not say (`RUNTIME_VERSION`).
    pub runtime_version: String,
    /// Per-model concurrency limit, 0 = none (`LIMIT_PER_MODEL_CONCURRENCY`).
    pub limit_per_model_concurrency: u32,
    /// Tokens of context each LLM is loaded with (llama.cpp: the router's `-c`), for its KV
    /// cache's share of the size estimate (`LLM_CONTEXT_TOKENS`).
    pub llm_context_tokens: u64,
    /// Local model root (`ROOT_MODEL_DIR`).
    pub root_model_dir: PathBuf,
    /// Pull models from storage before loading (`USE_EMBEDDED_PULLER`).
    pub use_embedded_puller: bool,
    /// Mounted storage-config secret (`STORAGE_CONFIG_DIR`).
    pub storage_config_dir: PathBuf,
    /// Root of PVC mounts (`PVC_MOUNTS_DIR`).
    pub pvc_mounts_dir: PathBuf,
    /// Storage beyond the clouds and PVCs the operator allows (`MODELMESH_ALLOW_LOCAL_STORAGE`,
    /// `MODELMESH_STORAGE_ALLOW_LOOPBACK`).
    pub storage_policy: crate::puller::StoragePolicy,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        AdapterConfig {
            server_type: ServerType::Triton,
            runtime_host: "localhost".into(),
            runtime_port: 8001,
            container_mem_req_bytes: -1,
            mem_buffer_bytes: 256 * 1024 * 1024,
            loading_concurrency: 1,
            loadtime_timeout_ms: 30_000,
            default_model_size: 1_000_000,
            model_size_multiplier: 1.25,
            runtime_version: "v1".into(),
            limit_per_model_concurrency: 0,
            llm_context_tokens: 4096,
            root_model_dir: "/models".into(),
            use_embedded_puller: false,
            storage_config_dir: "/storage-config".into(),
            pvc_mounts_dir: "/pvc_mounts".into(),
            storage_policy: Default::default(),
        }
    }
}

impl AdapterConfig {
    /// Checks the settings; the error names the variable to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.container_mem_req_bytes < 0 {
            return Err("CONTAINER_MEM_REQ_BYTES must be set to the model server container's memory request (bytes, or a size such as 1Gi)".into());
        }
        if self.capacity_bytes() == 0 {
            return Err(format!(
                "CONTAINER_MEM_REQ_BYTES ({}) must be larger than MEM_BUFFER_BYTES ({})",
                self.container_mem_req_bytes, self.mem_buffer_bytes
            ));
        }
        if self.model_size_multiplier.is_nan() || self.model_size_multiplier <= 0.0 {
            return Err(format!(
                "MODELSIZE_MULTIPLIER must be > 0, got {}",
                self.model_size_multiplier
            ));
        }
        if self.loading_concurrency == 0 {
            return Err("LOADING_CONCURRENCY must be at least 1".into());
        }
        if self.root_model_dir.as_os_str().is_empty()
            || self.root_model_dir == std::path::Path::new("/")
        {
            return Err(
                "ROOT_MODEL_DIR must be a dedicated directory (it is wiped at start-up), not '/'"
                    .into(),
            );
        }
        Ok(())
    }

    /// Model capacity: container memory minus the buffer.
    pub fn capacity_bytes(&self) -> u64 {
        u64::try_from(
            self.container_mem_req_bytes
                .saturating_sub(self.mem_buffer_bytes),
        )
        .unwrap_or(0)
    }

    /// Memory estimate for a model of `disk` bytes on disk.
    pub fn size_for_disk(&self, disk: Option<u64>) -> u64 {
        match disk {
            Some(d) if d > 0 => (d as f64 * self.model_size_multiplier).ceil() as u64,
            _ => self.default_model_size,
        }
    }

    /// Directory of the server's adapted models.
    pub fn layout_dir(&self) -> PathBuf {
        self.root_model_dir.join(self.server_type.layout_subdir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_memory_request() {
        let mut c = AdapterConfig::default();
        assert!(
            c.validate()
                .unwrap_err()
                .contains("CONTAINER_MEM_REQ_BYTES")
        );
        c.container_mem_req_bytes = 1 << 30;
        assert!(c.validate().is_ok());
        assert_eq!(c.capacity_bytes(), (1 << 30) - (256 << 20));
        assert_eq!(c.size_for_disk(Some(1000)), 1250);
        assert_eq!(c.size_for_disk(None), 1_000_000);
        c.root_model_dir = "/".into();
        assert!(c.validate().is_err());
    }
}
