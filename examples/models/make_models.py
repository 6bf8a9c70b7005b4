"""Generates the example ONNX models and their expected outputs (run with .venv/bin/python).

Writes a Triton-layout repository next to this file:
  repository/mnist-classifier/1/model.onnx  784 -> 10 (Gemm + Softmax), input "input" [N,784] FP32
  repository/tiny-regression/1/model.onnx   4 -> 3 (Gemm + Relu), input "input" [N,4] FP32
  repository/typed-ops/1/model.onnx         INT32/INT64/FP64/BOOL element-wise ops
  repository/vector-sum/1/model.onnx        [N,D] -> [N] (ReduceSum over D, any D): the large-payload
                                            benchmark sends it 1 MiB tensors
and expected.json with an input and the numpy-computed output for each. Deterministic: the
weights come from a seeded generator, so re-running reproduces the committed files.
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto
from onnx.helper import make_graph, make_model, make_node, make_opsetid, make_tensor_value_info
from onnx.numpy_helper import from_array

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.join(HERE, "repository")


def save(name, model):
    model.ir_version = 8
    onnx.checker.check_model(model)
    d = os.path.join(REPO, name, "1")
    os.makedirs(d, exist_ok=True)
    onnx.save(model, os.path.join(d, "model.onnx"))


def dense(name, n_in, n_out, seed, last):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n_in, n_out)) * 0.1).astype(np.float32)
    b = (np.arange(n_out, dtype=np.float32) * 0.01 + 0.1).astype(np.float32)
    x = make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_in])
    y = make_tensor_value_info("output", TensorProto.FLOAT, ["N", n_out])
    nodes = [make_node("Gemm", ["input", "W", "b"], ["gemm_out"])]
    if last == "softmax":
        nodes.append(make_node("Softmax", ["gemm_out"], ["output"], axis=1))
    else:
        nodes.append(make_node("Relu", ["gemm_out"], ["output"]))
    g = make_graph(nodes, name, [x], [y], initializer=[from_array(w, "W"), from_array(b, "b")])
    save(name, make_model(g, opset_imports=[make_opsetid("", 13)], producer_name="modelmesh-examples"))
    xin = ((np.arange(n_in, dtype=np.float32) % 17) / 16.0 - 0.25)[None, :].astype(np.float32)
    z = xin @ w + b
    if last == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        out = e / e.sum(axis=1, keepdims=True)
    else:
        out = np.maximum(z, 0)
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, n_in], "data": xin.ravel().tolist()}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [1, n_out], "data": out.astype(np.float32).ravel().tolist()}],
    }


def typed_ops():
    ins = [
        make_tensor_value_info("a_int32", TensorProto.INT32, ["N"]),
        make_tensor_value_info("b_int64", TensorProto.INT64, ["N"]),
        make_tensor_value_info("c_fp64", TensorProto.DOUBLE, ["N"]),
        make_tensor_value_info("d_bool", TensorProto.BOOL, ["N"]),
    ]
    outs = [
        make_tensor_value_info("a_plus_one", TensorProto.INT32, ["N"]),
        make_tensor_value_info("b_times_two", TensorProto.INT64, ["N"]),
        make_tensor_value_info("c_negated", TensorProto.DOUBLE, ["N"]),
        make_tensor_value_info("d_not", TensorProto.BOOL, ["N"]),
    ]
    inits = [
        from_array(np.array([1], dtype=np.int32), "one"),
        from_array(np.array([2], dtype=np.int64), "two"),
    ]
    nodes = [
        make_node("Add", ["a_int32", "one"], ["a_plus_one"]),
        make_node("Mul", ["b_int64", "two"], ["b_times_two"]),
        make_node("Neg", ["c_fp64"], ["c_negated"]),
        make_node("Not", ["d_bool"], ["d_not"]),
    ]
    g = make_graph(nodes, "typed_ops", ins, outs, initializer=inits)
    save("typed-ops", make_model(g, opset_imports=[make_opsetid("", 13)], producer_name="modelmesh-examples"))
    a = [1, -2, 2147483646]
    b = [3, -4, 1 << 40]
    c = [0.5, -1.25, 1e300]
    d = [True, False, True]
    return {
        "inputs": [
            {"name": "a_int32", "datatype": "INT32", "shape": [3], "data": a},
            {"name": "b_int64", "datatype": "INT64", "shape": [3], "data": b},
            {"name": "c_fp64", "datatype": "FP64", "shape": [3], "data": c},
            {"name": "d_bool", "datatype": "BOOL", "shape": [3], "data": d},
        ],
        "outputs": [
            {"name": "a_plus_one", "datatype": "INT32", "shape": [3], "data": [x + 1 for x in a]},
            {"name": "b_times_two", "datatype": "INT64", "shape": [3], "data": [x * 2 for x in b]},
            {"name": "c_negated", "datatype": "FP64", "shape": [3], "data": [-x for x in c]},
            {"name": "d_not", "datatype": "BOOL", "shape": [3], "data": [not x for x in d]},
        ],
    }


def vector_sum():
    x = make_tensor_value_info("input", TensorProto.FLOAT, ["N", "D"])
    y = make_tensor_value_info("output", TensorProto.FLOAT, ["N"])
    axes = from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [make_node("ReduceSum", ["input", "axes"], ["output"], keepdims=0)]
    g = make_graph(nodes, "vector_sum", [x], [y], initializer=[axes])
    save("vector-sum", make_model(g, opset_imports=[make_opsetid("", 13)], producer_name="modelmesh-examples"))
    xin = (np.arange(16, dtype=np.float32) / 4.0 - 1.0).reshape(2, 8)
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 8], "data": xin.ravel().tolist()}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [2], "data": xin.sum(axis=1).tolist()}],
    }


def main():
    expected = {
        "mnist-classifier": dense("mnist-classifier", 784, 10, 1, "softmax"),
        "tiny-regression": dense("tiny-regression", 4, 3, 0, "relu"),
        "typed-ops": typed_ops(),
        "vector-sum": vector_sum(),
    }
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print("wrote", ", ".join(sorted(expected)))


if __name__ == "__main__":
    main()
