//! Which namespaces are served, and the config read from its ConfigMap.

use super::*;
use k8s_openapi::api::core::v1::NamespaceStatus;

fn ns(name: &str, label: Option<&str>, terminating: bool) -> Namespace {
    let mut n = Namespace::default();
    n.metadata.name = Some(name.into());
    if let Some(l) = label {
        n.metadata.labels = Some([(ENABLED_LABEL.to_string(), l.to_string())].into());
    }
    if terminating {
        n.status = Some(NamespaceStatus {
            phase: Some("Terminating".into()),
            ..Default::default()
        });
    }
    n
}

#[test]
fn which_namespaces_are_served() {
    assert!(namespace_enabled(&ns("team-a", Some("true"), false), "mm"));
    assert!(!namespace_enabled(&ns("team-a", None, false), "mm"));
    assert!(!namespace_enabled(
        &ns("team-a", Some("false"), false),
        "mm"
    ));
    assert!(!namespace_enabled(&ns("team-a", Some("true"), true), "mm"));
    assert!(
        namespace_enabled(&ns("mm", None, false), "mm"),
        "own namespace by default"
    );
    assert!(!namespace_enabled(&ns("mm", Some("false"), false), "mm"));
}

#[test]
fn config_from_the_configmap() {
    assert_eq!(config_from(None).unwrap(), Config::default());
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("model-serving-config".into());
    assert!(
        config_from(Some(&cm))
            .unwrap_err()
            .0
            .contains("config.yaml")
    );
    cm.data = Some([("config.yaml".to_string(), "podsPerRuntime: 1\n".to_string())].into());
    assert_eq!(config_from(Some(&cm)).unwrap().pods_per_runtime, 1);
}
