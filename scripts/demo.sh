#!/usr/bin/env bash
# The main job on the shipped default model and data: export → compile → validate → bench → run.
# Called by `make demo` after it installed everything into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
E=".venv/bin/edgecv"
OUT=${OUT:-out/demo}
mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "what this machine has"
$E doctor

step "held-out validation images (the split the shipped metric was measured on)"
VAL=$(.venv/bin/python -c "import json; m=json.load(open('edgecv/zoo/weights/shapes_classifier.json')); v=m['val']; print(v['seed'], v['size'], v['count'])")
read -r SEED SIZE COUNT <<<"$VAL"
$E data synth --task classify -o "$OUT/data" --n-train 0 --n-val "$COUNT" --size "$SIZE" --seed "$SEED" --force

step "export the shipped default classifier (trained by recipes/classifier.yaml); reference inputs: its val split"
$E export shapes_classifier -o "$OUT/cls" --force --reference-data "$OUT/data/val" --n-reference 64

step "compile: OpenVINO IR fp32 and fp16, INT8 for ONNX Runtime (QDQ) and OpenVINO (NNCF), the trtexec command"
$E compile "$OUT/cls" --backend openvino --precision fp32
$E compile "$OUT/cls" --backend openvino --precision fp16
$E compile "$OUT/cls" --backend onnxruntime --precision int8 --calib calib/cls
$E compile "$OUT/cls" --backend openvino --precision int8 --calib calib/cls
$E compile "$OUT/cls" --backend tensorrt --precision fp16 --emit-trtexec


step "validate every backend against PyTorch, and the top-1 of each on the held-out images"
# a failed check does not stop the demo: the report at the end is where it is looked at; the exit code keeps it
failed=0
$E validate "$OUT/cls" -b onnxruntime -b openvino -b openvino:bf16 -b openvino:fp16 -b onnxruntime:int8 \
  -b openvino:int8 --val "$OUT/data/val" --max-drop 1.0 --layers || failed=$?

step "bench: torch eager vs ONNX Runtime vs OpenVINO fp32 / bf16 / int8, batch 1 and 8"
$E bench "$OUT/cls" -b torch -b onnxruntime -b onnxruntime:int8 -b openvino -b openvino:bf16 -b openvino:int8 \
  --batch 1 --batch 8 --min-time 1

step "the shipped detector (YOLOv3-tiny, NMS in the graph): export, validate by box matching and mAP, bench"
$E data synth --task detect -o "$OUT/det_data" --n-train 0 --n-val 100 --size 96 --seed 0 --force
$E export shapes_detector -o "$OUT/det" --force --reference-data "$OUT/det_data" --n-reference 8
$E compile "$OUT/det" --backend openvino --precision fp32
$E validate "$OUT/det" -b onnxruntime -b openvino --val "$OUT/det_data" --max-drop 0.5 || failed=$?
$E bench "$OUT/det" -b torch -b onnxruntime -b openvino --batch 1 --min-time 1 --frame-size 1280x720

step "run the detector on a 720p video: annotated output + one JSON line per frame"
.venv/bin/python scripts/make_video.py "$OUT/shapes.mp4" --seconds 4 --task detect --size 720
$E run "$OUT/det" --backend openvino --source "$OUT/shapes.mp4" --save "$OUT/annotated.mp4" \
  --jsonl "$OUT/frames.jsonl" --summary "$OUT/run.json" --quiet --force

step "one HTML page from what validate, bench and run kept in the two bundles (results/)"
$E report "$OUT/cls" "$OUT/det" -o "$OUT/report.html" --title "edgecv demo: shapes classifier and detector"
printf '\ndemo outputs are in %s; open %s/report.html in a browser\n' "$OUT" "$OUT"
if [ "$failed" != 0 ]; then
  printf 'a validation step failed (exit %s): see the tables above and the report\n' "$failed"
  exit "$failed"
fi
