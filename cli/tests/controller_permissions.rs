//! The controller's Kubernetes permissions are exactly the calls its code makes: the real
//! `modelmesh controller run` runs against a fake API server (a namespace opted in, a runtime,
//! an invalid runtime, predictors, one being deleted, an InferenceService, a stale Deployment)
//! that records every request as (API group, resource, verb), and the recorded set must equal
//! `charts/modelmesh/controller-permissions.json`, which the chart's RBAC must equal in turn
//! (`tests/chart/test_chart.py`). A permission granted but never used fails here, as does a
//! call the chart does not allow.

mod common;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (group, resource, verb)
type Call = (String, String, String);

#[derive(Default)]
struct World {
    /// (group, resource) → objects.
    objects: BTreeMap<(String, String), Vec<Value>>,
    calls: BTreeSet<Call>,
    /// Open watches: (group, resource) → where their events go.
    watches: Vec<((String, String), tokio::sync::mpsc::UnboundedSender<Value>)>,
}

impl World {
    /// Sends a watch event (`MODIFIED` of `object`) to every open watch of the resource.
    fn push(&mut self, group: &str, resource: &str, object: Value) {
        let key = (group.to_string(), resource.to_string());
        self.watches.retain(|(k, tx)| {
            *k != key
                || tx
                    .send(json!({"type": "MODIFIED", "object": object}))
                    .is_ok()
        });
    }

    /// Stores what a write left (create, replace, apply), by name and namespace.
    fn store(&mut self, group: &str, resource: &str, v: &Value) {
        let list = self
            .objects
            .entry((group.to_string(), resource.to_string()))
            .or_default();
        let same = |o: &Value| {
            o["metadata"]["name"] == v["metadata"]["name"]
                && o["metadata"]["namespace"] == v["metadata"]["namespace"]
        };
        list.retain(|o| !same(o));
        list.push(v.clone());
    }
}

type Shared = Arc<Mutex<World>>;

fn meta(name: &str, ns: Option<&str>) -> Value {
    let mut m = json!({"name": name, "uid": format!("uid-{name}"), "resourceVersion": "1", "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"});
    if let Some(ns) = ns {
        m["namespace"] = json!(ns);
    }
    m
}

fn world() -> World {
    let mut w = World::default();
    let mut add = |group: &str, resource: &str, v: Value| {
        w.objects
            .entry((group.to_string(), resource.to_string()))
            .or_default()
            .push(v);
    };
    add(
        "",
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta("modelmesh-serving", None)}),
    );
    let mut team = meta("team-a", None);
    team["labels"] = json!({"modelmesh-enabled": "true"});
    add(
        "",
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": team}),
    );
    add(
        "",
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("model-serving-config", Some("modelmesh-serving")),
        "data": {"config.yaml": "podsPerRuntime: 1\nscaleToZero:\n  enabled: false\n"}}),
    );
    let conn = json!({"endpoints": "http://127.0.0.1:9", "root_prefix": "mm"}).to_string();
    let data = serde_json::to_value(std::collections::BTreeMap::from([(
        "etcd_connection".to_string(),
        k8s_openapi::ByteString(conn.into_bytes()),
    )]))
    .unwrap_or_default();
    add(
        "",
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta("model-serving-etcd", Some("modelmesh-serving")),
        "data": data}),
    );
    let runtime = |name: &str, container: &str| {
        json!({"supportedModelFormats": [{"name": "onnx", "autoSelect": true}], "multiModel": true,
            "grpcEndpoint": "port:8085", "grpcDataEndpoint": "port:8001",
            "containers": [{"name": container, "image": "modelmesh/modelmesh:0.1.0"}],
            "builtInAdapter": {"serverType": "modelmesh", "runtimeManagementPort": 8001}, "_name": name})
    };
    let mut good = runtime("onnx-rt", "modelmesh");
    good.as_object_mut().map(|o| o.remove("_name"));
    add(
        "serving.kserve.io",
        "clusterservingruntimes",
        json!({"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterServingRuntime",
        "metadata": meta("onnx-rt", None), "spec": good}),
    );
    // Invalid (a reserved container name): its condition is patched and an event recorded.
    let mut bad = runtime("bad-rt", "mm");
    bad.as_object_mut().map(|o| o.remove("_name"));
    add(
        "serving.kserve.io",
        "servingruntimes",
        json!({"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
        "metadata": meta("bad-rt", Some("team-a")), "spec": bad}),
    );
    add(
        "serving.kserve.io",
        "predictors",
        json!({"apiVersion": "serving.kserve.io/v1alpha1", "kind": "Predictor",
        "metadata": meta("p1", Some("team-a")), "spec": {"modelType": {"name": "onnx"}, "path": "models/p1"}}),
    );
    let mut gone = meta("p2", Some("team-a"));
    gone["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    gone["finalizers"] = json!(["modelmesh.io/vmodel"]);
    add(
        "serving.kserve.io",
        "predictors",
        json!({"apiVersion": "serving.kserve.io/v1alpha1", "kind": "Predictor",
        "metadata": gone, "spec": {"modelType": {"name": "onnx"}, "path": "models/p2"}}),
    );
    let mut isvc = meta("i1", Some("team-a"));
    isvc["annotations"] = json!({"serving.kserve.io/deploymentMode": "ModelMesh"});
    add(
        "serving.kserve.io",
        "inferenceservices",
        json!({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": isvc, "spec": {"predictor": {"model": {"modelFormat": {"name": "onnx"}, "storageUri": "s3://bucket/i1"}}}}),
    );
    let mut stale = meta("modelmesh-serving-retired-rt", Some("team-a"));
    stale["labels"] = json!({"app.kubernetes.io/managed-by": "modelmesh-controller", "modelmesh-service": "modelmesh-serving"});
    add(
        "apps",
        "deployments",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": stale,
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}}}),
    );
    w
}

/// What an API path names.
struct ApiPath {
    group: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    sub: Option<String>,
}

fn parse(path: &str) -> Option<ApiPath> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => (String::new(), rest),
        ["apis", g, _v, rest @ ..] => (g.to_string(), rest),
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, r, tail @ ..] => (Some(ns.to_string()), [&[*r][..], tail].concat()),
        other => (None, other.to_vec()),
    };
    let resource = rest.first()?.to_string();
    Some(ApiPath {
        group,
        namespace: ns,
        resource,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

fn status(code: u16, reason: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason, "code": code, "message": reason});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn ok(v: Value) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap_or_default()
}

async fn handle(State(w): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let apply = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/apply-patch"));
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let Some(ApiPath {
        group,
        namespace: ns,
        resource,
        name,
        sub,
    }) = parse(&path)
    else {
        return status(404, "NotFound");
    };
    let full = match &sub {
        Some(s) => format!("{resource}/{s}"),
        None => resource.clone(),
    };
    let method = parts.method.as_str();
    let verb = match (method, &name) {
        ("GET", _) if query.contains("watch=true") || query.contains("watch=1") => "watch",
        ("GET", None) => "list",
        ("GET", Some(_)) => "get",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        _ => "other",
    };
    let mut world = w.lock().unwrap_or_else(|p| p.into_inner());
    world
        .calls
        .insert((group.clone(), full.clone(), verb.to_string()));
    if apply {
        // Server-side apply creates what is absent, which Kubernetes authorizes as create.
        world
            .calls
            .insert((group.clone(), full.clone(), "create".to_string()));
    }
    let objects: Vec<Value> = world
        .objects
        .get(&(group.clone(), resource.clone()))
        .cloned()
        .unwrap_or_default();
    drop(world);
    let in_ns = |o: &Value| {
        ns.as_deref()
            .is_none_or(|n| o["metadata"]["namespace"] == n)
    };
    match verb {
        "watch" => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
            w.lock()
                .unwrap_or_else(|p| p.into_inner())
                .watches
                .push(((group.clone(), resource.clone()), tx));
            let events = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
                .map(|e| Ok::<_, std::io::Error>(bytes::Bytes::from(format!("{e}\n"))));
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(events))
                .unwrap_or_default()
        }
        "list" => {
            let items: Vec<Value> = objects.into_iter().filter(in_ns).collect();
            ok(
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
            )
        }
        "get" => {
            let found = objects.into_iter().find(|o| {
                in_ns(o) && Some(o["metadata"]["name"].as_str().unwrap_or("")) == name.as_deref()
            });
            match found {
                Some(o) => ok(o),
                None => status(404, "NotFound"),
            }
        }
        "delete" => {
            ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
        }
        _ => {
            // Writes: answer the object as stored (merge patches) or as sent (apply, create).
            let stored = objects.into_iter().find(|o| {
                in_ns(o) && Some(o["metadata"]["name"].as_str().unwrap_or("")) == name.as_deref()
            });
            let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let mut v = match (apply || method == "POST" || method == "PUT", stored) {
                (false, Some(o)) => o,
                _ => sent,
            };
            if v["metadata"].is_object() {
                v["metadata"]["resourceVersion"] = json!("2");
                if v["metadata"]["uid"].is_null() {
                    v["metadata"]["uid"] = json!("uid-new");
                }
            }
            if apply || method == "POST" || method == "PUT" {
                if v["metadata"]["namespace"].is_null()
                    && let Some(ns) = &ns
                {
                    v["metadata"]["namespace"] = json!(ns);
                }
                w.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .store(&group, &resource, &v);
            }
            let code = if method == "POST" { 201 } else { 200 };
            let mut r = ok(v);
            *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or_default();
            r
        }
    }
}

fn expected() -> BTreeSet<Call> {
    let text = std::fs::read_to_string(root().join("charts/modelmesh/controller-permissions.json"))
        .expect("controller-permissions.json");
    let v: Value = serde_json::from_str(&text).expect("json");
    let mut out = BTreeSet::new();
    let rules = v["rules"].as_array().cloned().unwrap_or_default();
    for r in rules.iter().chain(std::iter::once(&v["leases"])) {
        if r["not_called"].is_string() {
            continue;
        }
        for verb in r["verbs"].as_array().into_iter().flatten() {
            out.insert((
                r["group"].as_str().unwrap_or("").to_string(),
                r["resource"].as_str().unwrap_or("").to_string(),
                verb.as_str().unwrap_or("").to_string(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn the_controller_calls_exactly_what_the_chart_grants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w: Shared = Arc::new(Mutex::new(world()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().fallback(handle).with_state(w.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: modelmesh-serving\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: t\n"
        ),
    )
    .expect("kubeconfig");
    let mut cmd = modelmesh();
    cmd.args([
        "controller",
        "run",
        "--namespace",
        "modelmesh-serving",
        "--health-port",
        "0",
        "--metrics-port",
        "0",
    ])
    .env("KUBECONFIG", &kubeconfig)
    .env("POD_NAME", "controller-0");
    let mut p = Proc::spawn("controller", cmd, dir.path());
    let want = expected();
    let calls = |w: &Shared| w.lock().unwrap_or_else(|e| e.into_inner()).calls.clone();
    let made = |w: &Shared, c: (&str, &str, &str)| {
        calls(w).contains(&(c.0.to_string(), c.1.to_string(), c.2.to_string()))
    };
    // Once team-a is served and the invalid runtime reported, the runtime changes (a second
    // report of the same event is a patch of its series), then team-a stops being served
    // (everything made there is deleted).
    wait_until("team-a served", &mut p, Duration::from_secs(60), || {
        let done = made(&w, ("apps", "deployments", "patch"))
            && made(&w, ("events.k8s.io", "events", "create"));
        async move { done }
    })
    .await;
    let csr = w.lock().unwrap_or_else(|e| e.into_inner()).objects[&(
        "serving.kserve.io".to_string(),
        "clusterservingruntimes".to_string(),
    )][0]
        .clone();
    let mut changed = csr.clone();
    changed["metadata"]["resourceVersion"] = json!("5");
    w.lock().unwrap_or_else(|e| e.into_inner()).push(
        "serving.kserve.io",
        "clusterservingruntimes",
        changed,
    );
    wait_until(
        "the event's series patched",
        &mut p,
        Duration::from_secs(30),
        || {
            let done = made(&w, ("events.k8s.io", "events", "patch"));
            async move { done }
        },
    )
    .await;
    let mut team =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta("team-a", None)});
    team["metadata"]["resourceVersion"] = json!("6");
    w.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push("", "namespaces", team);
    // Until every expected call was made, with a deadline that names what is missing.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        p.assert_running();
        let got = calls(&w);
        if want.is_subset(&got) {
            break;
        }
        if std::time::Instant::now() > deadline {
            let missing: Vec<&Call> = want.difference(&got).collect();
            panic!(
                "controller-permissions.json grants what the controller never called: {missing:?}\n{}",
                p.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = calls(&w);
    let extra: Vec<&Call> = got.difference(&want).collect();
    assert!(
        extra.is_empty(),
        "the controller made calls controller-permissions.json (and so the chart) does not grant: {extra:?}\n{}",
        p.log_text()
    );
}
