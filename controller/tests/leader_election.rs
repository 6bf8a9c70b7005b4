//! Leader election against kube-rs's mocked API server: the first replica creates the Lease,
//! a live holder is left alone, an expired one is taken over (with the read resourceVersion, so
//! a concurrent change is a conflict and nobody leads twice).

use http::{Request, Response, StatusCode};
use kube::client::Body;
use modelmesh_controller::leader::{LEASE_NAME, try_acquire};
use serde_json::{Value, json};

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/mm/leases";

/// One expected call: method, path, reply status, reply body, and a check of the request body.
type Step = (&'static str, String, StatusCode, Value, fn(&Value));

/// Answers each expected call in order.
async fn serve(script: Vec<Step>) -> (kube::Client, tokio::task::JoinHandle<()>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let task = tokio::spawn(async move {
        for (method, path, status, reply, check) in script {
            let (req, send) = handle.next_request().await.expect("expected another call");
            assert_eq!(req.method().as_str(), method);
            assert_eq!(req.uri().path(), path);
            let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
            check(&serde_json::from_slice(&bytes).unwrap_or(Value::Null));
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    (kube::Client::new(service, "mm"), task)
}

fn lease(holder: &str, renewed: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": "mm", "resourceVersion": "42"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "renewTime": renewed, "acquireTime": renewed, "leaseTransitions": transitions}
    })
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404})
}

// 2023-11-14T22:13:20Z is 1_700_000_000_000 ms.
const T0: i64 = 1_700_000_000_000;
const T0_TEXT: &str = "2023-11-14T22:13:20.000000Z";

#[tokio::test]
async fn the_first_replica_creates_the_lease() {
    let get = format!("{PATH}/{LEASE_NAME}");
    let (client, task) = serve(vec![
        ("GET", get, StatusCode::NOT_FOUND, not_found(), |_| {}),
        (
            "POST",
            PATH.to_string(),
            StatusCode::CREATED,
            lease("a", T0_TEXT, 0),
            |b| {
                assert_eq!(b["spec"]["holderIdentity"], "a");
                assert_eq!(b["spec"]["leaseDurationSeconds"], 15);
            },
        ),
    ])
    .await;
    let api = kube::Api::namespaced(client, "mm");
    assert!(try_acquire(&api, "a", T0).await.unwrap());
    task.await.unwrap();
}

#[tokio::test]
async fn a_live_holder_is_left_alone_and_an_expired_one_taken_over() {
    let get = format!("{PATH}/{LEASE_NAME}");
    let (client, task) = serve(vec![
        (
            "GET",
            get.clone(),
            StatusCode::OK,
            lease("b", T0_TEXT, 3),
            |_| {},
        ),
        (
            "GET",
            get.clone(),
            StatusCode::OK,
            lease("b", T0_TEXT, 3),
            |_| {},
        ),
        ("PUT", get, StatusCode::OK, lease("a", T0_TEXT, 4), |b| {
            assert_eq!(b["spec"]["holderIdentity"], "a");
            assert_eq!(b["spec"]["leaseTransitions"], 4);
            assert_eq!(
                b["metadata"]["resourceVersion"], "42",
                "optimistic concurrency"
            );
        }),
    ])
    .await;
    let api = kube::Api::namespaced(client, "mm");
    assert!(
        !try_acquire(&api, "a", T0 + 5_000).await.unwrap(),
        "b renewed 5 s ago"
    );
    assert!(
        try_acquire(&api, "a", T0 + 16_000).await.unwrap(),
        "b let it expire"
    );
    task.await.unwrap();
}

#[tokio::test]
async fn a_conflicting_take_over_does_not_lead() {
    let get = format!("{PATH}/{LEASE_NAME}");
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Conflict", "code": 409});
    let (client, task) = serve(vec![
        (
            "GET",
            get.clone(),
            StatusCode::OK,
            lease("b", T0_TEXT, 3),
            |_| {},
        ),
        ("PUT", get, StatusCode::CONFLICT, conflict, |_| {}),
    ])
    .await;
    let api = kube::Api::namespaced(client, "mm");
    assert!(!try_acquire(&api, "a", T0 + 60_000).await.unwrap());
    task.await.unwrap();
}
