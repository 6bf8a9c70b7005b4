#!/usr/bin/env bash
# The README's "run it" command: builds modelmesh, runs `modelmesh up` on examples/ (an embedded
# KV store, the mesh, `modelmesh runtime` and the Triton adapter, in one process), waits until
# the example predictors are loaded, and sends real inference requests over gRPC and REST.
# Ports are picked free on 127.0.0.1; everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '\n[demo] %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

log "building modelmesh (release; the first build takes a few minutes)"
cargo build --release -q -p modelmesh
BIN=$ROOT/target/release/modelmesh

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
GRPC=$(free_port); REST=$(free_port)
LOG=$(mktemp)
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  rm -f "$LOG"
}
trap cleanup EXIT

log "modelmesh up --predictors examples/predictors --models examples/models (gRPC :$GRPC, REST :$REST)"
"$BIN" up --predictors examples/predictors --models examples/models \
  --grpc-port "$GRPC" --rest-port "$REST" 2>"$LOG" &
PID=$!

deadline=$((SECONDS + 60))
until grep -q "model(s) loaded" "$LOG"; do
  if ! kill -0 "$PID" 2>/dev/null; then cat "$LOG" >&2; echo "modelmesh up exited" >&2; exit 1; fi
  if ((SECONDS > deadline)); then cat "$LOG" >&2; echo "timed out waiting for the models to load" >&2; exit 1; fi
  sleep 0.1
done
grep "modelmesh up" "$LOG"

log "modelmesh status"
"$BIN" status --rest "127.0.0.1:$REST"

log "modelmesh infer tiny-regression --input 'input=[[1,2,3,4]]'   (gRPC, model_name routes)"
"$BIN" infer tiny-regression --input 'input=[[1,2,3,4]]' --grpc "127.0.0.1:$GRPC"

log "curl POST /v2/models/mnist-classifier/infer   (KServe v2 REST)"
BODY=$(python3 - "$ROOT/examples/models/expected.json" <<'PY'
import json, sys
ex = json.load(open(sys.argv[1]))["mnist-classifier"]
print(json.dumps({"inputs": ex["inputs"]}))
PY
)
curl -sf -X POST -H 'Content-Type: application/json' -d "$BODY" \
  "http://127.0.0.1:$REST/v2/models/mnist-classifier/infer" | python3 -c '
import json, sys
r = json.load(sys.stdin)
out = r["outputs"][0]
probs = out["data"]
best = max(range(len(probs)), key=probs.__getitem__)
print("model %s answered %s %s: class %d with p=%.4f" % (r["model_name"], out["name"], out["shape"], best, probs[best]))
'
log "done"
