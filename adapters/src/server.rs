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

/// gRPC methods the mesh may route to a KServe v2 server (the model id in field 1).
pub const METHOD_INFOS: &[&str] = &[
    "inference.GRPCInferenceService/ModelInfer",
    "inference.GRPCInferenceService/ModelMetadata",
    // Beyond upstream: the mesh can proxy this bidirectional stream.
    "inference.GRPCInferenceService/ModelStreamInfer",
];

/// Memory a loaded LLM takes beyond its weights and KV cache in llama.cpp (its own process,
/// compute buffers, the vocabulary): measured at 40-60 MiB for small models.
pub const LLM_PROCESS_OVERHEAD_BYTES: u64 = 64 << 20;

/// The methods a server of `kind` serves, each with the path of its model-id field (empty:
/// the mesh puts the id where the protocol wants it, the JSON body's `model` for OpenAI).
pub fn method_infos(kind: ServerType) -> Vec<(String, Vec<u32>)> {
    match kind {
        ServerType::Llamacpp => modelmesh_proto::openai::ROUTES
            .iter()
            .map(|(m, _)| (m.to_string(), Vec::new()))
            .collect(),
        ServerType::Triton | ServerType::Mlserver => METHOD_INFOS
            .iter()
            .map(|m| (m.to_string(), vec![1]))
            .collect(),
    }
}

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
        let laid = {
            let (cfg, src) = (self.cfg.clone(), path.clone());
            // File-system work off the async workers.
            tokio::task::spawn_blocking(move || {
                adapt_layout(&cfg, &id, &mt, &src, schema.as_deref())
            })
            .await
            .map_err(|e| AdapterError::Io(format!("layout task failed: {e}")))??
        };
        tracing::info!(model_id = %req.model_id, model_type, layout = %laid.path.display(), "loading model");
        self.server.load(&req.model_id).await.map_err(|s| {
            AdapterError::runtime(format!("model server failed to load '{}'", req.model_id), s)
        })?;
        let size = match &laid.gguf {
            Some(info) => {
                // The context the router really gave it (a model trained for less gets less).
                let n_ctx = self
                    .server
                    .context_tokens(&req.model_id)
                    .await
                    .unwrap_or_else(|| self.cfg.llm_context_tokens.min(info.context_length));
                llm_size(info, n_ctx)
            }
            None => {
                let disk = key.disk_size_bytes().or_else(|| Some(disk_size(&path)));
                self.cfg.size_for_disk(disk)
            }
        };
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
        if self.cfg.server_type == ServerType::Llamacpp {
            remove_all(&self.cfg.layout_dir().join(format!("{id}.gguf")))?;
        }
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
        let method_infos = method_infos(self.cfg.server_type)
            .into_iter()
            .map(|(m, path)| {
                (
                    m,
                    MethodInfo {
                        id_injection_path: path,
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

    /// Size estimate before loading: from modelKey's `disk_size_bytes`, or a local path's size
    /// (for an LLM, its GGUF header's weights and KV cache).
    fn predict_size(&self, req: &pb::PredictModelSizeRequest) -> Result<u64, AdapterError> {
        let key = ModelKey::parse(&req.model_key)?;
        if let Some(d) = key.disk_size_bytes() {
            return Ok(self.cfg.size_for_disk(Some(d)));
        }
        // An LLM's size is its GGUF header's: read where the file is mounted (a PVC, a local
        // directory) or local already; a file still to be fetched gets the default.
        let llm_file = match &self.puller {
            _ if self.cfg.server_type != ServerType::Llamacpp || req.model_path.is_empty() => None,
            Some(p) => p.mounted_path(&req.model_path, &key),
            None => Some(PathBuf::from(&req.model_path)),
        };
        if let Some(file) = llm_file
            && let Ok(info) = gguf_of(&file)
        {
            return Ok(llm_size(
                &info,
                self.cfg.llm_context_tokens.min(info.context_length),
            ));
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
        if self.cfg.server_type == ServerType::Llamacpp {
            let dir = self.cfg.layout_dir();
            let file = [dir.join(format!("{id}.gguf")), dir.join(&id)]
                .into_iter()
                .find(|p| p.exists());
            if let Some(info) = file.and_then(|f| gguf_of(&f).ok()) {
                let n_ctx = match self.server.context_tokens(&id).await {
                    Some(n) => n,
                    None => self.cfg.llm_context_tokens.min(info.context_length),
                };
                return Ok(Response::new(pb::ModelSizeResponse {
                    size_in_bytes: llm_size(&info, n_ctx),
                }));
            }
        }
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

/// Memory of an LLM loaded with `n_ctx` tokens of context: its weights (mapped from the
/// file), its KV cache and the model process's own.
pub fn llm_size(info: &crate::gguf::GgufInfo, n_ctx: u64) -> u64 {
    info.file_bytes
        .saturating_add(info.kv_cache_bytes(n_ctx))
        .saturating_add(LLM_PROCESS_OVERHEAD_BYTES)
}

/// The GGUF header of the model at `path` (a `.gguf` file, or a directory holding one).
fn gguf_of(path: &Path) -> Result<crate::gguf::GgufInfo, AdapterError> {
    let file = if path.is_dir() {
        let files: Vec<PathBuf> = layout::entries(path)?
            .into_iter()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
            })
            .collect();
        layout::llamacpp::model_file(&files)
            .cloned()
            .ok_or_else(|| {
                AdapterError::invalid(format!("{} holds no .gguf model file", path.display()))
            })?
    } else {
        path.to_path_buf()
    };
    crate::gguf::read(&file).map_err(|e| {
        AdapterError::invalid(format!(
            "{} is not a usable GGUF model: {e}",
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ))
    })
}

/// A model laid out for its server.
#[derive(Debug)]
pub struct Laid {
    /// Where the server finds it.
    pub path: PathBuf,
    /// An LLM's GGUF header (checked before the server is asked to load it).
    pub gguf: Option<crate::gguf::GgufInfo>,
}

/// Builds the server's layout for a local model.
pub fn adapt_layout(
    cfg: &AdapterConfig,
    id: &str,
    model_type: &str,
    src: &Path,
    schema: Option<&Path>,
) -> Result<Laid, AdapterError> {
    let dir = cfg.layout_dir();
    let plain = |path| Laid { path, gguf: None };
    match cfg.server_type {
        ServerType::Triton => layout::triton::adapt(&dir, id, model_type, src, schema).map(plain),
        ServerType::Mlserver => {
            layout::mlserver::adapt(&dir, id, model_type, src, schema).map(plain)
        }
        ServerType::Llamacpp => {
            // A damaged file is refused here, with what is wrong with it, rather than by a
            // model process that exits.
            let info = gguf_of(src)?;
            let adapted = layout::llamacpp::adapt(&dir, id, src)?;
            Ok(Laid {
                path: adapted.path,
                gguf: Some(info),
            })
        }
    }
}
