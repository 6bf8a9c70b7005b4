#!/usr/bin/env bash
# The README's "run it" command: builds modelmesh, serves the example ONNX models with
# `modelmesh runtime`, loads one through the Triton adapter (the mmesh.ModelRuntime SPI the mesh
# uses, pulling from a local storage entry), and answers a real inference request over REST.
# Ports are picked free on 127.0.0.1; everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '[demo] %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

log "building modelmesh (release)"
cargo build --release -q -p modelmesh
BIN=$ROOT/target/release/modelmesh

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() {
  local url=$1 deadline=$((SECONDS + 30))
  until curl -sf -o /dev/null "$url"; do
    if ((SECONDS > deadline)); then echo "timed out waiting for $url" >&2; exit 1; fi
    sleep 0.05
  done
}

GRPC=$(free_port); HTTP=$(free_port); ADAPTER=$(free_port)
MODELS=$WORK/models
mkdir -p "$MODELS/_triton_models" "$WORK/storage-config"
# The storage-config secret, as mounted in a pod: one file per storage key.
printf '{"type":"local","root":"%s"}' "$ROOT/examples/models/repository" > "$WORK/storage-config/default"

log "starting modelmesh runtime (gRPC :$GRPC, REST :$HTTP)"
"$BIN" runtime --address 127.0.0.1 --model-repository "$MODELS/_triton_models" \
  --grpc-port "$GRPC" --http-port "$HTTP" 2>"$WORK/runtime.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$HTTP/v2/health/ready"

log "starting modelmesh adapter (ModelRuntime :$ADAPTER) in front of it"
"$BIN" adapter --server-type triton --adapter-port "$ADAPTER" --runtime-port "$GRPC" \
  --runtime-host 127.0.0.1 --container-mem-req-bytes 1073741824 --root-model-dir "$MODELS" \
  --use-embedded-puller --storage-config-dir "$WORK/storage-config" 2>"$WORK/adapter.log" &
PIDS+=($!)

log "runtimeStatus / loadModel through the adapter (modelmesh's own gRPC client)"
"$BIN" spi --address "127.0.0.1:$ADAPTER" load mnist-demo \
  --model-type onnx --model-path mnist-classifier

log "inference over KServe v2 REST"
BODY=$(python3 - "$ROOT/examples/models/expected.json" <<'PY'
import json, sys
ex = json.load(open(sys.argv[1]))["mnist-classifier"]
print(json.dumps({"inputs": ex["inputs"]}))
PY
)
curl -sf -X POST -H 'Content-Type: application/json' -d "$BODY" \
  "http://127.0.0.1:$HTTP/v2/models/mnist-demo/infer" | python3 -c '
import json, sys
r = json.load(sys.stdin)
out = r["outputs"][0]
probs = out["data"]
best = max(range(len(probs)), key=probs.__getitem__)
print("model %s answered %s %s: class %d with p=%.4f" % (r["model_name"], out["name"], out["shape"], best, probs[best]))
'
log "done"
