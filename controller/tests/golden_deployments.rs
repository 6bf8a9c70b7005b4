//! Our rendered runtime Deployments against upstream's golden file
//! (`controllers/testdata/servingruntime_controller.golden`, read from
//! `../shared/reference/upstream-data` beside the checkout), for its four built-in runtimes and
//! its payload-processor case, rendered from the same inputs (the same runtime YAML and
//! config). Compared: deployment labels, selector, strategy, replicas, grace period, affinity,
//! volumes; every runtime container whole; the adapter's env, mounts, resources and hooks; the
//! sidecar's env, ports, probes, mounts and resources; the sidecar last.
//!
//! Differences that are ours on purpose, and not compared: container images and commands (our
//! image runs `modelmesh adapter` and `modelmesh sidecar`), the order of the containers before
//! the sidecar, the sidecar's preStop hook (SIGTERM starts our model migration), extra sidecar
//! env and ports we add (`MM_REST_PORT`; the management API's own port `mgmt`, 8034, with
//! `MM_MANAGEMENT_PORT` and `MM_MANAGEMENT_ON_GRPC_PORT`), the hardening we add to our containers' security context
//! (checked on its own: no privilege escalation, non-root, read-only root), and fields the
//! API server fills in (termination message settings, pull policy, DNS and restart policy,
//! scheduler, revision history).

use modelmesh_controller::config::Config;
use modelmesh_controller::crd::ClusterServingRuntime;
use modelmesh_controller::deployment::{RuntimeInput, render};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn upstream() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/upstream-data")
}

fn read(rel: &str) -> String {
    let p = upstream().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (upstream data must sit beside the checkout)",
            p.display()
        )
    })
}

/// The golden file's snapshots: name → Deployment.
fn snapshots() -> BTreeMap<String, Value> {
    let text = read("controllers/testdata/servingruntime_controller.golden");
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some((name, body)) = &mut current {
            if line == "'''" {
                let v: Value = serde_norway::from_str(body).expect("golden YAML");
                out.insert(name.clone(), v);
                current = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
        } else if line.starts_with('"') && line.ends_with("= '''") {
            let name = line
                .trim_end_matches("= '''")
                .trim()
                .trim_matches('"')
                .to_string();
            current = Some((name, String::new()));
        }
    }
    out
}

/// Drops what the API server fills in (including probe thresholds left at their defaults).
fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for k in [
                "terminationMessagePath",
                "terminationMessagePolicy",
                "imagePullPolicy",
                "creationTimestamp",
                "dnsPolicy",
                "restartPolicy",
                "schedulerName",
                "progressDeadlineSeconds",
                "revisionHistoryLimit",
                "status",
            ] {
                m.remove(k);
            }
            if m.get("securityContext") == Some(&serde_json::json!({})) {
                m.remove("securityContext");
            }
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if let Some(Value::Object(p)) = m.get_mut(probe) {
                    if p.get("failureThreshold") == Some(&Value::from(3)) {
                        p.remove("failureThreshold");
                    }
                    if p.get("successThreshold") == Some(&Value::from(1)) {
                        p.remove("successThreshold");
                    }
                }
            }
            m.values_mut().for_each(normalize);
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn container<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env_map(c: &Value) -> BTreeMap<String, Value> {
    c["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let mut e = e.clone();
                    let name = e["name"].as_str().unwrap_or("").to_string();
                    if let Some(m) = e.as_object_mut() {
                        m.remove("name");
                    }
                    (name, e)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn check(snapshot: &str, runtime_file: &str, config_file: &str) {
    let golden = snapshots();
    let mut want = golden
        .get(snapshot)
        .unwrap_or_else(|| panic!("golden has no snapshot '{snapshot}'"))
        .clone();
    normalize(&mut want);
    let rt: ClusterServingRuntime =
        serde_norway::from_str(&read(&format!("config/runtimes/{runtime_file}"))).expect("runtime");
    let cfg = Config::parse(&read(&format!("controllers/testdata/{config_file}"))).expect("config");
    let name = rt.metadata.name.clone().unwrap_or_default();
    let annotations = rt.metadata.annotations.clone().unwrap_or_default();
    let d = render(
        &RuntimeInput {
            name: &name,
            spec: &rt.spec.runtime,
            annotations: &annotations,
            replicas: i32::from(cfg.pods_per_runtime),
            pvcs: &[],
            etcd_secret: cfg
                .etcd_secret_name
                .as_deref()
                .unwrap_or("model-serving-etcd"),
        },
        &cfg,
    );
    let mut got = serde_json::to_value(&d).expect("json");
    normalize(&mut got);

    for path in [
        "/spec/replicas",
        "/spec/selector",
        "/spec/strategy",
        "/spec/template/metadata/labels",
        "/spec/template/metadata/annotations",
        "/spec/template/spec/affinity",
        "/spec/template/spec/terminationGracePeriodSeconds",
        "/spec/template/spec/volumes",
    ] {
        assert_eq!(got.pointer(path), want.pointer(path), "{snapshot}: {path}");
    }

    let names = |d: &Value| -> Vec<String> {
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (mut got_names, mut want_names) = (names(&got), names(&want));
    assert_eq!(
        got_names.last().map(String::as_str),
        Some("mm"),
        "{snapshot}: sidecar last"
    );
    got_names.sort();
    want_names.sort();
    assert_eq!(got_names, want_names, "{snapshot}: containers");

    // Runtime containers: whole, except the test's image substitution.
    for c in &rt.spec.runtime.containers {
        let (mut g, mut w) = (
            container(&got, &c.name).clone(),
            container(&want, &c.name).clone(),
        );
        for x in [&mut g, &mut w] {
            x.as_object_mut().map(|m| m.remove("image"));
        }
        assert_eq!(g, w, "{snapshot}: runtime container {}", c.name);
    }

    // The adapter: env (but the runtime version, taken from the substituted image), mounts,
    // resources, hooks, security.
    if let Some(server) = rt
        .spec
        .runtime
        .built_in_adapter
        .as_ref()
        .and_then(|a| a.server_type.clone())
    {
        let n = format!("{server}-adapter");
        let (g, w) = (container(&got, &n), container(&want, &n));
        let (mut ge, mut we) = (env_map(g), env_map(w));
        ge.remove("RUNTIME_VERSION");
        we.remove("RUNTIME_VERSION");
        assert_eq!(ge, we, "{snapshot}: {n} env");
        for f in ["volumeMounts", "resources", "lifecycle"] {
            assert_eq!(g[f], w[f], "{snapshot}: {n} {f}");
        }
        check_hardened(snapshot, &n, g, w);
        assert_eq!(
            g["image"], w["image"],
            "{snapshot}: {n} image comes from the config"
        );
        let cmd = g["command"].as_array().cloned().unwrap_or_default();
        assert!(
            cmd.ends_with(&[
                "adapter".into(),
                "--server-type".into(),
                Value::from(server.clone())
            ]),
            "{snapshot}: {n} command {cmd:?}"
        );
    }

    // The sidecar: every upstream variable with upstream's value (we add some), ports, probes,
    // mounts, resources, security.
    let (g, w) = (container(&got, "mm"), container(&want, "mm"));
    let ge = env_map(g);
    for (k, v) in env_map(w) {
        assert_eq!(ge.get(&k), Some(&v), "{snapshot}: mm env {k}");
    }
    // Our management port (ours on purpose, see the top) aside, the ports are upstream's.
    let ours_removed = |v: &Value| -> Value {
        Value::Array(
            v.as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["name"] != "mgmt")
                .cloned()
                .collect(),
        )
    };
    assert_eq!(
        ours_removed(&g["ports"]),
        w["ports"],
        "{snapshot}: mm ports"
    );
    for f in [
        "readinessProbe",
        "livenessProbe",
        "volumeMounts",
        "resources",
        "image",
    ] {
        assert_eq!(g[f], w[f], "{snapshot}: mm {f}");
    }
    check_hardened(snapshot, "mm", g, w);
}

/// Our containers keep upstream's security context (capabilities dropped) and add: no
/// privilege escalation, non-root, read-only root filesystem.
fn check_hardened(snapshot: &str, name: &str, got: &Value, want: &Value) {
    let (g, w) = (&got["securityContext"], &want["securityContext"]);
    assert_eq!(
        g["capabilities"], w["capabilities"],
        "{snapshot}: {name} capabilities"
    );
    for (field, value) in [
        ("allowPrivilegeEscalation", false),
        ("readOnlyRootFilesystem", true),
        ("runAsNonRoot", true),
    ] {
        assert_eq!(g[field], Value::from(value), "{snapshot}: {name} {field}");
    }
}

#[test]
fn mlserver_matches_upstream() {
    check(
        "Sample Runtime config/runtimes/mlserver-1.x.yaml should be a valid runtime specification",
        "mlserver-1.x.yaml",
        "test-config-defaults.yaml",
    );
}

#[test]
fn triton_matches_upstream() {
    check(
        "Sample Runtime config/runtimes/triton-2.x.yaml should be a valid runtime specification",
        "triton-2.x.yaml",
        "test-config-defaults.yaml",
    );
}

#[test]
fn ovms_matches_upstream() {
    check(
        "Sample Runtime config/runtimes/ovms-1.x.yaml should be a valid runtime specification",
        "ovms-1.x.yaml",
        "test-config-defaults.yaml",
    );
}

#[test]
fn torchserve_matches_upstream() {
    check(
        "Sample Runtime config/runtimes/torchserve-0.x.yaml should be a valid runtime specification",
        "torchserve-0.x.yaml",
        "test-config-defaults.yaml",
    );
}

#[test]
fn payload_processors_match_upstream() {
    check(
        "Add Payload Processor deployment should contain Payload Processor",
        "mlserver-1.x.yaml",
        "test-config-payload-processor.yaml",
    );
}
