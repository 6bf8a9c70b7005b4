//! The `mmesh.ModelRuntime` service: load (pull, adapt the layout, ask the server to load),
//! unload (unload, delete files), sizes, and runtime status (purge everything, report capacity).

use crate::backend::ModelServer;
use crate::config::{AdapterConfig, ServerType};
use crate::error::AdapterError;
use crate::layout;
use crate::model_key::ModelKey;
use crate::puller::{Puller, disk_size, remove_all, validate_model_id};
use modelmesh_proto::mmesh::{
    self as pb, model_runtime_server::ModelRuntime, runtime_status_response::MethodInfo,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

/// gRPC methods the mesh may route to the server, with the field that carries the model id.
pub const METHOD_INFOS: &[&str] = &[
    "inference.GRPCInferenceService/ModelInfer",
    "inference.GRPCInferenceService/ModelMetadata",
    // Beyond upstream: the mesh can proxy this bidirectional stream.
    "inference.GRPCInferenceService/ModelStreamInfer",
];

/// The adapter: a ModelRuntime in front of one model server.
pub struct Adapter {
    cfg: AdapterConfig,
    server: Arc<dyn ModelServer>,
    puller: Option<Puller>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter").field("cfg", &self.cfg).finish()
    }
}

impl Adapter {
    /// An adapter over `server` with settings `cfg` (validated by the caller).
    pub fn new(cfg: AdapterConfig, server: Arc<dyn ModelServer>) -> Self {
        let puller = cfg.use_embedded_puller.then(|| {
            Puller::new(
                cfg.root_model_dir.clone(),
                cfg.storage_config_dir.clone(),
                cfg.pvc_mounts_dir.clone(),
                cfg.storage_policy,
            )
        });
        Adapter {
            cfg,
            server,
            puller,
            locks: Mutex::default(),
        }
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(id.to_string()).or_default().clone()
    }

    async fn load(&self, req: pb::LoadModelRequest) -> Result<pb::LoadModelResponse, AdapterError> {
        validate_model_id(&req.model_id)?;
        let key = ModelKey::parse(&req.model_key)?;
        let model_type = key.model_type(&req.model_type);
        if model_type.is_empty() {
            return Err(AdapterError::invalid(
                "model type is missing: set modelType or modelKey.model_type.name",
            ));
        }
        let lock = self.lock_for(&req.model_id);
        let _g = lock.lock().await;
        let (path, key) = match &self.puller {
            Some(p) => {
                let pulled = p.pull(&req.model_id, &req.model_path, &key).await?;
                (pulled.model_path, pulled.model_key)
            }
            None => {
                if req.model_path.is_empty() {
                    return Err(AdapterError::invalid("modelPath must not be empty"));
                }
                (PathBuf::from(&req.model_path), key)
            }
        };
        let schema = key
            .str("schema_path")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let id = req.model_id.clone();
        let mt = model_type.clone();
        let adapted = {
            let (cfg, src) = (self.cfg.clone(), path.clone());
            // File-system work off the async workers.
            tokio::task::spawn_blocking(move || {
                adapt_layout(&cfg, &id, &mt, &src, schema.as_deref())
            })
            .await
            .map_err(|e| AdapterError::Io(format!("layout task failed: {e}")))??
        };
        tracing::info!(model_id = %req.model_id, model_type, layout = %adapted.display(), "loading model");
        self.server.load(&req.model_id).await.map_err(|s| {
            AdapterError::runtime(format!("model server failed to load '{}'", req.model_id), s)
        })?;
        let disk = key.disk_size_bytes().or_else(|| Some(disk_size(&path)));
        let size = self.cfg.size_for_disk(disk);
        tracing::info!(model_id = %req.model_id, size, "model loaded");
        Ok(pb::LoadModelResponse {
            size_in_bytes: size,
            max_concurrency: self.cfg.limit_per_model_concurrency,
        })
    }

    async fn unload(&self, id: &str) -> Result<(), AdapterError> {
        validate_model_id(id)?;
        let lock = self.lock_for(id);
        let _g = lock.lock().await;
        if let Err(s) = self.server.unload(id).await
            && !self.server.unload_means_absent(s.code())
        {
            return Err(AdapterError::runtime(
                format!("model server failed to unload '{id}'"),
                s,
            ));
        }
        remove_all(&self.cfg.layout_dir().join(id))?;
        if let Some(p) = &self.puller {
            p.cleanup(id)?;
        }
        tracing::info!(model_id = id, "model unloaded");
        Ok(())
    }

    /// Unloads everything the server has and wipes the model root (keeping an empty layout dir).
    async fn purge(&self) -> Result<(), AdapterError> {
        match self.server.loaded_models().await {
            Ok(models) => {
                for m in models {
                    if let Err(s) = self.server.unload(&m).await
                        && !self.server.unload_means_absent(s.code())
                    {
                        tracing::warn!(model = %m, error = %s, "could not unload model during purge");
                    }
                }
            }
            Err(s) => tracing::warn!(error = %s, "could not list the server's models during purge"),
        }
        let root = self.cfg.root_model_dir.clone();
        let subdir = self.cfg.server_type.layout_subdir();
        tokio::task::spawn_blocking(move || -> Result<(), AdapterError> {
            std::fs::create_dir_all(&root)
                .map_err(|e| AdapterError::io(format!("creating {}", root.display()), e))?;
            for e in layout_entries(&root)? {
                remove_all(&e)?;
            }
            std::fs::create_dir_all(root.join(subdir)).map_err(|e| {
                AdapterError::io(format!("creating {}", root.join(subdir).display()), e)
            })
        })
        .await
        .map_err(|e| AdapterError::Io(format!("purge task failed: {e}")))?
    }

    /// The runtime status the mesh polls at start-up.
    pub async fn status(&self) -> pb::RuntimeStatusResponse {
        use pb::runtime_status_response::Status as S;
        let starting = pb::RuntimeStatusResponse {
            status: S::Starting as i32,
            ..Default::default()
        };
        match self.server.ready().await {
            Ok(true) => {}
            Ok(false) => return starting,
            Err(e) => {
                tracing::info!(error = %e.message(), "model server not ready yet");
                return starting;
            }
        }
        if let Err(e) = self.purge().await {
            tracing::error!(error = %e, "cannot clear the model directory");
            return pb::RuntimeStatusResponse {
                status: S::Failing as i32,
                ..Default::default()
            };
        }
        let version = match self.server.version().await {
            Ok(v) if !v.is_empty() => v,
            _ => self.cfg.runtime_version.clone(),
        };
        let method_infos = METHOD_INFOS
            .iter()
            .map(|m| {
                (
                    m.to_string(),
                    MethodInfo {
                        id_injection_path: vec![1],
                    },
                )
            })
            .collect();
        pb::RuntimeStatusResponse {
            status: S::Ready as i32,
            capacity_in_bytes: self.cfg.capacity_bytes(),
            max_loading_concurrency: self.cfg.loading_concurrency,
            model_loading_timeout_ms: self.cfg.loadtime_timeout_ms,
            default_model_size_in_bytes: self.cfg.default_model_size,
            runtime_version: version,
            numeric_runtime_version: 0,
            method_infos,
            limit_model_concurrency: self.cfg.limit_per_model_concurrency > 0,
            allow_any_method: false,
        }
    }

    /// Size estimate before loading: from modelKey's `disk_size_bytes`, or a local path's size.
    fn predict_size(&self, req: &pb::PredictModelSizeRequest) -> Result<u64, AdapterError> {
        let key = ModelKey::parse(&req.model_key)?;
        if let Some(d) = key.disk_size_bytes() {
            return Ok(self.cfg.size_for_disk(Some(d)));
        }
        // Without the puller the path is local and cheap to measure; with it, it is remote and
        // the contract asks for a fast answer, so use the default.
        if self.puller.is_none() && !req.model_path.is_empty() {
            return Ok(self
                .cfg
                .size_for_disk(Some(disk_size(Path::new(&req.model_path)))));
        }
        Ok(self.cfg.default_model_size)
    }
}

/// Entries of the model root (all of them are removed at purge).
fn layout_entries(root: &Path) -> Result<Vec<PathBuf>, AdapterError> {
    Ok(std::fs::read_dir(root)
        .map_err(|e| AdapterError::io(format!("reading {}", root.display()), e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect())
}

#[tonic::async_trait]
impl ModelRuntime for Adapter {
    async fn load_model(
        &self,
        req: Request<pb::LoadModelRequest>,
    ) -> Result<Response<pb::LoadModelResponse>, Status> {
        let req = req.into_inner();
        let id = req.model_id.clone();
        match self.load(req).await {
            Ok(r) => Ok(Response::new(r)),
            Err(e) => {
                tracing::warn!(model_id = %id, error = %e, "load failed");
                Err(e.into())
            }
        }
    }

    async fn unload_model(
        &self,
        req: Request<pb::UnloadModelRequest>,
    ) -> Result<Response<pb::UnloadModelResponse>, Status> {
        self.unload(&req.into_inner().model_id).await?;
        Ok(Response::new(pb::UnloadModelResponse {}))
    }

    async fn predict_model_size(
        &self,
        req: Request<pb::PredictModelSizeRequest>,
    ) -> Result<Response<pb::PredictModelSizeResponse>, Status> {
        let req = req.into_inner();
        validate_model_id(&req.model_id)?;
        Ok(Response::new(pb::PredictModelSizeResponse {
            size_in_bytes: self.predict_size(&req)?,
        }))
    }

    async fn model_size(
        &self,
        req: Request<pb::ModelSizeRequest>,
    ) -> Result<Response<pb::ModelSizeResponse>, Status> {
        let id = req.into_inner().model_id;
        validate_model_id(&id)?;
        let local = self.cfg.root_model_dir.join(&id);
        let disk = if local.exists() {
            disk_size(&local)
        } else {
            disk_size(&self.cfg.layout_dir().join(&id))
        };
        Ok(Response::new(pb::ModelSizeResponse {
            size_in_bytes: self.cfg.size_for_disk(Some(disk)),
        }))
    }

    async fn runtime_status(
        &self,
        _: Request<pb::RuntimeStatusRequest>,
    ) -> Result<Response<pb::RuntimeStatusResponse>, Status> {
        Ok(Response::new(self.status().await))
    }
}

/// Builds the server's layout for a local model.
pub fn adapt_layout(
    cfg: &AdapterConfig,
    id: &str,
    model_type: &str,
    src: &Path,
    schema: Option<&Path>,
) -> Result<PathBuf, AdapterError> {
    let dir = cfg.layout_dir();
    match cfg.server_type {
        ServerType::Triton => layout::triton::adapt(&dir, id, model_type, src, schema),
        ServerType::Mlserver => layout::mlserver::adapt(&dir, id, model_type, src, schema),
    }
}
