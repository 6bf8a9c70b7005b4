"""Streams across pods (issue 15), with Triton's own Python client: two `modelmesh up --etcd`
processes share a real etcd; pod-a loads the examples, pod-b holds nothing. A tritonclient
stream (`start_stream` / `async_stream_infer`) entering pod-b is served by pod-a's copy and no
second copy is loaded; a stream the client cancels mid-way (`stop_stream(cancel_requests=True)`)
does not disturb the next one."""
import json
import os
import queue
import subprocess
import time

import pytest
import tritonclient.grpc as grpcclient

from conftest import ROOT, free_port, modelmesh_bin, start_etcd
from test_mesh_clients import GRPCURL, check, inputs_for

MODEL = "tiny-regression"


def start_up(tmp_path, name, url, predictors):
    grpc_port, rest_port = free_port(), free_port()
    log_path = tmp_path / f"{name}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [modelmesh_bin(), "up", "--predictors", predictors, "--models", os.path.join(ROOT, "examples", "models"),
         "--grpc-port", str(grpc_port), "--rest-port", str(rest_port), "--etcd", url, "--name", name],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "model(s) loaded" not in open(log_path).read():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"modelmesh up ({name}) not ready: {open(log_path).read()}")
        time.sleep(0.05)
    return proc, log, f"127.0.0.1:{grpc_port}"


@pytest.fixture
def two_pods(tmp_path):
    etcd, url = start_etcd(tmp_path)
    procs = []
    try:
        a = start_up(tmp_path, "pod-a", url, os.path.join(ROOT, "examples", "predictors"))
        procs.append(a)
        empty = tmp_path / "no-predictors"
        empty.mkdir()
        b = start_up(tmp_path, "pod-b", url, str(empty))
        procs.append(b)
        yield a[2], b[2]
    finally:
        for proc, log, _ in procs:
            proc.kill()
            proc.wait()
            log.close()
        etcd.kill()
        etcd.wait()


def copies(addr, vmodel):
    """Where the vmodel's active model has copies (getVModelStatus over grpcurl)."""
    r = subprocess.run(
        [GRPCURL, "-plaintext", "-import-path", os.path.join(ROOT, "proto", "proto"), "-proto",
         "mmesh/model-mesh.proto", "-d", json.dumps({"vModelId": vmodel}), addr, "mmesh.ModelMesh/getVModelStatus"],
        capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    infos = status.get("activeModelStatus", {}).get("modelCopyInfos", [])
    return sorted(i["location"] for i in infos)


def stream(addr, n):
    results = queue.Queue()
    c = grpcclient.InferenceServerClient(url=addr)
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for _ in range(n):
            c.async_stream_infer(MODEL, inputs_for(MODEL))
        got = [results.get(timeout=20) for _ in range(n)]
    finally:
        c.stop_stream()
    for result, error in got:
        assert error is None, error
        check(result, MODEL)


def test_a_stream_entering_the_pod_without_a_copy_is_served_by_the_other(two_pods):
    a, b = two_pods
    assert copies(a, MODEL) == ["pod-a"]
    stream(b, 3)
    assert copies(b, MODEL) == ["pod-a"], "no second copy for a forwarded stream"
    # A stream the client cancels while open; the mesh and the copy serve the next one.
    results = queue.Queue()
    c = grpcclient.InferenceServerClient(url=b)
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    c.async_stream_infer(MODEL, inputs_for(MODEL))
    result, error = results.get(timeout=20)
    assert error is None, error
    c.stop_stream(cancel_requests=True)
    stream(b, 2)
    assert copies(b, MODEL) == ["pod-a"]
