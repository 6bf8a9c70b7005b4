//! Mesh changes that should wake a reconciler: the controller watches every served mesh's
//! `vmodels/` and `registry/` keys in etcd and maps each change to the Predictor or
//! InferenceService it belongs to (a vmodel record names its owner; a model id is
//! `<vmodel>__<owner>-<hash>`), so status follows transitions and failures without polling.

use futures::{Stream, StreamExt};
use modelmesh_kv::layout::{self, Table};
use modelmesh_kv::{Event, KvStore};
use std::sync::Arc;
use std::time::Duration;

/// A resource to reconcile because its mesh state changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeshTarget {
    /// Namespace.
    pub namespace: String,
    /// `ksp` (Predictor) or `isvc` (InferenceService).
    pub owner: String,
    /// Resource (vmodel) name.
    pub name: String,
}

/// The resources a changed key concerns. `root` is the etcd secret's root prefix; the
/// controller's namespace uses it as it is, other namespaces `<root>/mm_ns/<namespace>`
/// (`modelmesh_kv::layout`).
pub fn targets(
    root: &str,
    controller_namespace: &str,
    service: &str,
    key: &str,
    value: Option<&[u8]>,
) -> Vec<MeshTarget> {
    let Some(k) = layout::parse(root, service, key) else {
        return Vec::new();
    };
    let namespace = k
        .namespace
        .unwrap_or_else(|| controller_namespace.to_string());
    let target = |owner: &str, name: &str| MeshTarget {
        namespace: namespace.clone(),
        owner: owner.to_string(),
        name: name.to_string(),
    };
    match k.table {
        Table::VModels => {
            let owner = value
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
                .and_then(|v| v.get("o").and_then(|o| o.as_str()).map(String::from));
            match owner {
                Some(o) => vec![target(&o, &k.id)],
                // A deleted record has no value: it may have been either kind's.
                None => vec![target("ksp", &k.id), target("isvc", &k.id)],
            }
        }
        Table::Registry => match k.id.rsplit_once("__") {
            Some((vmodel, tail))
                if tail.rsplit_once('-').is_some_and(|(_, hash)| {
                    hash.len() == 10 && hash.bytes().all(|b| b.is_ascii_hexdigit())
                }) =>
            {
                let owner = tail.rsplit_once('-').map_or("", |(o, _)| o);
                vec![target(owner, vmodel)]
            }
            _ => Vec::new(),
        },
        Table::Instances => Vec::new(),
    }
}

/// Every change under `root`, mapped to the resources it concerns; restarts the watch (from
/// now) when it fails, after a pause.
pub fn watch(
    store: Arc<dyn KvStore>,
    root: String,
    controller_namespace: String,
    service: String,
) -> impl Stream<Item = MeshTarget> + Send {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let prefix = format!("{}/", layout::normalize_root(&root));
        loop {
            match store.watch(&prefix, 0).await {
                Ok(mut events) => {
                    while let Some(batch) = events.next().await {
                        let Ok(batch) = batch else { break };
                        for ev in batch {
                            let value = match &ev {
                                Event::Put(kv) => Some(kv.value.as_slice()),
                                Event::Delete { .. } => None,
                            };
                            for t in
                                targets(&root, &controller_namespace, &service, ev.key(), value)
                            {
                                if tx.send(t).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch the mesh's keys; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    });
    receiver_stream(rx)
}

/// A channel's receiving end as a stream.
pub fn receiver_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelmesh_kv::Op;
    use modelmesh_kv::memory::MemoryStore;

    #[test]
    fn keys_map_to_their_resources() {
        let t = |key: &str, value: Option<&[u8]>| {
            targets(
                "modelmesh-serving",
                "mm-system",
                "modelmesh-serving",
                key,
                value,
            )
        };
        assert_eq!(
            t(
                "/modelmesh-serving/mm_ns/team-a/mm/modelmesh-serving/vmodels/mnist",
                Some(br#"{"o":"ksp","amid":"x"}"#)
            ),
            vec![MeshTarget {
                namespace: "team-a".into(),
                owner: "ksp".into(),
                name: "mnist".into()
            }]
        );
        assert_eq!(
            t(
                "/modelmesh-serving/mm/modelmesh-serving/registry/svm__isvc-0123456789",
                Some(b"{}")
            ),
            vec![MeshTarget {
                namespace: "mm-system".into(),
                owner: "isvc".into(),
                name: "svm".into()
            }]
        );
        assert_eq!(
            t("/modelmesh-serving/mm/modelmesh-serving/vmodels/gone", None).len(),
            2,
            "a deleted vmodel may be either kind's"
        );
        for ignored in [
            "/modelmesh-serving/mm/modelmesh-serving/instances/pod-1",
            "/modelmesh-serving/mm/modelmesh-serving/registry/plain-model",
            "/other/mm/modelmesh-serving/vmodels/x",
            "/modelmesh-serving/mm/other-service/vmodels/x",
        ] {
            assert!(t(ignored, Some(b"{}")).is_empty(), "{ignored}");
        }
    }

    #[tokio::test]
    async fn store_changes_wake_the_right_resource() {
        let store: Arc<dyn KvStore> = Arc::new(MemoryStore::new());
        let mut stream = Box::pin(watch(
            store.clone(),
            "modelmesh-serving".into(),
            "mm-system".into(),
            "modelmesh-serving".into(),
        ));
        // The watch starts in the background: write until the change shows up.
        let key = "/modelmesh-serving/mm_ns/team-a/mm/modelmesh-serving/vmodels/mnist";
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                store
                    .txn(
                        vec![],
                        vec![Op::Put {
                            key: key.into(),
                            value: br#"{"o":"ksp"}"#.to_vec(),
                            lease: 0,
                        }],
                    )
                    .await
                    .unwrap();
                if let Ok(Some(t)) =
                    tokio::time::timeout(Duration::from_millis(200), stream.next()).await
                {
                    return t;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(
            got,
            MeshTarget {
                namespace: "team-a".into(),
                owner: "ksp".into(),
                name: "mnist".into()
            }
        );
    }
}
