//! The Predictor and InferenceService reconcilers against kube-rs's mocked API server
//! (`tower-test`: every request the reconciler makes is checked in order and answered) and a
//! scripted mesh: create, update, delete, invalid specs, a mesh that is not up yet, and
//! InferenceServices in and out of ModelMesh mode.

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use modelmesh_controller::config::Config;
use modelmesh_controller::crd::inference_service::{
    FrameworkSpec, InferenceServiceSpec, PredictorComponent,
};
use modelmesh_controller::crd::predictor::{ModelType, PredictorSpec, Storage};
use modelmesh_controller::crd::{InferenceService, Predictor};
use modelmesh_controller::mesh_client::MeshApi;
use modelmesh_controller::reconcile::Ctx;
use modelmesh_controller::reconcile::predictor::{FINALIZER, reconcile_isvc, reconcile_predictor};
use modelmesh_proto::mmesh::model_status_info::ModelStatus;
use modelmesh_proto::mmesh::v_model_status_info::VModelStatus;
use modelmesh_proto::mmesh::{ModelStatusInfo, SetVModelRequest, VModelStatusInfo};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A mesh that records calls and answers setVModel with a scripted result.
#[derive(Default)]
struct FakeMesh {
    calls: Mutex<Vec<String>>,
    set: Mutex<Vec<SetVModelRequest>>,
    answer: Mutex<Option<Result<VModelStatusInfo, tonic::Code>>>,
    delete_unavailable: bool,
}

impl MeshApi for FakeMesh {
    async fn set_vmodel(
        &self,
        ns: &str,
        req: SetVModelRequest,
    ) -> Result<VModelStatusInfo, tonic::Status> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("set {ns}/{}", req.v_model_id));
        let answer = self.answer.lock().unwrap().clone();
        let target = req.target_model_id.clone();
        self.set.lock().unwrap().push(req);
        match answer {
            Some(Ok(mut v)) => {
                if v.target_model_id.is_empty() {
                    v.target_model_id = target.clone();
                }
                if v.active_model_id.is_empty() {
                    v.active_model_id = target;
                }
                Ok(v)
            }
            Some(Err(code)) => Err(tonic::Status::new(code, "scripted failure")),
            None => Err(tonic::Status::internal("no answer scripted")),
        }
    }

    async fn delete_vmodel(
        &self,
        ns: &str,
        vmodel: &str,
        owner: &str,
    ) -> Result<(), tonic::Status> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("delete {ns}/{vmodel} owner={owner}"));
        if self.delete_unavailable {
            return Err(tonic::Status::unavailable("no runtime pod"));
        }
        Ok(())
    }

    async fn vmodel_status(
        &self,
        ns: &str,
        vmodel: &str,
        _owner: &str,
    ) -> Result<VModelStatusInfo, tonic::Status> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("status {ns}/{vmodel}"));
        Err(tonic::Status::not_found("vmodel not found"))
    }
}

fn vm(status: VModelStatus, active: ModelStatus) -> VModelStatusInfo {
    VModelStatusInfo {
        status: status as i32,
        active_model_status: Some(ModelStatusInfo {
            status: active as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One expected API call: method, path, and a check of its JSON body; the reply echoes a
/// minimal object.
struct Expect {
    method: &'static str,
    path: String,
    check: Box<dyn Fn(&Value) + Send>,
}

fn expect(method: &'static str, path: &str, check: impl Fn(&Value) + Send + 'static) -> Expect {
    Expect {
        method,
        path: path.to_string(),
        check: Box::new(check),
    }
}

/// A client whose API server answers exactly `script`, in order; the task fails the test on
/// anything else.
fn mock_api(script: Vec<Expect>, reply: Value) -> (kube::Client, tokio::task::JoinHandle<()>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let task = tokio::spawn(async move {
        for e in script {
            let (req, send) = handle
                .next_request()
                .await
                .expect("the reconciler made no further call");
            assert_eq!(req.method().as_str(), e.method, "method of {}", req.uri());
            assert_eq!(req.uri().path(), e.path);
            let bytes = req.into_body().collect_bytes().await.expect("body");
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("json body")
            };
            (e.check)(&body);
            let reply = serde_json::to_vec(&reply).expect("json");
            send.send_response(
                Response::builder()
                    .body(Body::from(reply))
                    .expect("response"),
            );
        }
    });
    (kube::Client::new(service, "default"), task)
}

fn ctx(client: kube::Client, mesh: FakeMesh) -> Arc<Ctx<FakeMesh>> {
    Arc::new(Ctx {
        mesh,
        config: std::sync::RwLock::new(Config::default()),
        now_ms: || 1_700_000_000_000,
        controller_namespace: "modelmesh-serving".into(),
        etcd_secret_name: "model-serving-etcd".into(),
        runtime_state: Default::default(),
        recorder: modelmesh_controller::reconcile::recorder(&client),
        runtime_validity: Default::default(),
        client,
    })
}

fn predictor(finalized: bool) -> Predictor {
    let mut p = Predictor::new(
        "mnist",
        PredictorSpec {
            model_type: ModelType {
                name: "onnx".into(),
                version: None,
            },
            storage: Some(Storage {
                key: Some("localMinIO".into()),
                path: Some("onnx/mnist.onnx".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    p.metadata.namespace = Some("ns".into());
    p.metadata.resource_version = Some("7".into());
    if finalized {
        p.metadata.finalizers = Some(vec![FINALIZER.into()]);
    }
    p
}

const PATH: &str = "/apis/serving.kserve.io/v1alpha1/namespaces/ns/predictors/mnist";

async fn run<F: std::future::Future<Output = T>, T>(f: F) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("the reconciler waited for an API call the test did not expect")
}

#[tokio::test]
async fn a_new_predictor_gets_a_finalizer_a_vmodel_and_a_status() {
    let reply = serde_json::to_value(predictor(true)).unwrap();
    let (client, api) = mock_api(
        vec![
            expect("PATCH", PATH, |b| {
                assert_eq!(b["metadata"]["finalizers"], json!([FINALIZER]));
            }),
            expect("PATCH", &format!("{PATH}/status"), |b| {
                let st = &b["status"];
                assert_eq!(st["activeModelState"], "Loading");
                assert_eq!(st["transitionStatus"], "UpToDate");
                assert_eq!(st["available"], true);
                assert_eq!(st["grpcEndpoint"], "grpc://modelmesh-serving.ns:8033");
                assert_eq!(st["httpEndpoint"], "http://modelmesh-serving.ns:8008");
            }),
        ],
        reply,
    );
    let mesh = FakeMesh::default();
    *mesh.answer.lock().unwrap() = Some(Ok(vm(VModelStatus::Defined, ModelStatus::Loading)));
    let c = ctx(client, mesh);
    let action = run(reconcile_predictor(Arc::new(predictor(false)), c.clone()))
        .await
        .unwrap();
    api.await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(1)),
        "a loading model is polled"
    );
    let set = c.mesh.set.lock().unwrap();
    assert_eq!(set.len(), 1);
    let r = &set[0];
    assert_eq!(r.v_model_id, "mnist");
    assert!(r.target_model_id.starts_with("mnist__ksp-"));
    assert_eq!(r.owner, "ksp");
    assert!(r.load_now && r.auto_delete_target_model);
    let info = r.model_info.as_ref().unwrap();
    assert_eq!(
        (info.r#type.as_str(), info.path.as_str()),
        ("mt:onnx", "onnx/mnist.onnx")
    );
}

#[tokio::test]
async fn an_unchanged_status_is_not_written_again() {
    let mut p = predictor(true);
    let mesh = FakeMesh::default();
    *mesh.answer.lock().unwrap() = Some(Ok(vm(VModelStatus::Defined, ModelStatus::Loaded)));
    // First pass writes the status; feed it back as the object's status.
    let (client, api) = mock_api(
        vec![expect("PATCH", &format!("{PATH}/status"), |_| {})],
        serde_json::to_value(&p).unwrap(),
    );
    let c = ctx(client, mesh);
    run(reconcile_predictor(Arc::new(p.clone()), c.clone()))
        .await
        .unwrap();
    api.await.unwrap();
    let vmodel = vm(VModelStatus::Defined, ModelStatus::Loaded);
    let mut with_ids = vmodel.clone();
    with_ids.active_model_id = c.mesh.set.lock().unwrap()[0].target_model_id.clone();
    with_ids.target_model_id = with_ids.active_model_id.clone();
    p.status = Some(modelmesh_controller::status::predictor_status(
        Some(&with_ids),
        "mt:onnx",
        &Default::default(),
        &modelmesh_controller::reconcile::predictor::endpoints(&Config::default(), "ns"),
        1_700_000_000_000,
    ));
    let (client, api) = mock_api(vec![], Value::Null);
    let c2 = ctx(client, FakeMesh::default());
    *c2.mesh.answer.lock().unwrap() = Some(Ok(vmodel));
    let action = run(reconcile_predictor(Arc::new(p), c2.clone()))
        .await
        .unwrap();
    api.await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert!(
        !c2.mesh.set.lock().unwrap()[0].load_now,
        "a loaded model is not reloaded"
    );
}

#[tokio::test]
async fn a_deleted_predictor_deletes_its_vmodel_then_its_finalizer() {
    let mut p = predictor(true);
    p.metadata.deletion_timestamp = modelmesh_controller::status::time_ms(1);
    let (client, api) = mock_api(
        vec![expect("PATCH", PATH, |b| {
            assert_eq!(b["metadata"]["finalizers"], json!([]));
        })],
        serde_json::to_value(&p).unwrap(),
    );
    let c = ctx(client, FakeMesh::default());
    let action = run(reconcile_predictor(Arc::new(p), c.clone()))
        .await
        .unwrap();
    api.await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(
        *c.mesh.calls.lock().unwrap(),
        vec!["delete ns/mnist owner=ksp".to_string()]
    );
}

#[tokio::test]
async fn an_invalid_spec_is_reported_without_registering() {
    let mut p = predictor(true);
    p.spec.path = Some("also/here.onnx".into());
    let (client, api) = mock_api(
        vec![expect("PATCH", &format!("{PATH}/status"), |b| {
            let st = &b["status"];
            assert_eq!(st["transitionStatus"], "InvalidSpec");
            assert_eq!(st["lastFailureInfo"]["reason"], "InvalidPredictorSpec");
            assert!(
                st["lastFailureInfo"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("spec.path and spec.storage.path")
            );
        })],
        serde_json::to_value(predictor(true)).unwrap(),
    );
    let c = ctx(client, FakeMesh::default());
    run(reconcile_predictor(Arc::new(p), c.clone()))
        .await
        .unwrap();
    api.await.unwrap();
    assert!(c.mesh.set.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_mesh_that_is_not_up_yet_means_waiting_for_the_runtime() {
    let (client, api) = mock_api(
        vec![expect("PATCH", &format!("{PATH}/status"), |b| {
            let st = &b["status"];
            assert_eq!(st["lastFailureInfo"]["reason"], "RuntimeUnhealthy");
            assert_eq!(st["available"], false);
        })],
        serde_json::to_value(predictor(true)).unwrap(),
    );
    let mesh = FakeMesh::default();
    *mesh.answer.lock().unwrap() = Some(Err(tonic::Code::Unavailable));
    let c = ctx(client, mesh);
    let action = run(reconcile_predictor(Arc::new(predictor(true)), c))
        .await
        .unwrap();
    api.await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(3)));
}

fn isvc(modelmesh: bool) -> InferenceService {
    let mut i = InferenceService::new(
        "sklearn-mnist",
        InferenceServiceSpec {
            predictor: PredictorComponent {
                sklearn: Some(FrameworkSpec {
                    storage_uri: Some(
                        "s3://modelmesh-example-models/sklearn/mnist-svm.joblib".into(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    i.metadata.namespace = Some("ns".into());
    i.metadata.finalizers = Some(vec![FINALIZER.into()]);
    if modelmesh {
        i.metadata.annotations = Some(
            [(
                "serving.kserve.io/deploymentMode".to_string(),
                "ModelMesh".to_string(),
            )]
            .into_iter()
            .collect(),
        );
    }
    i
}

#[tokio::test]
async fn a_modelmesh_inference_service_gets_kserve_status() {
    let path =
        "/apis/serving.kserve.io/v1beta1/namespaces/ns/inferenceservices/sklearn-mnist/status";
    let (client, api) = mock_api(
        vec![expect("PATCH", path, |b| {
            let st = &b["status"];
            assert_eq!(st["modelStatus"]["states"]["activeModelState"], "Loaded");
            assert_eq!(st["url"], "grpc://modelmesh-serving.ns:8033");
            assert_eq!(
                st["components"]["predictor"]["restUrl"],
                "http://modelmesh-serving.ns:8008"
            );
            let conds = st["conditions"].as_array().unwrap();
            assert!(
                conds
                    .iter()
                    .any(|c| c["type"] == "PredictorReady" && c["status"] == "True")
            );
        })],
        serde_json::to_value(isvc(true)).unwrap(),
    );
    let mesh = FakeMesh::default();
    *mesh.answer.lock().unwrap() = Some(Ok(vm(VModelStatus::Defined, ModelStatus::Loaded)));
    let c = ctx(client, mesh);
    run(reconcile_isvc(Arc::new(isvc(true)), c.clone()))
        .await
        .unwrap();
    api.await.unwrap();
    let set = c.mesh.set.lock().unwrap();
    assert!(set[0].target_model_id.starts_with("sklearn-mnist__isvc-"));
    assert_eq!(set[0].owner, "isvc");
    assert_eq!(
        set[0].model_info.as_ref().unwrap().path,
        "sklearn/mnist-svm.joblib"
    );
}

#[tokio::test]
async fn an_inference_service_leaving_modelmesh_mode_is_deregistered() {
    let path = "/apis/serving.kserve.io/v1beta1/namespaces/ns/inferenceservices/sklearn-mnist";
    let (client, api) = mock_api(
        vec![expect("PATCH", path, |b| {
            assert_eq!(b["metadata"]["finalizers"], json!([]))
        })],
        serde_json::to_value(isvc(false)).unwrap(),
    );
    let c = ctx(client, FakeMesh::default());
    run(reconcile_isvc(Arc::new(isvc(false)), c.clone()))
        .await
        .unwrap();
    api.await.unwrap();
    assert_eq!(
        *c.mesh.calls.lock().unwrap(),
        vec!["delete ns/sklearn-mnist owner=isvc".to_string()]
    );
}

#[tokio::test]
async fn an_updated_predictor_rolls_forward_to_a_new_model() {
    let mut p = predictor(true);
    p.status = Some(modelmesh_controller::crd::predictor::PredictorStatus {
        available: true,
        active_model_state: modelmesh_controller::crd::predictor::ModelState::Loaded,
        target_model_state: modelmesh_controller::crd::predictor::ModelState::None,
        ..Default::default()
    });
    let old_id = modelmesh_controller::registration::model_id("mnist", "ksp", &p.spec);
    p.spec.storage.as_mut().unwrap().path = Some("onnx/mnist-v2.onnx".into());
    let (client, api) = mock_api(
        vec![expect("PATCH", &format!("{PATH}/status"), |b| {
            let st = &b["status"];
            assert_eq!(st["transitionStatus"], "InProgress");
            assert_eq!(st["activeModelState"], "Loaded");
            assert_eq!(st["targetModelState"], "Loading");
            assert_eq!(st["available"], true, "the old model serves meanwhile");
        })],
        serde_json::to_value(predictor(true)).unwrap(),
    );
    let mesh = FakeMesh::default();
    let mut answer = vm(VModelStatus::Transitioning, ModelStatus::Loaded);
    answer.active_model_id = old_id.clone();
    answer.target_model_status = Some(ModelStatusInfo {
        status: ModelStatus::Loading as i32,
        ..Default::default()
    });
    *mesh.answer.lock().unwrap() = Some(Ok(answer));
    let c = ctx(client, mesh);
    let action = run(reconcile_predictor(Arc::new(p), c.clone()))
        .await
        .unwrap();
    api.await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(1)),
        "the loading target is polled"
    );
    let set = c.mesh.set.lock().unwrap();
    assert_ne!(
        set[0].target_model_id, old_id,
        "a changed spec is a new model"
    );
    assert!(!set[0].load_now);
}

#[tokio::test]
async fn a_deleted_inference_service_deletes_its_vmodel() {
    let mut i = isvc(true);
    i.metadata.deletion_timestamp = modelmesh_controller::status::time_ms(1);
    let path = "/apis/serving.kserve.io/v1beta1/namespaces/ns/inferenceservices/sklearn-mnist";
    let (client, api) = mock_api(
        vec![expect("PATCH", path, |b| {
            assert_eq!(b["metadata"]["finalizers"], json!([]))
        })],
        serde_json::to_value(isvc(true)).unwrap(),
    );
    let c = ctx(client, FakeMesh::default());
    run(reconcile_isvc(Arc::new(i), c.clone())).await.unwrap();
    api.await.unwrap();
    assert_eq!(
        *c.mesh.calls.lock().unwrap(),
        vec!["delete ns/sklearn-mnist owner=isvc".to_string()]
    );
}

#[tokio::test]
async fn a_deletion_does_not_hang_when_no_mesh_answers() {
    let mut p = predictor(true);
    // Deleting for far longer than the grace (the clock is at 1.7e12 ms).
    p.metadata.deletion_timestamp = modelmesh_controller::status::time_ms(1);
    let (client, api) = mock_api(
        vec![expect("PATCH", PATH, |b| {
            assert_eq!(b["metadata"]["finalizers"], json!([]));
        })],
        serde_json::to_value(&p).unwrap(),
    );
    let mesh = FakeMesh {
        delete_unavailable: true,
        ..Default::default()
    };
    let c = ctx(client, mesh);
    run(reconcile_predictor(Arc::new(p), c.clone()))
        .await
        .unwrap();
    api.await.unwrap();
    assert_eq!(
        c.mesh.calls.lock().unwrap().len(),
        1,
        "deleteVModel was tried"
    );
}

#[tokio::test]
async fn a_recent_deletion_waits_for_the_mesh() {
    let mut p = predictor(true);
    p.metadata.deletion_timestamp =
        modelmesh_controller::status::time_ms(1_700_000_000_000 - 5_000);
    let (client, api) = mock_api(vec![], Value::Null);
    let mesh = FakeMesh {
        delete_unavailable: true,
        ..Default::default()
    };
    let c = ctx(client, mesh);
    let r = run(reconcile_predictor(Arc::new(p), c)).await;
    api.await.unwrap();
    assert!(r.is_err(), "retried later while the mesh may come back");
}

#[tokio::test]
async fn a_recovered_model_clears_its_old_failure() {
    let mut p = predictor(true);
    p.status = Some(modelmesh_controller::crd::predictor::PredictorStatus {
        active_model_state: modelmesh_controller::crd::predictor::ModelState::FailedToLoad,
        target_model_state: modelmesh_controller::crd::predictor::ModelState::None,
        last_failure_info: Some(modelmesh_controller::crd::predictor::FailureInfo {
            location: None,
            reason: Some(modelmesh_controller::crd::predictor::FailureReason::ModelLoadFailed),
            message: Some("file not found".into()),
            model_id: None,
            time: None,
        }),
        ..Default::default()
    });
    let (client, api) = mock_api(
        vec![expect("PATCH", &format!("{PATH}/status"), |b| {
            assert_eq!(b["status"]["activeModelState"], "Loaded");
            assert_eq!(b["status"]["lastFailureInfo"], Value::Null, "{b}");
            assert!(
                b["status"]
                    .as_object()
                    .unwrap()
                    .contains_key("lastFailureInfo")
            );
        })],
        serde_json::to_value(predictor(true)).unwrap(),
    );
    let mesh = FakeMesh::default();
    *mesh.answer.lock().unwrap() = Some(Ok(vm(VModelStatus::Defined, ModelStatus::Loaded)));
    let c = ctx(client, mesh);
    run(reconcile_predictor(Arc::new(p), c)).await.unwrap();
    api.await.unwrap();
}
