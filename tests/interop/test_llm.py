"""LLMs through the mesh (issue 16), with the real `openai` Python client, the real llama.cpp
`llama-server` in router mode (target/peers/llama/llama-server, from scripts/setup-peers.sh) and
three real tiny GGUF models (scripts/peers/make_tiny_gguf.py: each answers every prompt with
"Hello from tiny model <name>!" at temperature 0).

`modelmesh up --llama-server ...` runs an ONNX instance and an LLM instance; the OpenAI API on
the REST port routes by the body's `model` (a vmodel) to the LLM instance's copy, over the
internal hop. Every process is started in its own process group and the group is killed at
teardown, so no llama-server model process outlives a test."""
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request

import openai
import pytest

from conftest import ROOT, free_port, modelmesh_bin, start_etcd

LLAMA = os.path.join(ROOT, "target", "peers", "llama", "llama-server")
MODELS = os.path.join(ROOT, "target", "peers", "llm-models")
NAMES = ["alpha", "beta", "gamma"]
# File (6.5 MB) + KV cache (2 MiB at 2048 tokens) + 64 MiB per model: 160 MiB holds two.
ROOM_FOR_TWO = "160Mi"


def sentence(name):
    return f"Hello from tiny model {name}!"


def predictor(name, path, fmt="gguf"):
    return f"""apiVersion: serving.kserve.io/v1alpha1
kind: Predictor
metadata:
  name: {name}
spec:
  modelType:
    name: {fmt}
  storage:
    path: {path}
"""


def models_dir(tmp_path):
    """A --models directory with the tiny GGUF files and the ONNX example repository."""
    if not os.path.exists(LLAMA) or not os.path.exists(os.path.join(MODELS, "alpha.gguf")):
        pytest.fail("llama-server or the tiny GGUF models are missing: run scripts/setup-peers.sh")
    d = tmp_path / "models"
    shutil.copytree(MODELS, d / "llm")
    shutil.copytree(os.path.join(ROOT, "examples", "models", "repository"), d / "repository")
    return d


def predictors_dir(tmp_path, names, extra=()):
    d = tmp_path / "predictors"
    d.mkdir(exist_ok=True)
    for n in names:
        (d / f"{n}.yaml").write_text(predictor(n, f"llm/{n}.gguf"))
    for name, path, fmt in extra:
        (d / f"{name}.yaml").write_text(predictor(name, path, fmt))
    return d


class Up:
    """One `modelmesh up` process (its own process group) and what its log says."""

    def __init__(self, tmp_path, name, predictors, models, *extra):
        self.grpc, self.rest = free_port(), free_port()
        self.log_path = tmp_path / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [modelmesh_bin(), "up", "--predictors", str(predictors), "--models", str(models),
             "--grpc-port", str(self.grpc), "--rest-port", str(self.rest), "--llama-server", LLAMA, *extra],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            text = open(self.log_path).read()
            m = re.search(r"llama-server on 127\.0\.0\.1:(\d+)", text)
            if m and "Ctrl-C stops" in text:
                self.llama_port = int(m.group(1))
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"modelmesh up ({name}) not ready: {text}")
            time.sleep(0.05)
        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{self.rest}/v1", api_key="unused", max_retries=0)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()

    def status(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.rest}/_modelmesh/status", timeout=10) as r:
            return json.load(r)

    def model_id(self, vmodel):
        for v in self.status()["vmodels"]:
            if v["vmodel"] == vmodel:
                return v["active"]
        raise AssertionError(f"no vmodel {vmodel}")

    def copies(self, vmodel):
        mid = self.model_id(vmodel)
        for m in self.status()["models"]:
            if m["model"] == mid:
                return m["copies"]
        return 0

    def router_loaded(self):
        """The models the llama-server router holds (loaded or loading)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.llama_port}/models", timeout=10) as r:
            data = json.load(r)["data"]
        return sorted(m["id"] for m in data if m["status"]["value"] in ("loaded", "loading"))


def wait_for(cond, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def chat(client, model, stream=False, **kw):
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}], temperature=0, stream=stream, **kw)
    if not stream:
        return r.choices[0].message.content
    return "".join(c.choices[0].delta.content or "" for c in r if c.choices)


@pytest.fixture
def one_pod(tmp_path):
    models = models_dir(tmp_path)
    preds = predictors_dir(tmp_path, NAMES, extra=[("tiny-regression", "repository/tiny-regression", "onnx"),
                                                 ("broken", "llm/broken.gguf", "gguf")])
    up = Up(tmp_path, "up", preds, models, "--llm-memory", ROOM_FOR_TWO)
    try:
        yield up
    finally:
        up.stop()


def test_openai_client_lists_chats_and_streams_the_same_text_as_llama_server(one_pod):
    up = one_pod
    listed = sorted(m.id for m in up.client.models.list().data)
    assert listed == ["alpha", "beta", "broken", "gamma"], "the gguf vmodels, not the ONNX one"
    assert up.client.models.retrieve("alpha").id == "alpha"
    text = chat(up.client, "alpha")
    assert text == sentence("alpha")
    streamed = chat(up.client, "alpha", stream=True)
    assert streamed == text
    # Straight to llama-server, by the concrete model id the mesh loaded.
    direct = openai.OpenAI(base_url=f"http://127.0.0.1:{up.llama_port}/v1", api_key="unused", max_retries=0)
    mid = up.model_id("alpha")
    assert chat(direct, mid) == text
    assert chat(direct, mid, stream=True) == text
    # A plain completion, and a model id named in mm-model-id instead of a vmodel.
    r = up.client.completions.create(model="alpha", prompt="Hi", temperature=0, max_tokens=16)
    assert r.choices[0].text.strip().startswith("Hello")
    r = up.client.chat.completions.create(
        model="ignored", messages=[{"role": "user", "content": "hi"}], temperature=0,
        extra_headers={"mm-model-id": mid})
    assert r.choices[0].message.content == text


def test_three_llms_rotate_through_room_for_two_least_recently_used_out(one_pod):
    up = one_pod
    ids = {n: up.model_id(n) for n in NAMES}
    # `up` loads every registered model at start-up (gamma last, evicting one of the first
    # two); a load counts as a use, so the rotation starts once those loads are done.
    wait_for(lambda: ids["gamma"] in up.router_loaded() and len(up.router_loaded()) == 2,
             "the start-up loads to finish", timeout=60)
    seen_max = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                seen_max[0] = max(seen_max[0], len([m for m in up.router_loaded() if m in ids.values()]))
            except Exception:
                pass
            time.sleep(0.02)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        order = ["alpha", "beta", "gamma", "alpha", "beta", "gamma", "beta", "alpha", "gamma"]
        recent = []
        for n in order:
            assert chat(up.client, n, stream=(len(recent) % 2 == 0)) == sentence(n), n
            recent = [x for x in recent if x != n] + [n]
            if len(recent) < 2:
                continue  # what `up` loaded at start-up may still be there
            want = sorted(ids[x] for x in recent[-2:])
            wait_for(lambda: [m for m in up.router_loaded() if m in ids.values()] == want,
                     f"the router to hold the two most recently used {recent[-2:]} (holds {up.router_loaded()})")
    finally:
        stop.set()
        t.join()
    assert seen_max[0] <= 2, f"the router held {seen_max[0]} models at once"


def post(up, path, body, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", up.rest, timeout=60)
    conn.request("POST", path, body=body if isinstance(body, bytes) else json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), json.loads(data) if data else None


def test_bad_input_gets_openai_errors(one_pod):
    up = one_pod
    status, _, body = post(up, "/v1/chat/completions", {"model": "nope", "messages": []})
    assert status == 404 and body["error"]["code"] == "model_not_found", body
    status, _, body = post(up, "/v1/chat/completions", {"messages": []})
    assert status == 400 and body["error"]["param"] == "model", body
    status, _, body = post(up, "/v1/chat/completions", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"], body
    status, _, body = post(up, "/v1/chat/completions", {"model": "alpha", "stream": "yes", "messages": []})
    assert status == 400 and body["error"]["param"] == "stream", body
    # The runtime's own 400 (no messages) passes through with its words.
    status, _, body = post(up, "/v1/chat/completions", {"model": "alpha"})
    assert status == 400 and "messages" in body["error"]["message"], body
    # An ONNX model has no OpenAI API.
    status, _, body = post(up, "/v1/chat/completions", {"model": "tiny-regression", "messages": []})
    assert status == 501, body
    # A damaged GGUF file is a named load failure, not a crash of anything.
    status, headers, body = post(up, "/v1/chat/completions",
                                 {"model": "broken", "messages": [{"role": "user", "content": "hi"}]})
    assert status >= 500, body
    assert "GGUF" in body["error"]["message"] and "tensor data" in body["error"]["message"], body
    # The mesh still serves the good ones.
    assert chat(up.client, "alpha") == sentence("alpha")
    with pytest.raises(openai.NotFoundError):
        up.client.models.retrieve("tiny-regression")


@pytest.fixture
def two_pods(tmp_path):
    etcd, url = start_etcd(tmp_path)
    ups = []
    try:
        a_dir, b_dir = tmp_path / "a", tmp_path / "b"
        a_dir.mkdir()
        b_dir.mkdir()
        models = models_dir(a_dir)
        shutil.copytree(models, b_dir / "models")
        preds = predictors_dir(a_dir, ["alpha"])
        empty = b_dir / "predictors"
        empty.mkdir()
        common = ["--etcd", url, "--llm-context", "32768"]
        ups.append(Up(a_dir, "pod-a", preds, models, "--name", "pod-a", *common))
        ups.append(Up(b_dir, "pod-b", empty, b_dir / "models", "--name", "pod-b", *common))
        yield ups
    finally:
        for u in ups:
            u.stop()
        etcd.kill()
        etcd.wait()


def slots_busy(port, model_id):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/slots?model={model_id}", timeout=10) as r:
        return any(s.get("is_processing") for s in json.load(r))


def llama_pid(up):
    """The llama-server router started by `up` (a child of it)."""
    out = subprocess.run(["pgrep", "-P", str(up.proc.pid), "-f", "llama-server"], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    assert pids, "no llama-server child"
    return pids[0]


def test_two_pods_stream_across_the_hop_free_slots_on_disconnect_and_reload_after_a_runtime_dies(two_pods):
    a, b = two_pods
    # The copy is made on pod-a's LLM instance.
    assert chat(a.client, "alpha", stream=True) == sentence("alpha")
    mid = a.model_id("alpha")
    wait_for(lambda: a.router_loaded() == [mid], "pod-a's router to hold alpha")
    # A streaming chat entering pod-b is served by pod-a's copy; no second copy is loaded.
    for _ in range(3):
        assert chat(b.client, "alpha", stream=True) == sentence("alpha")
    assert b.router_loaded() == [], "pod-b's runtime loaded nothing"
    assert b.copies("alpha") == 1

    # A client that goes away mid-stream frees the runtime's slot (across the hop).
    conn = http.client.HTTPConnection("127.0.0.1", b.rest, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=json.dumps({
        "model": "alpha", "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "max_tokens": 100000, "ignore_eos": True}).encode(), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200
    events = 0
    while events < 20:
        line = r.fp.readline()
        if line.startswith(b"data: "):
            events += 1
    assert slots_busy(a.llama_port, mid), "the runtime is generating"
    conn.sock.shutdown(2)
    conn.close()
    wait_for(lambda: not slots_busy(a.llama_port, mid), "the runtime's slot to be freed", timeout=5)

    # pod-a's runtime dies: the next request entering pod-b is served after a reload elsewhere.
    os.kill(llama_pid(a), signal.SIGKILL)
    assert chat(b.client, "alpha", stream=True) == sentence("alpha")
    wait_for(lambda: b.router_loaded() == [mid], "pod-b's router to hold the reloaded copy")
