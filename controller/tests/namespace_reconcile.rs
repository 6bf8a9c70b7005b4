//! The namespace (ServingRuntime) reconciler against kube-rs's mocked API server: a runtime a
//! predictor needs gets its tc-config, Service, etcd secret copy and Deployment (server-side
//! apply), a stale runtime Deployment is deleted, and with no predictor left the runtime scales
//! to zero after the grace period and comes back when one returns. Disabled runtimes lose
//! their Deployment.

use http::{Request, Response, StatusCode};
use k8s_openapi::ByteString;
use kube::client::Body;
use modelmesh_controller::config::Config;
use modelmesh_controller::crd::ClusterServingRuntime;
use modelmesh_controller::mesh_client::MeshApi;
use modelmesh_controller::reconcile::Ctx;
use modelmesh_controller::reconcile::namespace::reconcile_namespace;
use modelmesh_proto::mmesh::{SetVModelRequest, VModelStatusInfo};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

struct NoMesh;

impl MeshApi for NoMesh {
    async fn set_vmodel(
        &self,
        _: &str,
        _: SetVModelRequest,
    ) -> Result<VModelStatusInfo, tonic::Status> {
        Err(tonic::Status::unimplemented("not used"))
    }
    async fn delete_vmodel(&self, _: &str, _: &str, _: &str) -> Result<(), tonic::Status> {
        Err(tonic::Status::unimplemented("not used"))
    }
    async fn vmodel_status(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<VModelStatusInfo, tonic::Status> {
        Err(tonic::Status::unimplemented("not used"))
    }
}

/// What the fake API server holds and what it was asked.
#[derive(Default)]
struct World {
    runtimes: Vec<Value>,
    namespace_runtimes: Vec<Value>,
    predictors: Vec<Value>,
    deployments: Vec<String>,
    calls: Vec<(String, String, Value)>,
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

/// Answers by route; records (method, path, body) for assertions.
fn answer(w: &mut World, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    w.calls
        .push((method.to_string(), path.to_string(), body.clone()));
    let ok = |v: Value| (StatusCode::OK, v);
    match (method, path) {
        ("GET", "/apis/serving.kserve.io/v1alpha1/clusterservingruntimes") => {
            ok(list("ClusterServingRuntimeList", w.runtimes.clone()))
        }
        ("GET", "/apis/serving.kserve.io/v1alpha1/namespaces/team-a/servingruntimes") => {
            ok(list("ServingRuntimeList", w.namespace_runtimes.clone()))
        }
        ("GET", "/apis/serving.kserve.io/v1alpha1/namespaces/team-a/predictors") => {
            ok(list("PredictorList", w.predictors.clone()))
        }
        ("GET", "/apis/serving.kserve.io/v1beta1/namespaces/team-a/inferenceservices") => {
            not_found()
        }
        ("GET", "/apis/apps/v1/namespaces/team-a/deployments") => {
            let items = w
                .deployments
                .iter()
                .map(|n| json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": n}}))
                .collect();
            ok(list("DeploymentList", items))
        }
        ("GET", "/api/v1/namespaces/modelmesh-serving/secrets/model-serving-etcd") => {
            let conn = r#"{"endpoints":"http://etcd:2379","root_prefix":"modelmesh-serving"}"#;
            let secret = k8s_openapi::api::core::v1::Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some("model-serving-etcd".into()),
                    ..Default::default()
                },
                data: Some(
                    [(
                        "etcd_connection".to_string(),
                        ByteString(conn.as_bytes().to_vec()),
                    )]
                    .into(),
                ),
                ..Default::default()
            };
            ok(serde_json::to_value(secret).unwrap())
        }
        ("GET", "/api/v1/namespaces/team-a/secrets/storage-config") => not_found(),
        // A patched runtime answers with the whole object, as the API server does.
        ("PATCH", p) if p.contains("servingruntimes/") => ok(mlserver(false)),
        ("PATCH", _) => ok(body),
        ("POST", p) if p.ends_with("/events") => ok(body),
        ("DELETE", p) if p.starts_with("/apis/apps/v1/namespaces/team-a/deployments/") => {
            let name = p.rsplit('/').next().unwrap_or("").to_string();
            w.deployments.retain(|d| *d != name);
            ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
        }
        ("DELETE", _) => not_found(),
        _ => panic!("unexpected call {method} {path}"),
    }
}

fn client(world: Arc<Mutex<World>>) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (status, reply) = answer(&mut world.lock().unwrap(), &method, &path, body);
            let resp = Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            send.send_response(resp);
        }
    });
    kube::Client::new(service, "default")
}

static NOW: AtomicI64 = AtomicI64::new(0);

fn ctx(world: Arc<Mutex<World>>) -> Ctx<NoMesh> {
    let client = client(world);
    Ctx {
        mesh: NoMesh,
        config: std::sync::RwLock::new(Config::default()),
        now_ms: || NOW.load(Ordering::SeqCst),
        controller_namespace: "modelmesh-serving".into(),
        etcd_secret_name: "model-serving-etcd".into(),
        runtime_state: Default::default(),
        recorder: modelmesh_controller::reconcile::recorder(&client),
        runtime_validity: Default::default(),
        client,
    }
}

fn mlserver(disabled: bool) -> Value {
    let text = format!(
        r#"
apiVersion: serving.kserve.io/v1alpha1
kind: ClusterServingRuntime
metadata:
  name: mlserver-1.x
spec:
  supportedModelFormats:
    - name: sklearn
      version: "0"
      autoSelect: true
  protocolVersions: [grpc-v2]
  multiModel: true
  disabled: {disabled}
  grpcEndpoint: "port:8085"
  grpcDataEndpoint: "port:8001"
  containers:
    - name: mlserver
      image: seldonio/mlserver:1.3.2
      resources:
        limits: {{cpu: "5", memory: 1Gi}}
  builtInAdapter:
    serverType: mlserver
    runtimeManagementPort: 8001
"#
    );
    let rt: ClusterServingRuntime = serde_norway::from_str(&text).unwrap();
    serde_json::to_value(rt).unwrap()
}

fn sklearn_predictor() -> Value {
    json!({
        "apiVersion": "serving.kserve.io/v1alpha1", "kind": "Predictor",
        "metadata": {"name": "svm", "namespace": "team-a"},
        "spec": {"modelType": {"name": "sklearn"}, "storage": {"key": "k", "path": "p"}}
    })
}

fn applied_replicas(w: &World) -> Vec<i64> {
    w.calls
        .iter()
        .filter(|(m, p, _)| {
            m == "PATCH" && p.ends_with("/deployments/modelmesh-serving-mlserver-1.x")
        })
        .filter_map(|(_, _, b)| b["spec"]["replicas"].as_i64())
        .collect()
}

#[tokio::test]
async fn a_needed_runtime_is_deployed_and_stale_ones_removed() {
    let world = Arc::new(Mutex::new(World {
        runtimes: vec![mlserver(false)],
        predictors: vec![sklearn_predictor()],
        deployments: vec!["modelmesh-serving-old".into()],
        ..Default::default()
    }));
    let c = ctx(world.clone());
    reconcile_namespace("team-a", true, &c).await.unwrap();
    let w = world.lock().unwrap();
    let patched: Vec<&str> = w
        .calls
        .iter()
        .filter(|(m, _, _)| m == "PATCH")
        .map(|(_, p, _)| p.as_str())
        .collect();
    assert_eq!(
        patched,
        [
            "/apis/serving.kserve.io/v1alpha1/clusterservingruntimes/mlserver-1.x",
            "/api/v1/namespaces/team-a/configmaps/tc-config",
            "/api/v1/namespaces/team-a/services/modelmesh-serving",
            "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/modelmesh-serving",
            "/api/v1/namespaces/team-a/secrets/model-serving-etcd",
            "/apis/apps/v1/namespaces/team-a/deployments/modelmesh-serving-mlserver-1.x",
        ]
    );
    let body = |suffix: &str| {
        w.calls
            .iter()
            .find(|(m, p, _)| m == "PATCH" && p.ends_with(suffix))
            .map(|(_, _, b)| b.clone())
            .unwrap()
    };
    // The runtime pods' NetworkPolicy: the management port from the controller only.
    let policy = body("/networkpolicies/modelmesh-serving").to_string();
    assert!(
        policy.contains("8034") && policy.contains("control-plane"),
        "{policy}"
    );
    assert_eq!(
        body("clusterservingruntimes/mlserver-1.x")["status"]["conditions"][0],
        json!({"type": "Valid", "status": "True", "reason": "Valid"})
    );
    assert!(body("tc-config")["binaryData"]["type_constraints"].is_string());
    assert_eq!(
        body("services/modelmesh-serving")["spec"]["clusterIP"],
        "None"
    );
    let conn: Value = serde_json::from_str(
        body("secrets/model-serving-etcd")["stringData"]["etcd_connection"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(conn["root_prefix"], "modelmesh-serving/mm_ns/team-a");
    let d = body("deployments/modelmesh-serving-mlserver-1.x");
    assert_eq!(d["spec"]["replicas"], 2);
    let containers: Vec<&str> = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(containers, ["mlserver", "mlserver-adapter", "mm"]);
    assert!(
        w.calls
            .iter()
            .any(|(m, p, _)| m == "DELETE" && p.ends_with("/deployments/modelmesh-serving-old"))
    );
}

#[tokio::test]
async fn runtimes_scale_to_zero_after_the_grace_period_and_back() {
    let world = Arc::new(Mutex::new(World {
        runtimes: vec![mlserver(false)],
        predictors: vec![sklearn_predictor()],
        ..Default::default()
    }));
    let c = ctx(world.clone());
    NOW.store(1_000_000, Ordering::SeqCst);
    reconcile_namespace("team-a", true, &c).await.unwrap();
    let conditions = |w: &World| {
        w.calls
            .iter()
            .filter(|(_, p, _)| p.contains("clusterservingruntimes/"))
            .count()
    };
    assert_eq!(conditions(&world.lock().unwrap()), 1);
    world.lock().unwrap().predictors.clear();
    NOW.store(1_010_000, Ordering::SeqCst);
    let action = reconcile_namespace("team-a", true, &c).await.unwrap();
    assert_eq!(
        action,
        std::time::Duration::from_secs(60),
        "checks again when the grace period ends"
    );
    NOW.store(1_071_000, Ordering::SeqCst);
    reconcile_namespace("team-a", true, &c).await.unwrap();
    world.lock().unwrap().predictors.push(sklearn_predictor());
    NOW.store(1_072_000, Ordering::SeqCst);
    reconcile_namespace("team-a", true, &c).await.unwrap();
    assert_eq!(applied_replicas(&world.lock().unwrap()), [2, 2, 0, 2]);
    assert_eq!(
        conditions(&world.lock().unwrap()),
        1,
        "an unchanged condition is not written again"
    );
}

#[tokio::test]
async fn a_disabled_runtime_loses_its_deployment() {
    let world = Arc::new(Mutex::new(World {
        runtimes: vec![mlserver(true)],
        predictors: vec![sklearn_predictor()],
        deployments: vec!["modelmesh-serving-mlserver-1.x".into()],
        ..Default::default()
    }));
    let c = ctx(world.clone());
    reconcile_namespace("team-a", true, &c).await.unwrap();
    let w = world.lock().unwrap();
    assert!(w.deployments.is_empty(), "the Deployment was not deleted");
    assert!(applied_replicas(&w).is_empty());
    assert!(
        w.calls.iter().any(|(m, p, _)| m == "DELETE"
            && p == "/api/v1/namespaces/team-a/secrets/model-serving-etcd"),
        "the etcd secret copy goes with the last runtime"
    );
}

#[tokio::test]
async fn a_namespace_no_longer_served_is_cleaned_up() {
    let world = Arc::new(Mutex::new(World {
        runtimes: vec![mlserver(false)],
        predictors: vec![sklearn_predictor()],
        deployments: vec!["modelmesh-serving-mlserver-1.x".into()],
        ..Default::default()
    }));
    let c = ctx(world.clone());
    reconcile_namespace("team-a", false, &c).await.unwrap();
    let w = world.lock().unwrap();
    assert!(w.deployments.is_empty());
    assert!(
        w.calls
            .iter()
            .any(|(m, p, _)| m == "DELETE" && p == "/api/v1/namespaces/team-a/configmaps/tc-config")
    );
}

#[tokio::test]
async fn an_invalid_runtime_gets_a_warning_event_and_no_deployment() {
    let mut bad = mlserver(false);
    bad["kind"] = json!("ServingRuntime");
    bad["metadata"]["namespace"] = json!("team-a");
    bad["spec"]["containers"][0]["name"] = json!("mm");
    let world = Arc::new(Mutex::new(World {
        namespace_runtimes: vec![bad],
        predictors: vec![sklearn_predictor()],
        ..Default::default()
    }));
    let c = ctx(world.clone());
    reconcile_namespace("team-a", true, &c).await.unwrap();
    let w = world.lock().unwrap();
    let event = w
        .calls
        .iter()
        .find(|(m, p, _)| m == "POST" && p == "/apis/events.k8s.io/v1/namespaces/team-a/events")
        .map(|(_, _, b)| b.clone())
        .expect("an event");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "InvalidSpec");
    assert_eq!(event["regarding"]["kind"], "ServingRuntime");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("container name 'mm' is reserved"),
        "{event}"
    );
    assert!(applied_replicas(&w).is_empty());
}

#[tokio::test]
async fn a_runtime_update_is_applied_to_its_deployment() {
    let mut rt = mlserver(false);
    let world = Arc::new(Mutex::new(World {
        runtimes: vec![rt.clone()],
        predictors: vec![sklearn_predictor()],
        ..Default::default()
    }));
    let c = ctx(world.clone());
    reconcile_namespace("team-a", true, &c).await.unwrap();
    rt["spec"]["replicas"] = json!(3);
    rt["spec"]["containers"][0]["image"] = json!("seldonio/mlserver:1.4.0");
    world.lock().unwrap().runtimes = vec![rt];
    reconcile_namespace("team-a", true, &c).await.unwrap();
    let w = world.lock().unwrap();
    assert_eq!(applied_replicas(&w), [2, 3]);
    let last = w
        .calls
        .iter()
        .rev()
        .find(|(m, p, _)| {
            m == "PATCH" && p.ends_with("/deployments/modelmesh-serving-mlserver-1.x")
        })
        .map(|(_, _, b)| b.clone())
        .unwrap();
    assert_eq!(
        last["spec"]["template"]["spec"]["containers"][0]["image"],
        "seldonio/mlserver:1.4.0"
    );
}
