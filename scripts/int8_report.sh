#!/usr/bin/env bash
# fp32 vs INT8, metric and latency, for every shipped default model and backend, measured in one run per model.
#   bash scripts/int8_report.sh [OUT [MODEL ...]]      (default out/int8, all three shipped models)
# For each model: export, compile OpenVINO fp32 + ORT QDQ INT8 + OpenVINO NNCF INT8 (calibrated on calib/<task>),
# regenerate the held-out split its metric was recorded on, validate with --val and a 1-point budget, and bench
# torch eager vs every artifact side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
E=".venv/bin/edgecv"
OUT=${1:-out/int8}
shift || true
ONLY="$*"
mkdir -p "$OUT"
for spec in "shapes_classifier classify cls shapes_classifier" "shapes_segmenter segment seg shapes_segmenter" \
            "shapes_detector detect det yolov3_tiny_synth"; do
  read -r model task calib record <<<"$spec"
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $model "* ]]; then continue; fi
  d="$OUT/$model"
  printf '\n== %s\n' "$model"
  $E export "$model" -o "$d" --force --json > "$OUT/$model.export.json"
  $E compile "$d" --backend openvino --precision fp32 --json > /dev/null
  $E compile "$d" --backend onnxruntime --precision int8 --calib "calib/$calib" --json > "$OUT/$model.ort_int8.json"
  $E compile "$d" --backend openvino --precision int8 --calib "calib/$calib" --json > "$OUT/$model.ov_int8.json"
  read -r seed size count < <(.venv/bin/python -c "
import json
m = json.load(open('edgecv/zoo/weights/$record.json'))
v = m.get('val') or {'seed': m['data']['seed'], 'size': m['data']['size'], 'count': m['data']['n_val']}
print(v['seed'], v['size'], v['count'])")
  $E data synth --task "$task" -o "$d.val" --n-train 0 --n-val "$count" --size "$size" --seed "$seed" --force > /dev/null
  val="$d.val"; [ "$task" = detect ] || val="$d.val/val"
  $E validate "$d" -b onnxruntime -b openvino -b onnxruntime:int8 -b openvino:int8 --val "$val" --max-drop 1.0 \
    | tee "$OUT/$model.validate.txt" || true
  $E bench "$d" -b torch -b onnxruntime -b onnxruntime:int8 -b openvino -b openvino:int8 --batch 1 --min-time 2 \
    --no-stages | tee "$OUT/$model.bench.txt"
done
