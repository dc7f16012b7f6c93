#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU (x86 + CUDA, or a Jetson): runs every CUDA path that exists
# there and prints one summary. Finishes within 10 minutes (each step has its own time limit).
#   bash scripts/gpu_check.sh [OUT]            (default out/gpu_check; EDGECV=path/to/edgecv to override)
# Steps: doctor → export the shipped classifier → torch CUDA fp32/fp16 validate + bench → where TensorRT is
# installed: compile fp32/fp16 (engine + sidecar), validate, bench, int8 from the QDQ model (calib/cls), the
# emitted trtexec script run by trtexec when it is on PATH, and the sidecar guard on the engine just built.
# Run on an NVIDIA H200 without TensorRT (torch CUDA steps only), 2026-11-30; the TensorRT steps have not run yet.
set -uo pipefail
cd "$(dirname "$0")/.."
E=${EDGECV:-}
if [ -z "$E" ]; then
  if [ -x .venv/bin/edgecv ]; then E=.venv/bin/edgecv; else E="python3 -m edgecv"; fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
OUT=${1:-out/gpu_check}
mkdir -p "$OUT"
B="$OUT/cls"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
START=$(date +%s)

step() {  # step NAME SECONDS CMD...: run with a time limit, log to OUT/NAME.log, one summary line
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local status=ok
  [ $rc -eq 0 ] || status="FAILED (rc $rc, see $OUT/$name.log)"
  [ $rc -eq 124 ] && status="TIMED OUT after ${limit}s"
  printf '%-28s %-10s %4ss\n' "$name" "$status" "$(( $(date +%s) - t0 ))" | tee -a "$SUMMARY"
  return $rc
}
skip() { printf '%-28s %s\n' "$1" "skipped: $2" | tee -a "$SUMMARY"; }

echo "== edgecv GPU check -> $OUT"
step doctor 60 $E doctor --json
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  skip torch-cuda "torch sees no CUDA device"
  HAVE_TORCH_CUDA=0
else
  HAVE_TORCH_CUDA=1
fi

step export 120 $E export shapes_classifier -o "$B" --force --json || { echo "== export failed: nothing to check"; exit 1; }

if [ "$HAVE_TORCH_CUDA" = 1 ]; then
  step validate-torch-cuda 120 $E validate "$B" -b torch -b torch:fp16 --device cuda --json
  step bench-torch-cuda 120 $E bench "$B" -b torch -b torch:fp16 --device cuda --batch 1 --batch 8 --min-time 1 \
    --no-stages --json
fi

if $PY -c "import tensorrt as t, sys; sys.exit(0 if hasattr(t, 'Builder') else 1)" 2>/dev/null; then
  step trt-compile-fp32 180 $E compile "$B" -b tensorrt -p fp32 --json
  step trt-compile-fp16 180 $E compile "$B" -b tensorrt -p fp16 --json
  step trt-validate 120 $E validate "$B" -b tensorrt -b tensorrt:fp16 --json
  step trt-bench 120 $E bench "$B" -b tensorrt -b tensorrt:fp16 --batch 1 --batch 8 --min-time 1 --no-stages --json
  step trt-int8 240 $E compile "$B" -b tensorrt -p int8 --calib calib/cls --json
  step trt-validate-int8 120 $E validate "$B" -b tensorrt:int8 --json
  # the guard: a sidecar claiming another GPU must be refused in one line, and --rebuild must rebuild
  SIDE="$B/tensorrt/fp16/model.engine.json"
  if [ -f "$SIDE" ]; then
    cp "$SIDE" "$OUT/sidecar.orig.json"
    # pretend the engine was built on another GPU: edit the sidecar and re-record its hash (as a rebuilt bundle would)
    $PY - "$B" <<'PY'
import json, sys
from edgecv._io import sha256_path
from edgecv.bundle import Bundle
b = Bundle.open(sys.argv[1], verify=False)
rel = "tensorrt/fp16/model.engine.json"
d = json.loads(b.path(rel).read_text()); d["device"]["compute_capability"] = "1.0"
b.path(rel).write_text(json.dumps(d))
b.manifest.files[rel] = sha256_path(b.path(rel)); b.save()
PY
    if timeout 60 $E validate "$B" -b tensorrt:fp16 > "$OUT/guard.log" 2>&1; then
      echo "guard-refuses-mismatch       FAILED (a mismatched sidecar was accepted)" | tee -a "$SUMMARY"
    else
      grep -q "or pass --rebuild" "$OUT/guard.log" && echo "guard-refuses-mismatch       ok" | tee -a "$SUMMARY" \
        || echo "guard-refuses-mismatch       FAILED (no rebuild hint, see $OUT/guard.log)" | tee -a "$SUMMARY"
    fi
    step guard-rebuild 240 $E validate "$B" -b tensorrt:fp16 --rebuild --json
  fi
  if command -v trtexec >/dev/null 2>&1 || [ -x /usr/src/tensorrt/bin/trtexec ]; then
    step trtexec-script-emit 60 $E compile "$B" -b tensorrt -p fp16 --emit-trtexec --json
    step trtexec-script-run 300 sh "$B/tensorrt/fp16/trtexec.sh"
  else
    skip trtexec-script "trtexec not on PATH"
  fi
else
  skip tensorrt "TensorRT is not installed"
fi

echo
echo "== summary ($(( $(date +%s) - START ))s) — logs and JSON in $OUT"
cat "$SUMMARY"
python3 - "$OUT" <<'PY' || true
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for name in ("validate-torch-cuda", "trt-validate", "trt-validate-int8"):
    p = out / f"{name}.log"
    try:  # the log holds stdout (JSON) then stderr (an error line on failure)
        rep = json.JSONDecoder().raw_decode(p.read_text().lstrip())[0]
    except Exception:
        continue
    for r in rep.get("rows", []):
        for o in r.get("outputs") or []:
            print(name, r.get("backend"), r.get("precision_ran") or r.get("precision"), r.get("device"),
                  o.get("name"), "max_abs", o.get("max_abs"), "cosine", o.get("cosine"),
                  "top1", o.get("top1_agreement"), "passed", o.get("passed"))
        if r.get("error"):
            print(name, r.get("backend"), r.get("precision"), "ERROR", r["error"])
for name in ("bench-torch-cuda", "trt-bench"):
    p = out / f"{name}.log"
    try:
        rep = json.JSONDecoder().raw_decode(p.read_text().lstrip())[0]
    except Exception:
        continue
    for r in rep.get("rows", []):
        s = r.get("latency") or {}
        print(name, f"{r.get('backend')}:{r.get('precision')}", "ran", r.get("precision_ran"), r.get("device"),
              "batch", r.get("batch"), "p50 ms", s.get("p50_ms"), "items/s", s.get("throughput"), "error", r.get("error"))
PY
grep -q "FAILED\|TIMED OUT" "$SUMMARY" && exit 1 || exit 0
