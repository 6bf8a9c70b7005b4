"""The Helm chart, rendered by Helm's own Go SDK (helm-python-sdk): it lints clean, installs with no
values (deploying its own etcd: a StatefulSet with a PVC per member, one or three members),
renders for cluster and namespace scope and for an external etcd, refuses invalid etcd settings
with a message naming what to set, grants only the permissions
listed below, validates against the Kubernetes schemas (kubernetes-validate), and every built-in
runtime it installs renders a valid runtime Deployment through `modelmesh controller render`.
"""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import helm_python as helm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelmesh"
BIN = Path(os.environ.get("MODELMESH_BIN", ROOT / "target" / "debug" / "modelmesh"))
# An etcd of the user's own (no etcd rendered).
ETCD = {"etcd": {"deploy": False, "connection": '{"endpoints":"http://etcd:2379","root_prefix":"mm"}'}}


def render(values, namespace="modelmesh-serving"):
    with helm.Chart.load(str(CHART)) as ch:
        out = ch.render(values, name="mm", namespace=namespace)
    docs = []
    for name, text in out.items():
        if name.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def validate(docs):
    """kubernetes-validate --strict on the rendered objects (our CRDs' instances skipped)."""
    docs = [d for d in docs if d["apiVersion"] != "serving.kserve.io/v1alpha1"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chart.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        run = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "kubernetes-validate"), "-k", "1.33.0", "--strict", "--quiet", str(path)],
            capture_output=True, text=True,
        )
        assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    "values",
    [{}, {"etcd": {"replicas": 3}}, ETCD, {"etcd": {"deploy": False, "existingSecret": "my-etcd"}}],
    ids=["no-values", "etcd-3-members", "external-etcd", "existing-secret"],
)
def test_lint_is_clean(values):
    result = helm.lint(str(CHART), strict=True, values=values)
    assert result["errors"] == [], result


def etcd_args(sts):
    c = sts["spec"]["template"]["spec"]["containers"][0]
    return dict(a.split("=", 1) for a in c["command"][1:])


def test_install_with_no_values_deploys_an_etcd_with_a_volume():
    docs = render({})
    validate(docs)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
        + ["ConfigMap", "Deployment", "Secret", "Service", "StatefulSet"]
        + ["NetworkPolicy"] * 2
        + ["ClusterServingRuntime"] * 4
    ), kinds
    sts = by_kind(docs, "StatefulSet")[0]
    assert sts["metadata"]["name"] == "modelmesh-etcd"
    assert sts["spec"]["replicas"] == 1
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    args = etcd_args(sts)
    assert any(args["--data-dir"].startswith(m["mountPath"]) for m in mounts if m["name"] == claim["metadata"]["name"])
    assert args["--initial-cluster"] == "modelmesh-etcd-0=http://modelmesh-etcd-0.modelmesh-etcd.modelmesh-serving.svc:2380"
    svc = by_kind(docs, "Service")[0]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    secret = by_kind(docs, "Secret")[0]
    assert secret["metadata"]["name"] == "model-serving-etcd"
    conn = json.loads(secret["stringData"]["etcd_connection"])
    assert conn == {
        "endpoints": "http://modelmesh-etcd-0.modelmesh-etcd.modelmesh-serving.svc:2379",
        "root_prefix": "modelmesh-serving",
    }
    # The controller reads that secret.
    controller = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in controller["env"]}
    assert env["ETCD_SECRET_NAME"] == "model-serving-etcd"
    # The CRDs Helm installs with the release (crds/), valid and upstream's kinds.
    with helm.Chart.load(str(CHART)) as ch:
        crds = [yaml.safe_load(c["data"] if isinstance(c["data"], str) else bytes(c["data"]).decode()) for c in ch.crds]
    assert sorted(c["spec"]["names"]["kind"] for c in crds) == [
        "ClusterServingRuntime", "InferenceService", "Predictor", "ServingRuntime"
    ]
    assert all(c["kind"] == "CustomResourceDefinition" for c in crds)
    validate(crds)
    # The NOTES say how to use an existing etcd instead.
    with helm.Chart.load(str(CHART)) as ch:
        notes = next(t for n, t in ch.render({}, name="mm", namespace="modelmesh-serving").items() if n.endswith("NOTES.txt"))
    assert "etcd.deploy=false" in notes and "etcd.connection" in notes and "etcd.existingSecret" in notes


def test_three_etcd_members_know_each_other():
    docs = render({"etcd": {"replicas": 3}}, namespace="ml")
    validate(docs)
    sts = by_kind(docs, "StatefulSet")[0]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    args = etcd_args(sts)
    peers = args["--initial-cluster"].split(",")
    assert peers == [f"modelmesh-etcd-{i}=http://modelmesh-etcd-{i}.modelmesh-etcd.ml.svc:2380" for i in range(3)]
    # Each member names itself and advertises its own peer URL, which must be in the list.
    assert args["--name"] == "$(POD_NAME)"
    assert args["--initial-advertise-peer-urls"] == "http://$(POD_NAME).modelmesh-etcd.ml.svc:2380"
    assert args["--initial-cluster-state"] == "new"
    for i in range(3):
        member = args["--initial-advertise-peer-urls"].replace("$(POD_NAME)", f"modelmesh-etcd-{i}")
        assert f"modelmesh-etcd-{i}={member}" in peers
    conn = json.loads(by_kind(docs, "Secret")[0]["stringData"]["etcd_connection"])
    assert conn["endpoints"].split(",") == [f"http://modelmesh-etcd-{i}.modelmesh-etcd.ml.svc:2379" for i in range(3)]
    anti = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_an_external_etcd_renders_no_etcd():
    for values in (ETCD, {"etcd": {"deploy": False, "existingSecret": "my-etcd"}}):
        docs = render(values)
        validate(docs)
        assert not by_kind(docs, "StatefulSet")
        assert not [d for d in docs if d["kind"] == "Service"]
        assert [d["metadata"]["name"] for d in by_kind(docs, "NetworkPolicy")] == ["modelmesh-controller"]
    docs = render(ETCD)
    assert json.loads(by_kind(docs, "Secret")[0]["stringData"]["etcd_connection"])["endpoints"] == "http://etcd:2379"
    docs = render({"etcd": {"deploy": False, "existingSecret": "my-etcd"}})
    assert not by_kind(docs, "Secret")
    env = {e["name"]: e.get("value") for e in by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ETCD_SECRET_NAME"] == "my-etcd"


@pytest.mark.parametrize(
    "values, says",
    [
        ({"etcd": {"deploy": False}}, ["etcd.connection", "etcd.existingSecret"]),
        ({"etcd": {"connection": '{"endpoints":"http://x:2379"}'}}, ["etcd.deploy=false"]),
        ({"etcd": {"existingSecret": "mine"}}, ["etcd.deploy=false"]),
        ({"etcd": {"replicas": 2}}, ["etcd.replicas=2", "odd"]),
        ({"etcd": {"replicas": 0}}, ["etcd.replicas=0", "odd"]),
    ],
    ids=["no-etcd", "deploy-and-connection", "deploy-and-secret", "even-members", "no-members"],
)
def test_invalid_etcd_settings_say_what_to_set(values, says):
    with pytest.raises(Exception) as e:
        render(values)
    for text in says:
        assert text in str(e.value), str(e.value)


def test_cluster_scope_renders_everything():
    docs = render(ETCD)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
        + ["ConfigMap", "Deployment", "Secret", "NetworkPolicy"]
        + ["ClusterServingRuntime"] * 4
    ), kinds
    controller = by_kind(docs, "Deployment")[0]
    c = controller["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["/usr/local/bin/modelmesh", "controller", "run"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["NAMESPACE_SCOPE"] == "false"
    assert env["ETCD_SECRET_NAME"] == "model-serving-etcd"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    names = {d["metadata"]["name"] for d in by_kind(docs, "ClusterServingRuntime")}
    assert names == {"modelmesh-onnx", "triton-2.x", "mlserver-1.x", "llamacpp"}


def test_namespace_scope_uses_a_role_and_namespaced_runtimes():
    docs = render({**ETCD, "namespaceScope": True}, namespace="team-a")
    assert by_kind(docs, "Role") and not by_kind(docs, "ClusterRole")
    runtimes = by_kind(docs, "ServingRuntime")
    assert len(runtimes) == 4 and all(r["metadata"]["namespace"] == "team-a" for r in runtimes)
    rules = [r for role in by_kind(docs, "Role") for r in role["rules"]]
    assert not any("namespaces" in r["resources"] for r in rules)


# Every permission the controller gets, and nothing else: the calls its code makes, recorded by
# cli/tests/controller_permissions.rs against a fake API server (why each: templates/rbac.yaml).
PERMISSIONS = json.loads((CHART / "controller-permissions.json").read_text())
EXPECTED_RULES = {(r["group"], r["resource"]): set(r["verbs"]) for r in PERMISSIONS["rules"]}


def test_rbac_grants_exactly_the_listed_permissions():
    docs = render(ETCD)
    rules = by_kind(docs, "ClusterRole")[0]["rules"]
    leases = by_kind(docs, "Role")[0]
    assert leases["metadata"]["namespace"] == "modelmesh-serving"
    lease = PERMISSIONS["leases"]
    assert leases["rules"] == [
        {"apiGroups": [lease["group"]], "resources": [lease["resource"]], "verbs": lease["verbs"]}
    ]
    granted = {}
    for r in rules:
        assert "*" not in r["verbs"] and "*" not in r["resources"], r
        for group in r["apiGroups"]:
            for res in r["resources"]:
                granted.setdefault((group, res), set()).update(r["verbs"])
    assert granted == EXPECTED_RULES


def test_rendered_objects_are_valid_kubernetes():
    validate(render(ETCD))
    validate(render({**ETCD, "namespaceScope": True}, namespace="team-a"))


def test_built_in_runtimes_render_valid_deployments():
    docs = render(ETCD)
    config = by_kind(docs, "ConfigMap")[0]["data"]["config.yaml"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(config)
        for rt in by_kind(docs, "ClusterServingRuntime"):
            name = rt["metadata"]["name"]
            src = Path(tmp) / f"{name}.yaml"
            src.write_text(yaml.safe_dump(rt))
            out = subprocess.run(
                [str(BIN), "controller", "render", "--runtime", str(src), "--config", str(cfg)],
                capture_output=True, text=True,
            )
            assert out.returncode == 0, out.stderr
            deployment = yaml.safe_load(out.stdout)
            names = [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]]
            assert names[-1] == "mm", names
            rendered = Path(tmp) / f"{name}-deployment.yaml"
            rendered.write_text(out.stdout)
            run = subprocess.run(
                [str(ROOT / ".venv" / "bin" / "kubernetes-validate"), "-k", "1.33.0", "--strict", "--quiet", str(rendered)],
                capture_output=True, text=True,
            )
            assert run.returncode == 0, f"{name}: {run.stdout}{run.stderr}"


def test_the_llamacpp_runtime_serves_gguf_with_the_adapter_and_the_mesh():
    docs = render(ETCD)
    rt = next(r for r in by_kind(docs, "ClusterServingRuntime") if r["metadata"]["name"] == "llamacpp")
    assert rt["spec"]["supportedModelFormats"] == [{"name": "gguf", "version": "1", "autoSelect": True}]
    config = by_kind(docs, "ConfigMap")[0]["data"]["config.yaml"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text(config)
        (Path(tmp) / "rt.yaml").write_text(yaml.safe_dump(rt))
        out = subprocess.run(
            [str(BIN), "controller", "render", "--runtime", str(Path(tmp) / "rt.yaml"), "--config", str(Path(tmp) / "config.yaml")],
            capture_output=True, text=True, check=True,
        )
    pod = yaml.safe_load(out.stdout)["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert list(containers) == ["llamacpp", "llamacpp-adapter", "mm"], list(containers)
    server = " ".join(containers["llamacpp"]["args"])
    assert "--models-dir /models/_llamacpp_models" in server and "--models-max 0" in server
    assert "--no-models-autoload" in server and "--port 8002" in server and "-c 4096" in server
    # Threads follow the container's CPU limit, not the node's core count.
    threads = next(e for e in containers["llamacpp"]["env"] if e["name"] == "LLAMA_ARG_THREADS")
    assert threads["valueFrom"]["resourceFieldRef"] == {"containerName": "llamacpp", "resource": "limits.cpu", "divisor": "1"}
    adapter = containers["llamacpp-adapter"]
    assert adapter["command"][-2:] == ["--server-type", "llamacpp"]
    env = {e["name"]: e.get("value") for e in adapter["env"]}
    assert env["RUNTIME_PORT"] == "8002" and env["LLM_CONTEXT_TOKENS"] == "4096"
    mesh_env = {e["name"]: e.get("value") for e in containers["mm"]["env"]}
    assert mesh_env["INTERNAL_SERVING_HTTP_PORT"] == "8002"


# Our own processes never need root, extra capabilities or a writable root filesystem; the
# third-party servers (Triton, MLServer) keep what their images need.
HARDENED = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True}


def test_our_containers_run_as_non_root_on_a_read_only_root():
    docs = render(ETCD)
    controller = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert controller["securityContext"].get("runAsNonRoot") is True
    ours = [("controller", c) for c in controller["containers"]]
    config = by_kind(docs, "ConfigMap")[0]["data"]["config.yaml"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(config)
        for rt in by_kind(docs, "ClusterServingRuntime"):
            name = rt["metadata"]["name"]
            src = Path(tmp) / f"{name}.yaml"
            src.write_text(yaml.safe_dump(rt))
            out = subprocess.run(
                [str(BIN), "controller", "render", "--runtime", str(src), "--config", str(cfg)],
                capture_output=True, text=True, check=True,
            )
            pod = yaml.safe_load(out.stdout)["spec"]["template"]["spec"]
            for c in pod["containers"]:
                # The adapter and the mesh everywhere; the runtime too where it is ours.
                if c["name"] == "mm" or c["name"].endswith("-adapter") or name == "modelmesh-onnx":
                    ours.append((f"{name}/{c['name']}", c))
    assert len(ours) > 5, ours
    for where, c in ours:
        sc = c.get("securityContext", {})
        for field, value in HARDENED.items():
            assert sc.get(field) is value, f"{where}: securityContext.{field} = {sc.get(field)!r}"
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities {sc}"


def test_network_policies_keep_etcd_to_the_mesh_and_the_controller():
    docs = render({})
    validate(docs)
    policies = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "NetworkPolicy")}
    etcd = policies["modelmesh-etcd"]
    sts = by_kind(docs, "StatefulSet")[0]
    assert etcd["podSelector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert etcd["policyTypes"] == ["Ingress"]
    rules = {r["ports"][0]["port"]: r["from"] for r in etcd["ingress"]}
    assert set(rules) == {2379, 2380}
    # Clients: pods of a mesh in this namespace or a served one (labelled), and the controller;
    # never every namespace.
    clients = rules[2379]
    mesh_pods = {"matchExpressions": [{"key": "modelmesh-service", "operator": "Exists"}]}
    assert clients[0] == {"podSelector": mesh_pods}
    assert clients[1] == {"namespaceSelector": {"matchLabels": {"modelmesh-enabled": "true"}}, "podSelector": mesh_pods}
    assert clients[2] == {"podSelector": {"matchLabels": {"control-plane": "modelmesh-controller"}}}
    assert len(clients) == 3
    assert all(c.get("namespaceSelector") != {} for c in clients)
    # Peers: members only.
    assert rules[2380] == [{"podSelector": {"matchLabels": etcd["podSelector"]["matchLabels"]}}]
    # The runtime pods' policy is the controller's, switched on in its config with the
    # management API on its own port.
    config = yaml.safe_load(by_kind(docs, "ConfigMap")[0]["data"]["config.yaml"])
    assert config["networkPolicy"]["enabled"] is True and config["managementPort"] == 8034
    assert config["allowPrivilegedRuntimes"] is False and config["allowHostPathRuntimes"] is False
    assert not policies.get("modelmesh-controller", {}).get("ingress", [{}])[0].get("from")
    assert not by_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_the_runtime_pods_network_policy_is_valid_and_admits_each_port_from_its_callers():
    """`modelmesh controller render --network-policy` prints what the controller applies."""
    docs = render(ETCD)
    config = by_kind(docs, "ConfigMap")[0]["data"]["config.yaml"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(config)
        out = subprocess.run(
            [str(BIN), "controller", "render", "--network-policy", "--namespace", "team-a",
             "--controller-namespace", "modelmesh-serving", "--config", str(cfg)],
            capture_output=True, text=True,
        )
        assert out.returncode == 0, out.stderr
        policy = yaml.safe_load(out.stdout)
        validate([policy])
    assert policy["kind"] == "NetworkPolicy" and policy["metadata"]["namespace"] == "team-a"
    by_port = {}
    for r in policy["spec"]["ingress"]:
        for p in r["ports"]:
            by_port[p["port"]] = r.get("from")
    assert by_port[8033] is None and by_port[8008] is None  # inference: anyone by default
    mgmt = by_port[8034]
    assert mgmt[0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "modelmesh-serving"}
    assert mgmt[0]["podSelector"]["matchLabels"] == {"control-plane": "modelmesh-controller"}
    assert by_port[8080] == [{"podSelector": {"matchLabels": {"modelmesh-service": "modelmesh-serving"}}}]
    assert 8085 not in by_port and 8001 not in by_port
