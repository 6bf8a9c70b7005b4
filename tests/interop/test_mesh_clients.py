"""Real clients through the mesh (`modelmesh up`): tritonclient and grpcurl on the gRPC port,
with `mm-vmodel-id` and with only `model_name`, and plain HTTP on the REST port. Answers must
match the example models' expected outputs."""
import base64
import json
import os
import struct
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import ROOT

EXPECTED = json.load(open(os.path.join(ROOT, "examples", "models", "expected.json")))
NP = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}
GRPCURL = os.path.join(ROOT, ".venv", "bin", "grpcurl")


def inputs_for(name):
    out = []
    for i in EXPECTED[name]["inputs"]:
        arr = np.array(i["data"], dtype=NP[i["datatype"]]).reshape(i["shape"])
        t = grpcclient.InferInput(i["name"], list(arr.shape), i["datatype"])
        t.set_data_from_numpy(arr)
        out.append(t)
    return out


def check(result, name):
    for o in EXPECTED[name]["outputs"]:
        got = result.as_numpy(o["name"])
        want = np.array(o["data"], dtype=NP[o["datatype"]]).reshape(o["shape"])
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        else:
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tritonclient_by_model_name_and_by_header(mesh_up, name):
    grpc_addr, _ = mesh_up
    c = grpcclient.InferenceServerClient(url=grpc_addr)
    check(c.infer(name, inputs_for(name)), name)
    # model_name empty: the mm-vmodel-id header routes.
    check(c.infer("", inputs_for(name), headers={"mm-vmodel-id": name}), name)
    with pytest.raises(InferenceServerException) as e:
        c.infer("no-such-predictor", inputs_for(name))
    assert e.value.status() == "StatusCode.NOT_FOUND"
    assert "vmodel no-such-predictor not found" in e.value.message()


def protoset(tmp_path):
    out = tmp_path / "triton.fds"
    subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), os.path.join(ROOT, "scripts", "dump_descriptors.py"),
                    "triton", str(out)], check=True)
    return str(out)


def test_grpcurl_by_header_and_by_model_name(mesh_up, tmp_path):
    grpc_addr, _ = mesh_up
    ps = protoset(tmp_path)
    ex = EXPECTED["tiny-regression"]
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                        "contents": {"fp32_contents": ex["inputs"][0]["data"]}}]}
    want = ex["outputs"][0]["data"]
    for extra, payload in ((["-H", "mm-vmodel-id: tiny-regression"], body),
                           ([], dict(body, model_name="tiny-regression"))):
        r = subprocess.run([GRPCURL, "-plaintext", "-protoset", ps, *extra, "-d", json.dumps(payload), grpc_addr,
                            "inference.GRPCInferenceService/ModelInfer"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        raw = base64.b64decode((out.get("rawOutputContents") or out["raw_output_contents"])[0])
        got = struct.unpack(f"<{len(raw) // 4}f", raw)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    r = subprocess.run([GRPCURL, "-plaintext", "-protoset", ps, "-d", json.dumps(body), grpc_addr,
                        "inference.GRPCInferenceService/ModelInfer"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "InvalidArgument" in r.stderr, r.stderr


def test_rest_with_plain_http(mesh_up):
    _, rest = mesh_up
    ex = EXPECTED["mnist-classifier"]
    req = urllib.request.Request(f"http://{rest}/v2/models/mnist-classifier/infer",
                                 data=json.dumps({"inputs": ex["inputs"]}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    out = json.load(urllib.request.urlopen(req))
    np.testing.assert_allclose(out["outputs"][0]["data"], ex["outputs"][0]["data"], rtol=1e-5)
    bad = urllib.request.Request(f"http://{rest}/v2/models/mnist-classifier/infer", data=b"{not json",
                                 method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad)
    assert e.value.code == 400


def test_stream_infer_through_the_mesh(mesh_up):
    """Triton's bidirectional ModelStreamInfer, proxied by the mesh (upstream cannot)."""
    import queue
    grpc_addr, _ = mesh_up
    results = queue.Queue()
    c = grpcclient.InferenceServerClient(url=grpc_addr)
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for _ in range(3):
            c.async_stream_infer("tiny-regression", inputs_for("tiny-regression"))
        got = [results.get(timeout=20) for _ in range(3)]
    finally:
        c.stop_stream()
    for result, error in got:
        assert error is None, error
        check(result, "tiny-regression")
