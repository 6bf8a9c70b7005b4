#!/usr/bin/env bash
# The README's "run it" command: builds modelmesh, runs `modelmesh up` on examples/ (an embedded
# KV store, the mesh, `modelmesh runtime` and the Triton adapter, in one process), waits until
# the example predictors are loaded, and sends real inference requests over gRPC and REST.
# Ports are picked free on 127.0.0.1; everything started here is stopped on exit.
#
#   MODELMESH_BIN=path   use this modelmesh binary instead of building one (the test command
#                        runs the demo this way against its debug build)
#   DEMO_TIMEOUT=secs    how long to wait for the example models to load (default 120)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

STEP="starting"
step() { STEP=$1; printf '\n[demo] %s\n' "$1"; }
fail() {
  printf '\n[demo] FAILED at step "%s": %s\n' "$STEP" "$1" >&2
  exit 1
}
trap 'rc=$?; [ $rc -ne 0 ] && printf "\n[demo] FAILED at step \"%s\" (exit %s); the output above says why\n" "$STEP" "$rc" >&2' ERR

step "checking prerequisites (scripts/setup-build.sh: protoc, a C compiler; curl and python3 for the requests)"
if [ -z "${MODELMESH_BIN:-}" ]; then
  bash scripts/setup-build.sh || fail "the build prerequisites could not be installed (see above)"
fi
# The requests use curl, and python3 picks free ports and reads the example's expected input.
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "[demo] installing ${missing[*]} (apt-get)"
  SUDO=()
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO=(sudo); fi
  { command -v apt-get >/dev/null && "${SUDO[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
    fail "${missing[*]} needed: install with your package manager (apt-get install ${missing[*]}), then re-run"
fi

if [ -n "${MODELMESH_BIN:-}" ]; then
  BIN=$(cd "$(dirname "$MODELMESH_BIN")" && pwd)/$(basename "$MODELMESH_BIN")
  [ -x "$BIN" ] || fail "MODELMESH_BIN=$MODELMESH_BIN is not an executable file"
  step "using the already built $BIN (MODELMESH_BIN)"
else
  BIN=$ROOT/target/release/modelmesh
  if [ -x "$BIN" ]; then
    step "building modelmesh (release; up to date unless sources changed)"
  else
    step "building modelmesh (release; the first build compiles about 400 crates and takes 10-15 minutes on a 2-core machine, 3-5 on 8 cores)"
  fi
  cargo build --release -p modelmesh ||
    fail "cargo build failed: the first error above names the crate; a missing system tool is installed by scripts/setup-build.sh"
fi

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
GRPC=$(free_port)
REST=$(free_port)
LOG=$(mktemp)
PID=
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -f "$LOG"
}
trap cleanup EXIT

step "modelmesh up --predictors examples/predictors --models examples/models (gRPC :$GRPC, REST :$REST)"
"$BIN" up --predictors examples/predictors --models examples/models \
  --grpc-port "$GRPC" --rest-port "$REST" 2>"$LOG" &
PID=$!

step "waiting for the example models to load"
deadline=$((SECONDS + ${DEMO_TIMEOUT:-120}))
until grep -q "model(s) loaded" "$LOG"; do
  if ! kill -0 "$PID" 2>/dev/null; then
    cat "$LOG" >&2
    fail "modelmesh up exited (its log is above)"
  fi
  if ((SECONDS > deadline)); then
    cat "$LOG" >&2
    fail "the models did not load within ${DEMO_TIMEOUT:-120} s (the log is above; DEMO_TIMEOUT raises the wait)"
  fi
  sleep 0.1
done
grep "modelmesh up" "$LOG"

step "modelmesh status"
"$BIN" status --rest "127.0.0.1:$REST" || fail "modelmesh status could not read the mesh"

step "modelmesh infer tiny-regression --input 'input=[[1,2,3,4]]'   (gRPC, model_name routes)"
"$BIN" infer tiny-regression --input 'input=[[1,2,3,4]]' --grpc "127.0.0.1:$GRPC" ||
  fail "the gRPC inference request failed"

step "curl POST /v2/models/mnist-classifier/infer   (KServe v2 REST)"
BODY=$(python3 - "$ROOT/examples/models/expected.json" <<'PY'
import json, sys
ex = json.load(open(sys.argv[1]))["mnist-classifier"]
print(json.dumps({"inputs": ex["inputs"]}))
PY
)
ANSWER=$(curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' -d "$BODY" \
  "http://127.0.0.1:$REST/v2/models/mnist-classifier/infer") || fail "the REST inference request failed: $ANSWER"
python3 -c '
import json, sys
r = json.loads(sys.argv[1])
out = r["outputs"][0]
probs = out["data"]
best = max(range(len(probs)), key=probs.__getitem__)
print("model %s answered %s %s: class %d with p=%.4f" % (r["model_name"], out["name"], out["shape"], best, probs[best]))
' "$ANSWER" || fail "the REST answer was not what KServe v2 describes: $ANSWER"

STEP="done"
printf '\n[demo] done: a local mesh loaded the example models and answered gRPC and REST requests\n'
