"""Fixtures for interoperability tests that drive our binaries with real third-party clients.

The `modelmesh` binary comes from MODELMESH_BIN (default: target/debug/modelmesh, which the
README's test command builds). Every server is started on a free loopback port, polled for
readiness with a deadline, and killed at teardown even when the test fails.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    """A port below the ephemeral range (no client connection can grab it meanwhile), reserved
    with a marker file shared with the Rust tests so concurrent test processes never collide."""
    import random
    marker_dir = os.path.join(tempfile.gettempdir(), "modelmesh-test-ports")
    os.makedirs(marker_dir, exist_ok=True)
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(20000):
        port = rng.randrange(20000, 32000)
        marker = os.path.join(marker_dir, str(port))
        try:
            if time.time() - os.path.getmtime(marker) > 600:
                os.remove(marker)
        except OSError:
            pass
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
        except FileExistsError:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port in 20000..32000")


def modelmesh_bin():
    path = os.environ.get("MODELMESH_BIN", os.path.join(ROOT, "target", "debug", "modelmesh"))
    if not os.path.exists(path):
        pytest.fail(f"{path} does not exist: run `cargo build` first (the README's test command does)")
    return path


@pytest.fixture
def runtime(tmp_path):
    """A `modelmesh runtime` serving a copy of examples/models/repository; yields its gRPC address."""
    import tritonclient.grpc as grpcclient

    repo = tmp_path / "repo"
    shutil.copytree(os.path.join(ROOT, "examples", "models", "repository"), repo)
    port = free_port()
    log = open(tmp_path / "runtime.log", "w")
    proc = subprocess.Popen(
        [modelmesh_bin(), "runtime", "--address", "127.0.0.1", "--model-repository", str(repo),
         "--grpc-port", str(port)],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"modelmesh runtime exited: {open(tmp_path / 'runtime.log').read()}")
            try:
                if grpcclient.InferenceServerClient(url=url).is_server_ready():
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                pytest.fail("modelmesh runtime not ready after 30 s")
            time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait()
        log.close()


def start_etcd(tmp_path):
    """A real etcd (Debian etcd-server) on free ports; returns (process, client URL)."""
    import urllib.request
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    proc = subprocess.Popen(
        ["etcd", "--name", "t1", "--data-dir", str(tmp_path / "etcd"),
         "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"t1=http://127.0.0.1:{peer}", "--logger=zap", "--log-level=error",
         "--heartbeat-interval=10", "--election-timeout=100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=1).status == 200:
                return proc, url
        except Exception:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("etcd did not become healthy")
        time.sleep(0.05)


@pytest.fixture(params=["memory", "etcd"])
def mesh_up(request, tmp_path):
    """`modelmesh up` on examples/ (free ports), with the embedded store or a real etcd;
    yields (grpc address, rest address)."""
    grpc_port, rest_port = free_port(), free_port()
    log_path = tmp_path / "up.log"
    log = open(log_path, "w")
    etcd = None
    kv = []
    if request.param == "etcd":
        etcd, url = start_etcd(tmp_path)
        kv = ["--kv-store", f"etcd:{url}"]
    proc = subprocess.Popen(
        [modelmesh_bin(), "up", "--predictors", os.path.join(ROOT, "examples", "predictors"),
         "--models", os.path.join(ROOT, "examples", "models"),
         "--grpc-port", str(grpc_port), "--rest-port", str(rest_port), *kv],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "model(s) loaded" not in open(log_path).read():
            if proc.poll() is not None:
                pytest.fail(f"modelmesh up exited: {open(log_path).read()}")
            if time.monotonic() > deadline:
                pytest.fail(f"modelmesh up did not load the examples in 60 s: {open(log_path).read()}")
            time.sleep(0.05)
        yield f"127.0.0.1:{grpc_port}", f"127.0.0.1:{rest_port}"
    finally:
        proc.kill()
        proc.wait()
        log.close()
        if etcd is not None:
            etcd.kill()
            etcd.wait()
