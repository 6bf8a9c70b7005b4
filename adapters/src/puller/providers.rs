//! Storage providers: fetching a model path from S3, GCS, Azure Blob, HTTP(S), a PVC mount or a
//! local directory into the model's local directory. The clouds go through `object_store`.

use super::http_guard;
use super::safe_path::{self, check_inside, check_tree_inside, clean_relative};
use super::storage_config::StorageConfig;
use crate::error::AdapterError;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, RetryConfig, path::Path as ObjPath};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Parallel object downloads per model.
const DOWNLOAD_CONCURRENCY: usize = 4;

/// Where providers that read mounted volumes find them.
#[derive(Debug, Clone)]
pub struct Mounts {
    /// Root of PVC mounts: `pvc` entries read `<pvc_root>/<name>/<path>`.
    pub pvc_root: PathBuf,
    /// Whether `http` storage may be on loopback or link-local addresses.
    pub allow_loopback: bool,
}

fn retry() -> RetryConfig {
    // A wrong endpoint or bucket should fail in seconds, not after object_store's 3-minute default.
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

fn pull_err(e: impl std::fmt::Display) -> AdapterError {
    AdapterError::Pull(e.to_string())
}

fn s3(cfg: &StorageConfig) -> Result<Arc<dyn ObjectStore>, AdapterError> {
    let bucket = cfg.require("bucket")?;
    let mut b = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        // Region is optional (MinIO and most S3-compatible stores ignore it).
        .with_region(cfg.str("region").unwrap_or("us-east-1"))
        .with_retry(retry());
    if let Some(ep) = cfg.str("endpoint_url") {
        let ep = if ep.contains("://") {
            ep.to_string()
        } else {
            format!("https://{ep}")
        };
        b = b
            .with_endpoint(&ep)
            .with_allow_http(ep.starts_with("http://"));
    }
    match (cfg.str("access_key_id"), cfg.str("secret_access_key")) {
        (Some(k), Some(s)) => b = b.with_access_key_id(k).with_secret_access_key(s),
        (None, None) => b = b.with_skip_signature(true),
        _ => {
            return Err(AdapterError::invalid(
                "s3 storage configuration needs both access_key_id and secret_access_key, or neither for anonymous access",
            ));
        }
    }
    Ok(Arc::new(b.build().map_err(pull_err)?))
}

fn gcs(cfg: &StorageConfig) -> Result<Arc<dyn ObjectStore>, AdapterError> {
    let bucket = cfg.require("bucket")?;
    let key = cfg.str("private_key");
    let email = cfg.str("client_email");
    if key.is_some() != email.is_some() {
        return Err(AdapterError::invalid(
            "gcs storage configuration needs both private_key and client_email, or neither for anonymous access",
        ));
    }
    let mut sa = serde_json::json!({
        "private_key": key.unwrap_or(""),
        "private_key_id": cfg.str("private_key_id").unwrap_or(""),
        "client_email": email.unwrap_or(""),
        "disable_oauth": key.is_none(),
    });
    if let Some(ep) = cfg.str("endpoint_url") {
        sa["gcs_base_url"] = serde_json::Value::from(ep.trim_end_matches('/'));
    }
    let mut b = object_store::gcp::GoogleCloudStorageBuilder::new()
        .with_bucket_name(bucket)
        .with_service_account_key(sa.to_string())
        .with_retry(retry());
    if cfg
        .str("endpoint_url")
        .is_some_and(|e| e.starts_with("http://"))
    {
        b = b.with_client_options(object_store::ClientOptions::new().with_allow_http(true));
    }
    Ok(Arc::new(b.build().map_err(pull_err)?))
}

/// Splits an Azure connection string (`k=v;k=v`) into its parts.
fn connection_string(s: &str) -> Vec<(String, String)> {
    s.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn azure(cfg: &StorageConfig) -> Result<Arc<dyn ObjectStore>, AdapterError> {
    let container = cfg.require("container")?;
    let mut account = cfg.str("account_name").map(str::to_string);
    let mut endpoint = cfg.str("endpoint_url").map(str::to_string);
    let mut b = object_store::azure::MicrosoftAzureBuilder::new()
        .with_container_name(container)
        .with_retry(retry());
    let mut authed = false;
    if let Some(cs) = cfg.str("connection_string") {
        for (k, v) in connection_string(cs) {
            match k.as_str() {
                "AccountName" => account = account.or(Some(v)),
                "AccountKey" => {
                    b = b.with_access_key(v);
                    authed = true;
                }
                "BlobEndpoint" => endpoint = endpoint.or(Some(v)),
                "SharedAccessSignature" => {
                    let pairs = v
                        .trim_start_matches('?')
                        .split('&')
                        .filter_map(|p| p.split_once('='))
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .collect::<Vec<_>>();
                    b = b.with_sas_authorization(pairs);
                    authed = true;
                }
                _ => {}
            }
        }
    } else if let (Some(id), Some(secret), Some(tenant)) = (
        cfg.str("client_id"),
        cfg.str("client_secret"),
        cfg.str("tenant_id"),
    ) {
        b = b
            .with_client_id(id)
            .with_client_secret(secret)
            .with_tenant_id(tenant);
        authed = true;
    }
    let account = account.ok_or_else(|| {
        AdapterError::invalid(
            "azure storage configuration is missing required string 'account_name'",
        )
    })?;
    b = b.with_account(account);
    if let Some(ep) = endpoint {
        b = b
            .with_allow_http(ep.starts_with("http://"))
            .with_endpoint(ep.trim_end_matches('/').to_string());
    }
    if !authed {
        b = b.with_skip_signature(true);
    }
    Ok(Arc::new(b.build().map_err(pull_err)?))
}

/// Downloads one object to `dest`, streaming.
async fn download(store: &dyn ObjectStore, loc: &ObjPath, dest: &Path) -> Result<(), AdapterError> {
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| AdapterError::io(format!("creating {}", parent.display()), e))?;
    }
    let got = store.get(loc).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => {
            AdapterError::NotFound(format!("object '{loc}' not found in storage"))
        }
        other => pull_err(other),
    })?;
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| AdapterError::io(format!("creating {}", dest.display()), e))?;
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(pull_err)?;
        file.write_all(&chunk)
            .await
            .map_err(|e| AdapterError::io(format!("writing {}", dest.display()), e))?;
    }
    file.flush()
        .await
        .map_err(|e| AdapterError::io(format!("writing {}", dest.display()), e))?;
    Ok(())
}

/// Fetches `remote` (a file or a prefix) from an object store into `dest`.
async fn fetch_objects(
    store: Arc<dyn ObjectStore>,
    remote: &Path,
    dest: &Path,
) -> Result<(), AdapterError> {
    let key = remote.to_string_lossy().replace('\\', "/");
    let loc = ObjPath::from(key.as_str());
    // A single object at exactly this key?
    if let Ok(meta) = store.head(&loc).await
        && meta.size > 0
    {
        return download(store.as_ref(), &loc, dest).await;
    }
    let objects: Vec<_> = store
        .list(Some(&loc))
        .try_collect()
        .await
        .map_err(|e| match e {
            // A key with `..` or similar would land outside the model directory.
            object_store::Error::InvalidPath { source } => AdapterError::invalid(format!(
                "storage under '{key}' holds an object with an unsafe key: {source}"
            )),
            other => pull_err(other),
        })?;
    let prefix = format!("{key}/");
    let mut jobs = Vec::new();
    for o in objects {
        let k = o.location.to_string();
        // Skip directory markers and anything not strictly under the prefix.
        if o.size == 0 || k.ends_with('/') {
            continue;
        }
        let Some(rel) = k.strip_prefix(&prefix) else {
            continue;
        };
        let target = dest.join(clean_relative(rel)?);
        jobs.push((o.location, target));
    }
    if jobs.is_empty() {
        return Err(AdapterError::NotFound(format!(
            "no objects found at '{key}' in storage"
        )));
    }
    futures::stream::iter(jobs)
        .map(|(loc, target)| {
            let store = store.clone();
            async move { download(store.as_ref(), &loc, &target).await }
        })
        .buffer_unordered(DOWNLOAD_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn fetch_http(
    cfg: &StorageConfig,
    remote: &Path,
    dest: &Path,
    allow_loopback: bool,
) -> Result<(), AdapterError> {
    let base = cfg.require("url")?;
    let mut url = reqwest::Url::parse(base)
        .map_err(|e| AdapterError::invalid(format!("http storage url is not a URL: {e}")))?;
    // The model path goes onto the URL's path; a query (a signed URL's token) stays a query.
    let joined = format!(
        "{}/{}",
        url.path().trim_end_matches('/'),
        remote.to_string_lossy().replace('\\', "/")
    );
    url.set_path(&joined);
    if let Some(prefix) = cfg.str(super::overrides::URL_PATH_PREFIX)
        && url.path() != prefix
        && !url.path().starts_with(&format!("{prefix}/"))
    {
        return Err(AdapterError::invalid(format!(
            "storage_params.url: the model must be under the storage entry's URL path {prefix}, not {}",
            http_guard::redact(&url)
        )));
    }
    let shown = http_guard::redact(&url);
    let addrs = http_guard::checked_addrs(&url, allow_loopback).await?;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(h) = cfg.fields.get("headers").and_then(|h| h.as_object()) {
        for (k, v) in h {
            let vals: Vec<&str> = match v {
                serde_json::Value::String(s) => vec![s.as_str()],
                serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
                _ => vec![],
            };
            for val in vals {
                let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                    AdapterError::invalid(format!("http storage header name '{k}' is invalid"))
                })?;
                let value = reqwest::header::HeaderValue::from_str(val).map_err(|_| {
                    AdapterError::invalid(format!("http storage header '{k}' has an invalid value"))
                })?;
                headers.append(name, value);
            }
        }
    }
    let mut client = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(15 * 60))
        .redirect(http_guard::same_origin_redirects(&url))
        // A proxy would resolve the host itself, past the checked addresses.
        .no_proxy();
    // Connect only to the addresses that were checked (a second lookup could answer otherwise).
    if let Some(host) = url
        .host_str()
        .filter(|h| h.parse::<std::net::IpAddr>().is_err())
    {
        client = client.resolve_to_addrs(host, &addrs);
    }
    let client = client.build().map_err(|e| pull_err(e.without_url()))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| pull_err(format!("GET {shown}: {}", e.without_url())))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(AdapterError::NotFound(format!(
            "GET {shown} answered 404 Not Found"
        )));
    }
    if !status.is_success() {
        return Err(pull_err(format!("GET {shown} answered {status}")));
    }
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| AdapterError::io(format!("creating {}", parent.display()), e))?;
    }
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| AdapterError::io(format!("creating {}", dest.display()), e))?;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| pull_err(format!("GET {shown}: {}", e.without_url())))?
    {
        file.write_all(&chunk)
            .await
            .map_err(|e| AdapterError::io(format!("writing {}", dest.display()), e))?;
    }
    file.flush()
        .await
        .map_err(|e| AdapterError::io(format!("writing {}", dest.display()), e))?;
    Ok(())
}

/// Links a file or directory from a mounted root (PVC or local directory), refusing anything
/// that resolves outside that root.
/// Where a model on mounted storage (`pvc`, `local`) is, with the same checks as a pull;
/// `None` for storage that must be fetched.
pub fn mounted_path(
    cfg: &StorageConfig,
    remote: &Path,
    mounts: &Mounts,
) -> Result<Option<PathBuf>, AdapterError> {
    let root = match cfg.kind.as_str() {
        "pvc" => safe_path::join(&mounts.pvc_root, cfg.require("name")?)?,
        "local" => PathBuf::from(cfg.require("root")?),
        _ => return Ok(None),
    };
    let src = root.join(remote);
    let canonical = check_inside(&root, &src)?;
    check_tree_inside(&root, &src)?;
    Ok(Some(canonical))
}

fn link_mounted(root: &Path, remote: &Path, dest: &Path) -> Result<(), AdapterError> {
    let src = root.join(remote);
    let canonical = check_inside(root, &src)?;
    check_tree_inside(root, &src)?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| AdapterError::io(format!("creating {}", parent.display()), e))?;
    }
    symlink(&canonical, dest)
}

/// Creates a symlink `link` → `target`.
pub fn symlink(target: &Path, link: &Path) -> Result<(), AdapterError> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, link).map_err(|e| {
            AdapterError::io(
                format!("linking {} -> {}", link.display(), target.display()),
                e,
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (target, link);
        Err(AdapterError::Unimplemented(
            "symlinks need a Unix host".into(),
        ))
    }
}

/// Fetches `remote` (already checked to be relative and free of `..`) into `dest`.
pub async fn fetch(
    cfg: &StorageConfig,
    remote: &Path,
    dest: &Path,
    mounts: &Mounts,
) -> Result<(), AdapterError> {
    match cfg.kind.as_str() {
        "s3" => fetch_objects(s3(cfg)?, remote, dest).await,
        "gcs" | "gs" => fetch_objects(gcs(cfg)?, remote, dest).await,
        "azure" => fetch_objects(azure(cfg)?, remote, dest).await,
        "http" | "https" => fetch_http(cfg, remote, dest, mounts.allow_loopback).await,
        "pvc" => {
            let name = cfg.require("name")?;
            let root = safe_path::join(&mounts.pvc_root, name)?;
            link_mounted(&root, remote, dest)
        }
        "local" => {
            let root = PathBuf::from(cfg.require("root")?);
            link_mounted(&root, remote, dest)
        }
        other => Err(AdapterError::invalid(format!(
            "storage type '{other}' is not supported (supported: s3, gcs, azure, http, pvc, local)"
        ))),
    }
}
