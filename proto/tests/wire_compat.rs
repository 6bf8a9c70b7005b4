//! Wire compatibility with upstream: our compiled descriptors are compared field by field
//! (names, numbers, types, labels, oneofs, maps, services) with the descriptors that the real
//! Python clients ship: `tritonclient` (Triton) and `mlserver`. `mmesh` has no published Python
//! stubs, so its field numbers are checked against the upstream specification here.

use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn python(venv: &str) -> PathBuf {
    let p = root().join(venv).join("bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup-peers.sh first",
        p.display()
    );
    p
}

/// Dumps a reference descriptor set with `venv`'s Python and compares ours against it.
fn compare(venv: &str, kind: &str, flags: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let ours = dir.path().join("ours.fds");
    std::fs::write(&ours, modelmesh_proto::FILE_DESCRIPTOR_SET).expect("write ours");
    let reference = dir.path().join(format!("{kind}.fds"));
    let st = Command::new(python(venv))
        .arg(root().join("scripts/dump_descriptors.py"))
        .arg(kind)
        .arg(&reference)
        .status()
        .expect("run dump_descriptors.py");
    assert!(st.success(), "dumping {kind} descriptors failed");
    let out = Command::new(python(venv))
        .arg(root().join("scripts/compare_descriptors.py"))
        .arg(&reference)
        .arg(&ours)
        .args(flags)
        .output()
        .expect("run compare_descriptors.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{kind} descriptors differ from ours:\n{text}"
    );
    text
}

#[test]
fn triton_descriptors_match_exactly() {
    let report = compare(".venv", "triton", &[]);
    assert!(report.contains("OK: compatible"), "{report}");
    assert!(report.contains("compared 130 messages"), "{report}");
}

#[test]
fn mlserver_descriptors_are_covered() {
    // Two divergences between MLServer and Triton cannot both be matched, and Triton wins:
    // - ModelStreamInfer: MLServer streams ModelInferResponse, Triton ModelStreamInferResponse;
    // - ModelMetadataResponse: MLServer adds `parameters` maps that Triton lacks.
    // Both travel through the mesh as raw bytes, so neither is lost on the data path.
    let report = compare(
        ".venv-mlserver",
        "mlserver",
        &[
            "--superset=inference",
            "--known=.inference.GRPCInferenceService.ModelStreamInfer",
            "--known=.inference.ModelMetadataResponse",
        ],
    );
    assert!(report.contains("OK: compatible"), "{report}");
}

/// Field numbers of a message, by name.
fn fields(fds: &prost_types::FileDescriptorSet, message: &str) -> Vec<(String, i32)> {
    let (pkg, name) = message.rsplit_once('.').expect("qualified name");
    for f in &fds.file {
        if f.package() != pkg.split('.').next().unwrap_or(pkg) {
            continue;
        }
        let mut stack: Vec<(&prost_types::DescriptorProto, String)> = f
            .message_type
            .iter()
            .map(|m| (m, format!("{}.{}", f.package(), m.name())))
            .collect();
        while let Some((m, fq)) = stack.pop() {
            if fq == format!("{pkg}.{name}") {
                return m
                    .field
                    .iter()
                    .map(|x| (x.name().to_string(), x.number()))
                    .collect();
            }
            stack.extend(
                m.nested_type
                    .iter()
                    .map(|n| (n, format!("{fq}.{}", n.name()))),
            );
        }
    }
    panic!("{message} not found")
}

#[test]
fn mmesh_field_numbers_match_upstream() {
    let fds = prost_types::FileDescriptorSet::decode(modelmesh_proto::FILE_DESCRIPTOR_SET)
        .expect("decode");
    let check = |msg: &str, want: &[(&str, i32)]| {
        let mut got = fields(&fds, msg);
        got.sort_by_key(|(_, n)| *n);
        let want: Vec<(String, i32)> = want.iter().map(|(n, i)| (n.to_string(), *i)).collect();
        assert_eq!(got, want, "{msg}");
    };
    check(
        "mmesh.RegisterModelRequest",
        &[
            ("modelId", 1),
            ("modelInfo", 2),
            ("loadNow", 3),
            ("sync", 4),
            ("lastUsedTime", 5),
        ],
    );
    // Upstream's three fields, plus our optional copy bounds under new numbers.
    check(
        "mmesh.ModelInfo",
        &[
            ("type", 1),
            ("path", 2),
            ("key", 3),
            ("minCopies", 4),
            ("maxCopies", 5),
        ],
    );
    check(
        "mmesh.EnsureLoadedRequest",
        &[("modelId", 1), ("lastUsedTime", 2), ("sync", 4)],
    );
    check(
        "mmesh.ModelStatusInfo",
        &[("status", 1), ("errors", 2), ("modelCopyInfos", 3)],
    );
    check(
        "mmesh.ModelStatusInfo.ModelCopyInfo",
        &[("location", 1), ("copyStatus", 2), ("time", 3)],
    );
    check(
        "mmesh.SetVModelRequest",
        &[
            ("vModelId", 1),
            ("targetModelId", 2),
            ("updateOnly", 3),
            ("modelInfo", 4),
            ("autoDeleteTargetModel", 5),
            ("loadNow", 6),
            ("force", 7),
            ("sync", 8),
            ("expectedTargetModelId", 9),
            ("owner", 10),
        ],
    );
    check(
        "mmesh.VModelStatusInfo",
        &[
            ("status", 1),
            ("activeModelId", 2),
            ("targetModelId", 3),
            ("activeModelStatus", 4),
            ("targetModelStatus", 5),
            ("owner", 6),
        ],
    );
    check(
        "mmesh.DeleteVModelRequest",
        &[("vModelId", 1), ("owner", 2)],
    );
    check(
        "mmesh.GetVModelStatusRequest",
        &[("vModelId", 1), ("owner", 2)],
    );
    check(
        "mmesh.LoadModelRequest",
        &[
            ("modelId", 1),
            ("modelType", 2),
            ("modelPath", 3),
            ("modelKey", 4),
        ],
    );
    check(
        "mmesh.LoadModelResponse",
        &[("sizeInBytes", 1), ("maxConcurrency", 2)],
    );
    check(
        "mmesh.PredictModelSizeRequest",
        &[
            ("modelId", 1),
            ("modelType", 2),
            ("modelPath", 3),
            ("modelKey", 4),
        ],
    );
    check(
        "mmesh.RuntimeStatusResponse",
        &[
            ("status", 1),
            ("capacityInBytes", 2),
            ("maxLoadingConcurrency", 3),
            ("modelLoadingTimeoutMs", 4),
            ("defaultModelSizeInBytes", 5),
            ("runtimeVersion", 6),
            ("numericRuntimeVersion", 7),
            ("methodInfos", 8),
            ("limitModelConcurrency", 9),
            ("allowAnyMethod", 10),
        ],
    );
    check(
        "mmesh.RuntimeStatusResponse.MethodInfo",
        &[("idInjectionPath", 1)],
    );
    let services: Vec<(String, Vec<String>)> = fds
        .file
        .iter()
        .flat_map(|f| f.service.iter())
        .map(|s| {
            (
                s.name().to_string(),
                s.method.iter().map(|m| m.name().to_string()).collect(),
            )
        })
        .collect();
    let methods = |svc: &str| {
        services
            .iter()
            .find(|(n, _)| n == svc)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        methods("ModelMesh"),
        [
            "registerModel",
            "unregisterModel",
            "getModelStatus",
            "ensureLoaded",
            "setVModel",
            "deleteVModel",
            "getVModelStatus"
        ]
    );
    assert_eq!(
        methods("ModelRuntime"),
        [
            "loadModel",
            "unloadModel",
            "predictModelSize",
            "modelSize",
            "runtimeStatus"
        ]
    );
}
