//! The pod around the containers: its volumes (the runtime's, then the models directory sized
//! from the runtime's memory limits, the socket directory, the storage, PVC, config, etcd and
//! TLS secrets), its node affinity and its image pull secrets.

use super::{Endpoints, RuntimeInput};
use crate::config::Config;
use crate::quantity;
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMapVolumeSource, EmptyDirVolumeSource, LocalObjectReference, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaimVolumeSource,
    SecretVolumeSource, Volume,
};

fn secret(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode: Some(420),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's volumes: the runtime's, then ours.
pub fn volumes(rt: &RuntimeInput, cfg: &Config, ep: &Endpoints, adapter: bool) -> Vec<Volume> {
    let spec = rt.spec;
    let memory_limits: u64 = spec
        .containers
        .iter()
        .filter_map(|c| c.resources.as_ref()?.limits.as_ref()?.get("memory"))
        .filter_map(quantity::bytes)
        .sum();
    let mut volumes: Vec<Volume> = spec.volumes.clone();
    volumes.push(Volume {
        name: "models-dir".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: (memory_limits > 0).then(|| quantity::format_bytes(memory_limits / 2 * 3)),
            ..Default::default()
        }),
        ..Default::default()
    });
    if ep.unix.is_some() {
        volumes.push(Volume {
            name: "domain-socket".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    let storage_helper =
        adapter || spec.storage_helper.as_ref().and_then(|s| s.disabled) != Some(true);
    if storage_helper {
        volumes.push(secret("storage-config", &cfg.storage_secret_name));
    }
    for p in rt.pvcs {
        volumes.push(Volume {
            name: p.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: p.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        });
    }
    volumes.push(Volume {
        name: "tc-config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: "tc-config".into(),
            default_mode: Some(420),
            ..Default::default()
        }),
        ..Default::default()
    });
    volumes.push(secret("etcd-config", rt.etcd_secret));
    if !cfg.tls.secret_name.is_empty() {
        volumes.push(secret("tls-certs", &cfg.tls.secret_name));
    }
    volumes
}

/// The runtime's affinity, plus a required node architecture our images are built for.
pub fn affinity(rt: &RuntimeInput) -> Affinity {
    let mut affinity = rt.spec.affinity.clone().unwrap_or_default();
    let arch = NodeSelectorRequirement {
        key: "kubernetes.io/arch".into(),
        operator: "In".into(),
        values: Some(vec!["amd64".into(), "arm64".into(), "s390x".into()]),
    };
    let node = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let required = node
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: Vec::new(),
        });
    if required.node_selector_terms.is_empty() {
        required
            .node_selector_terms
            .push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_expressions
            .get_or_insert_with(Vec::new)
            .push(arch.clone());
    }
    affinity
}

/// The config's pull secrets, then the runtime's (each once).
pub fn pull_secrets(rt: &RuntimeInput, cfg: &Config) -> Vec<LocalObjectReference> {
    let mut out = cfg.image_pull_secrets.clone();
    for s in &rt.spec.image_pull_secrets {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}
