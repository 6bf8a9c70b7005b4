//! Copy scaling across pods sharing a real etcd: busy models gain copies and idle extra copies
//! go when space is needed, loadNow spreads copies, the leader loads unloaded models and keeps
//! per-model minimum and maximum copy counts.

mod common;

use common::cluster::*;
use common::*;
use modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient as Infer;
use modelmesh_proto::mmesh::{
    self as mm, model_mesh_client::ModelMeshClient, model_status_info::ModelStatus,
};
use std::time::Duration;

#[tokio::test]
async fn sustained_load_adds_a_copy_and_idle_extra_copies_go_when_space_is_needed() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    // The mnist example takes 5 units of 8 KiB once loaded (see mesh.rs); each pod holds
    // exactly four. (A predicted size of one unit keeps the capacity above the minimum.)
    let unit = 8192;
    let pods = sized_cluster(
        2,
        &url,
        20 * unit,
        unit,
        &[
            "--scaleup-rpm-threshold",
            "100",
            "--janitor-interval-ms",
            "300",
        ],
    )
    .await;
    let mut mgmt = ModelMeshClient::new(channel(pods[0].mesh_port));
    let register = async |mgmt: &mut ModelMeshClient<_>, id: &str| {
        mgmt.register_model(mm::RegisterModelRequest {
            model_id: id.into(),
            model_info: info("mnist-classifier"),
            ..Default::default()
        })
        .await
        .expect("register");
    };
    register(&mut mgmt, "hot").await;
    let ex = expected();
    let input = ex["mnist-classifier"]["inputs"].clone();
    let mut c = Infer::new(channel(pods[0].mesh_port));
    c.model_infer(req("hot", &input, false))
        .await
        .expect("first request");
    assert_eq!(copies(&mut mgmt, "hot").await.len(), 1);
    // Well above 100 requests per minute per copy: a second copy appears.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        for _ in 0..20 {
            c.model_infer(req("hot", &input, false))
                .await
                .expect("request");
        }
        let now = copies(&mut mgmt, "hot").await;
        if now.len() == 2 {
            assert!(
                now.contains(&"pod-0".to_string()) && now.contains(&"pod-1".to_string()),
                "{now:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no second copy: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // pod-0 knew the real size (it loaded "hot") and told pod-1, which admitted the copy at
    // that size rather than at the one-unit prediction.
    let log = pods[1].sidecar.log_text();
    assert!(
        log.contains("admitting the model at its known size model=\"hot\" bytes=39508")
            || log.contains("admitting the model at its known size model=hot bytes=39508"),
        "pod-1 did not use the known size:\n{log}"
    );
    // Load stops; six other models fill the rest of both pods. The idle extra copy of "hot"
    // goes (dropped by scale-down once the pods are full, or evicted as least recently used),
    // and one copy stays.
    let others: Vec<String> = (0..6).map(|i| format!("fill{i}")).collect();
    for id in &others {
        register(&mut mgmt, id).await;
        c.model_infer(req(id, &input, false))
            .await
            .unwrap_or_else(|e| panic!("{id}: {e:?}"));
    }
    let left = wait_copies(&mut mgmt, "hot", "the idle extra copy stayed", |c| {
        c.len() == 1
    })
    .await;
    // It stays at one (the last copy is never dropped) and everything still serves.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(copies(&mut mgmt, "hot").await, left);
    for id in others.iter().chain(["hot".to_string()].iter()) {
        c.model_infer(req(id, &input, false))
            .await
            .unwrap_or_else(|e| panic!("{id} after scale-down: {e:?}"));
    }
}

#[tokio::test]
async fn load_now_spreads_copies_and_the_leader_loads_unloaded_models_into_free_space() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let pods = cluster(3, &url, &["--proactive-load-interval-ms", "300"]).await;
    // loadNow through one pod places copies by free space, not all on the receiving pod.
    let mut mgmt = ModelMeshClient::new(channel(pods[0].mesh_port));
    let mut homes = std::collections::BTreeSet::new();
    for i in 0..6 {
        let id = format!("now{i}");
        let s = mgmt
            .register_model(mm::RegisterModelRequest {
                model_id: id.clone(),
                model_info: info("tiny-regression"),
                load_now: true,
                sync: true,
                ..Default::default()
            })
            .await
            .expect("register")
            .into_inner();
        assert_eq!(s.status, ModelStatus::Loaded as i32, "{id}: {s:?}");
        let c = copies(&mut mgmt, &id).await;
        assert_eq!(c.len(), 1, "{id}: {c:?}");
        homes.extend(c);
    }
    assert!(homes.len() >= 2, "loadNow copies all on {homes:?}");
    // Registered without loadNow and never requested: the leader loads it into free space.
    mgmt.register_model(mm::RegisterModelRequest {
        model_id: "later".into(),
        model_info: info("tiny-regression"),
        ..Default::default()
    })
    .await
    .expect("register");
    wait_copies(&mut mgmt, "later", "never loaded proactively", |c| {
        c.len() == 1
    })
    .await;
    let input = expected()["tiny-regression"]["inputs"].clone();
    Infer::new(channel(pods[2].mesh_port))
        .model_infer(req("later", &input, false))
        .await
        .expect("request for the proactively loaded model");
}

#[tokio::test]
async fn per_model_minimum_and_maximum_copies() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let pods = cluster(3, &url, &["--scaleup-rpm-threshold", "100"]).await;
    let mut mgmt = ModelMeshClient::new(channel(pods[1].mesh_port));
    let bounded = |min: u32, max: u32| {
        Some(mm::ModelInfo {
            min_copies: min,
            max_copies: max,
            ..info("tiny-regression").expect("info")
        })
    };
    mgmt.register_model(mm::RegisterModelRequest {
        model_id: "min2".into(),
        model_info: bounded(2, 0),
        ..Default::default()
    })
    .await
    .expect("register");
    mgmt.register_model(mm::RegisterModelRequest {
        model_id: "max1".into(),
        model_info: bounded(0, 1),
        ..Default::default()
    })
    .await
    .expect("register");
    // min 2: two copies appear without any request.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while copies(&mut mgmt, "min2").await.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "min2 never reached two copies"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // max 1: sustained load does not add a copy.
    let input = expected()["tiny-regression"]["inputs"].clone();
    let mut c = Infer::new(channel(pods[0].mesh_port));
    for _ in 0..300 {
        c.model_infer(req("max1", &input, false))
            .await
            .expect("request");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(copies(&mut mgmt, "max1").await.len(), 1);
    drop(pods);
}

#[tokio::test]
async fn changing_a_vmodels_copy_bounds_applies_to_its_model() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let pods = cluster(2, &url, &[]).await;
    let mut mgmt = ModelMeshClient::new(channel(pods[0].mesh_port));
    let set = |min: u32| {
        let mut r = set_reg_vmodel("reg-a");
        if let Some(i) = r.model_info.as_mut() {
            i.min_copies = min;
        }
        r
    };
    mgmt.set_v_model(set(0)).await.expect("first");
    assert_eq!(copies(&mut mgmt, "reg-a").await.len(), 1);
    // Same target, now at least two copies (a Predictor's min-copies annotation changed).
    mgmt.set_v_model(set(2)).await.expect("bounds changed");
    wait_copies(&mut mgmt, "reg-a", "the new minimum was not applied", |c| {
        c.len() == 2
    })
    .await;
}
