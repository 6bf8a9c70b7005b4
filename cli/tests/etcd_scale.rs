//! The registry at scale on a real etcd: a registry over 8 MiB (30,000 models; one unpaginated
//! read of it went past the client's 4 MiB limit and every restarting sidecar crash-looped) is
//! read by a restarting sidecar, which becomes ready and serves one of the models; and a model
//! unregistered while a sidecar's watch was cut, with the history compacted meanwhile, is still
//! unloaded when the sidecar catches up.

mod common;

use common::kserve::{assert_outputs_match, response_json};
use common::*;
use futures::StreamExt;
use modelmesh_mesh::kv::etcd::{EtcdConfig, EtcdStore};
use modelmesh_mesh::kv::{KvStore, Op};
use modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient as Infer;
use modelmesh_proto::mmesh::model_mesh_client::ModelMeshClient;
use modelmesh_proto::mmesh::{self as mm, GetStatusRequest};
use std::process::Command;
use std::time::Duration;
use tonic::Code;

const REGISTRY: &str = "/mm/modelmesh-serving/registry/";

/// A registry record of the tiny-regression example, padded to about `bytes` bytes (a storage
/// key a real registration could carry).
fn record(bytes: usize) -> Vec<u8> {
    let pad = "x".repeat(bytes.saturating_sub(80));
    serde_json::json!({"type": "onnx", "mPath": "tiny-regression", "encKey": format!("{{\"pad\":\"{pad}\"}}")})
        .to_string()
        .into_bytes()
}

async fn connect(url: &str) -> EtcdStore {
    EtcdStore::connect(
        &EtcdConfig {
            endpoints: vec![url.to_string()],
            ..Default::default()
        },
        Duration::from_secs(10),
    )
    .await
    .expect("etcd")
}

#[tokio::test]
async fn a_sidecar_restarts_on_a_registry_over_8_mib_and_serves() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let store = connect(&url).await;
    // 30,000 models of 300 bytes: 9 MB of values, 10.6 MB with keys.
    let n = 30_000;
    let value = record(300);
    futures::stream::iter(0..n)
        .map(|i| {
            let (store, value) = (store.clone(), value.clone());
            async move {
                store
                    .txn(
                        vec![],
                        vec![Op::Put {
                            key: format!("{REGISTRY}model-{i:05}"),
                            value,
                            lease: 0,
                        }],
                    )
                    .await
            }
        })
        .buffer_unordered(64)
        .for_each(|r| async move {
            r.expect("put");
        })
        .await;
    let (kvs, _) = store.range(REGISTRY).await.expect("range");
    assert_eq!(kvs.len(), n);
    let total: usize = kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
    assert!(total > 8 << 20, "registry is only {total} bytes");

    let kv = format!("etcd:{url}");
    let mut pod = start_mesh_pod(1 << 30, 1_000_000, &["--kv-store", &kv]).await;
    // Ready means the registry was read; the first model and the last serve.
    let ex = expected();
    for id in ["model-00000", "model-29999"] {
        let r = Infer::new(channel(pod.mesh_port))
            .model_infer(common::cluster::req(
                id,
                &ex["tiny-regression"]["inputs"],
                false,
            ))
            .await
            .unwrap_or_else(|e| panic!("{id}: {e:?}\n{}", pod.sidecar.log_text()))
            .into_inner();
        assert_outputs_match(&response_json(&r), &ex["tiny-regression"]["outputs"]);
    }
    // And again after a restart of the sidecar.
    pod.restart_sidecar().await;
    let r = Infer::new(channel(pod.mesh_port))
        .model_infer(common::cluster::req(
            "model-12345",
            &ex["tiny-regression"]["inputs"],
            false,
        ))
        .await
        .unwrap_or_else(|e| panic!("model-12345: {e:?}\n{}", pod.sidecar.log_text()))
        .into_inner();
    assert_outputs_match(&response_json(&r), &ex["tiny-regression"]["outputs"]);
    pod.sidecar.assert_running();
}

fn etcdctl(url: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(url)
        .args(args)
        .output()
        .expect("etcdctl (Debian etcd-client; scripts/setup-peers.sh installs it)");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig}");
}

#[tokio::test]
async fn an_unregistration_hidden_by_a_compaction_still_unloads_the_model() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (client, peer) = (free_port(), free_port());
    let (mut etcd, url) = start_etcd_at(etcd_dir.path(), None, client, peer).await;
    let kv = format!("etcd:{url}");
    let mut pod = start_mesh_pod(1 << 30, 1_000_000, &["--kv-store", &kv]).await;
    let mut mgmt = ModelMeshClient::new(channel(pod.mesh_port));
    for id in ["gone", "stays"] {
        mgmt.register_model(mm::RegisterModelRequest {
            model_id: id.into(),
            model_info: common::cluster::info("tiny-regression"),
            load_now: true,
            sync: true,
            ..Default::default()
        })
        .await
        .expect("register");
    }
    let loaded = |id: &'static str, port: u16| async move {
        let s = ModelMeshClient::new(channel(port))
            .get_model_status(GetStatusRequest {
                model_id: id.into(),
            })
            .await;
        s.map(|s| s.into_inner().status)
    };
    assert_eq!(
        loaded("gone", pod.mesh_port).await.ok(),
        Some(mm::model_status_info::ModelStatus::Loaded as i32)
    );

    // The sidecar stops; etcd restarts under it (its watch connections die with the old etcd
    // process, with nothing in flight); "gone" is unregistered and the history that says so
    // is compacted. Resumed, the sidecar must watch again from a revision that no longer
    // exists.
    signal(&pod.sidecar, "-STOP");
    signal(&etcd, "-KILL");
    let _ = etcd.child.wait();
    let (etcd2, _) = start_etcd_at(etcd_dir.path(), None, client, peer).await;
    etcdctl(&url, &["del", &format!("{REGISTRY}gone")]);
    etcdctl(&url, &["put", "/unrelated", "1"]);
    let status = etcdctl(&url, &["endpoint", "status", "--write-out=json"]);
    let rev = serde_json::from_str::<serde_json::Value>(&status)
        .ok()
        .and_then(|v| v[0]["Status"]["header"]["revision"].as_i64())
        .expect("revision");
    etcdctl(&url, &["compact", &rev.to_string(), "--physical"]);
    signal(&pod.sidecar, "-CONT");

    // The reload after the compaction announces the deletion: the copy is unloaded.
    wait_until(
        "the unregistered model to be gone",
        &mut pod.sidecar,
        Duration::from_secs(60),
        || async {
            matches!(loaded("gone", pod.mesh_port).await, Ok(s) if s == mm::model_status_info::ModelStatus::NotFound as i32)
        },
    )
    .await;
    let e = Infer::new(channel(pod.mesh_port))
        .model_infer(common::cluster::req(
            "gone",
            &expected()["tiny-regression"]["inputs"],
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let log = pod.sidecar.log_text();
    assert!(log.contains("compacted"), "{log}");
    // The runtime no longer holds it, and the other model still serves.
    let idx =
        modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::new(
            channel(pod.runtime_port),
        )
        .repository_index(modelmesh_proto::inference::RepositoryIndexRequest {
            ready: true,
            ..Default::default()
        })
        .await
        .expect("index")
        .into_inner();
    assert!(idx.models.iter().all(|m| m.name != "gone"), "{idx:?}");
    let r = Infer::new(channel(pod.mesh_port))
        .model_infer(common::cluster::req(
            "stays",
            &expected()["tiny-regression"]["inputs"],
            false,
        ))
        .await
        .expect("stays")
        .into_inner();
    assert_outputs_match(
        &response_json(&r),
        &expected()["tiny-regression"]["outputs"],
    );
    drop(etcd2);
}
