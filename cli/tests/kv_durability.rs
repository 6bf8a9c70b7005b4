//! The embedded store of `modelmesh up --state` is durable: a registration whose write cannot
//! reach the disk fails (it used to be acknowledged and lost), and a process killed while
//! registrations stream in loses none that were acknowledged.

mod common;

use common::*;
use modelmesh_proto::mmesh::model_mesh_client::ModelMeshClient;
use modelmesh_proto::mmesh::model_status_info::ModelStatus;
use modelmesh_proto::mmesh::{self as mm, GetStatusRequest, RegisterModelRequest};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tonic::Code;

/// `modelmesh up` on `state`, with no predictors; returns it and its gRPC port once it serves.
async fn up(dir: &Path, state: &Path, name: &str) -> (Proc, u16) {
    let predictors = dir.join("no-predictors");
    std::fs::create_dir_all(&predictors).expect("mkdir");
    let (grpc, rest) = (free_port(), free_port());
    let mut cmd = modelmesh();
    cmd.args(["up", "--state"])
        .arg(state)
        .arg("--predictors")
        .arg(&predictors)
        .arg("--models")
        .arg(root().join("examples/models"))
        .args([
            "--grpc-port",
            &grpc.to_string(),
            "--rest-port",
            &rest.to_string(),
        ]);
    let mut p = Proc::spawn(name, cmd, dir);
    wait_mesh_ready(&mut p, grpc).await;
    (p, grpc)
}

fn register(id: &str) -> RegisterModelRequest {
    RegisterModelRequest {
        model_id: id.into(),
        model_info: Some(mm::ModelInfo {
            r#type: "onnx".into(),
            path: "repository/tiny-regression".into(),
            key: "{}".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn status(port: u16, id: &str) -> i32 {
    ModelMeshClient::new(channel(port))
        .get_model_status(GetStatusRequest {
            model_id: id.into(),
        })
        .await
        .map(|s| s.into_inner().status)
        .unwrap_or(-1)
}

#[tokio::test]
async fn a_write_that_cannot_reach_the_disk_fails_the_registration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir).expect("mkdir");
    let state = state_dir.join("registry.json");
    let (mut p, port) = up(dir.path(), &state, "up").await;
    let mut mgmt = ModelMeshClient::new(channel(port));
    mgmt.register_model(register("kept"))
        .await
        .expect("register");
    // The disk goes away under the store.
    std::fs::remove_dir_all(&state_dir).expect("rm");
    let e = mgmt.register_model(register("lost")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("cannot") && e.message().contains("registry.json.log"),
        "{}",
        e.message()
    );
    assert_eq!(status(port, "lost").await, ModelStatus::NotFound as i32);
    assert_ne!(status(port, "kept").await, ModelStatus::NotFound as i32);
    p.assert_running();
}

#[tokio::test]
async fn a_kill_during_registrations_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("registry.json");
    let (p, port) = up(dir.path(), &state, "up-1").await;
    let pid = p.child.id();
    // Registrations stream in; the process is killed in the middle of them.
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut mgmt = ModelMeshClient::new(channel(port));
        for i in 0..100_000 {
            let id = format!("m-{i}");
            match mgmt.register_model(register(&id)).await {
                Ok(_) => acked.push(id),
                Err(_) => break,
            }
        }
        acked
    });
    // Kill once a few hundred are in (polled, not slept: the writer's own pace decides).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while status(port, "m-300").await != ModelStatus::NotLoaded as i32 {
        assert!(
            std::time::Instant::now() < deadline,
            "registrations are not arriving"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(killed);
    let acked = writer.await.expect("writer");
    drop(p);
    assert!(acked.len() > 300, "only {} acknowledged", acked.len());
    let (mut p2, port2) = up(dir.path(), &state, "up-2").await;
    let mut missing = Vec::new();
    for id in &acked {
        if status(port2, id).await == ModelStatus::NotFound as i32 {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged registrations lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    p2.assert_running();
}
