"""The real `tritonclient` (PyPI) against `modelmesh runtime`: repository load, inference with
every example model, unload, and Triton's error codes."""
import json
import os

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import ROOT

EXPECTED = json.load(open(os.path.join(ROOT, "examples", "models", "expected.json")))
NP = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}


def infer(client, name):
    ex = EXPECTED[name]
    inputs = []
    for i in ex["inputs"]:
        arr = np.array(i["data"], dtype=NP[i["datatype"]]).reshape(i["shape"])
        t = grpcclient.InferInput(i["name"], list(arr.shape), i["datatype"])
        t.set_data_from_numpy(arr)
        inputs.append(t)
    outputs = [grpcclient.InferRequestedOutput(o["name"]) for o in ex["outputs"]]
    return ex, client.infer(name, inputs, outputs=outputs)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_infer_unload(runtime, name):
    c = grpcclient.InferenceServerClient(url=runtime)
    assert c.is_server_live()
    assert not c.is_model_ready(name)
    c.load_model(name)
    assert c.is_model_ready(name)
    index = c.get_model_repository_index(as_json=True)
    states = {m["name"]: m.get("state") for m in index["models"]}
    assert states[name] == "READY"
    ex, result = infer(c, name)
    for o in ex["outputs"]:
        got = result.as_numpy(o["name"])
        want = np.array(o["data"], dtype=NP[o["datatype"]]).reshape(o["shape"])
        assert got.shape == want.shape
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        else:
            np.testing.assert_array_equal(got, want)
    meta = c.get_model_metadata(name, as_json=True)
    assert [i["name"] for i in meta["inputs"]] == [i["name"] for i in ex["inputs"]]
    cfg = c.get_model_config(name, as_json=True)
    assert cfg["config"]["name"] == name
    c.unload_model(name)
    assert not c.is_model_ready(name)


def test_unknown_model_is_not_found(runtime):
    c = grpcclient.InferenceServerClient(url=runtime)
    with pytest.raises(InferenceServerException) as e:
        infer(c, "tiny-regression")
    assert e.value.status() == "StatusCode.NOT_FOUND"
    assert "Request for unknown model: 'tiny-regression' has no available versions" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        c.load_model("no-such-model")
    assert e.value.status() == "StatusCode.NOT_FOUND"


def test_wrong_shape_is_invalid_argument(runtime):
    c = grpcclient.InferenceServerClient(url=runtime)
    c.load_model("mnist-classifier")
    t = grpcclient.InferInput("input", [1, 10], "FP32")
    t.set_data_from_numpy(np.zeros((1, 10), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        c.infer("mnist-classifier", [t])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'input'" in e.value.message() and "[-1,784]" in e.value.message()
