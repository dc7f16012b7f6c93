#!/usr/bin/env python
"""edgecv against Ultralytics' own deployment paths, on one Ultralytics model, in one run.

1. Synthetic shapes data (``edgecv.data.synth``, detect) in Ultralytics' YOLO layout (``images/{train,val}``,
   ``labels/{train,val}``) + a ``data.yaml``.
2. Ultralytics' trainer (CPU, from the model yaml, random init: no hub download) for ``--minutes``.
3. Ultralytics: ``predict`` with the PyTorch checkpoint, its own ``export`` to ONNX and OpenVINO, ``predict`` with
   each; its own ``val`` mAP@0.5 as it reports it.
4. edgecv: ``export best.pt --trust-checkpoint`` → ``compile`` OpenVINO fp32 and INT8 (``--val`` the val split,
   ``--max-drop`` 1 pt) → mAP on the same images →
   per-frame stage times (``edgecv.bench.stages``).

Every row's mAP@0.5 is computed by the same evaluator (:func:`edgecv.validate.detection.coco_map`, faster-coco-eval)
on the same val images with the same post-processing settings (conf 0.001, IoU 0.7, 300 detections: Ultralytics' val
defaults); per-frame times are medians over the val images at batch 1 (pre + infer + post). Ultralytics rows give its
own ``Results.speed`` split and the wall time of the ``predict()`` call.

Usage::

    python scripts/vs_ultralytics.py --out out/vs_ultralytics --model yolov8n.yaml --imgsz 320 --minutes 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "True")
os.environ.setdefault("YOLO_VERBOSE", "False")

CONF, IOU, MAX_DET = 0.001, 0.7, 300


def edgecv_cli(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "edgecv", *args, "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"edgecv {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def make_data(root: Path, n_train: int, n_val: int, size: int) -> Path:
    from edgecv.data.synth import class_names, generate

    if not (root / "data.yaml").is_file():
        generate("detect", root, n_train=n_train, n_val=n_val, size=size, seed=0)
        names = class_names("detect")
        (root / "data.yaml").write_text(
            json.dumps(
                {
                    "path": str(root.resolve()),
                    "train": "images/train",
                    "val": "images/val",
                    "names": dict(enumerate(names)),
                }
            )
        )
    return root / "data.yaml"


def train(
    model_yaml: str, data_yaml: Path, out: Path, imgsz: int, minutes: float, batch: int, init: str | None = None
) -> Path:
    best = out / "train" / "weights" / "best.pt"
    if best.is_file():
        return best
    from ultralytics import YOLO

    t0 = time.time()
    # init: continue from an earlier run's weights (its architecture; the yaml is then only its record)
    YOLO(init or model_yaml).train(
        data=str(data_yaml),
        imgsz=imgsz,
        epochs=1000,
        time=minutes / 60.0,
        batch=batch,
        device="cpu",
        workers=0,
        project=str(out),
        name="train",
        exist_ok=True,
        pretrained=False,
        amp=False,
        plots=False,
        verbose=False,
        seed=0,
        deterministic=True,
        patience=1000,
    )
    print(f"trained in {time.time() - t0:.0f} s → {best}", flush=True)
    return best


def val_samples(data_root: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    from edgecv.data.synth import class_names
    from edgecv.validate.detection import load_coco_samples

    return load_coco_samples(str(data_root), split="val", class_names=class_names("detect"))


def ultralytics_rows(
    paths: dict[str, str], samples: list[Any], imgsz: int, nc: int, data_yaml: Path
) -> list[dict[str, Any]]:
    from ultralytics import YOLO

    from edgecv.validate.detection import coco_map

    rows = []
    for name, path in paths.items():
        model = YOLO(path, task="detect")
        kw = {
            "imgsz": imgsz,
            "conf": CONF,
            "iou": IOU,
            "max_det": MAX_DET,
            "device": "cpu",
            "verbose": False,
            "rect": False,
        }
        for img, _, _ in samples[:5]:  # warm-up (OpenVINO/ORT compile on first call)
            model.predict(img, **kw)
        dets, speeds, walls = [], [], []
        for img, _, _ in samples:
            t0 = time.perf_counter()
            r = model.predict(img, **kw)[0]
            walls.append(1000.0 * (time.perf_counter() - t0))
            speeds.append([r.speed["preprocess"], r.speed["inference"], r.speed["postprocess"]])
            dets.append((r.boxes.xyxy.numpy(), r.boxes.conf.numpy(), r.boxes.cls.numpy().astype(np.int64)))
        m = coco_map(dets, [(s[1], s[2]) for s in samples], nc, [s[0].shape[:2] for s in samples])
        med = np.median(np.asarray(speeds), axis=0)
        own = model.val(
            data=str(data_yaml),
            imgsz=imgsz,
            batch=1,
            device="cpu",
            conf=CONF,
            iou=IOU,
            max_det=MAX_DET,
            plots=False,
            verbose=False,
            rect=False,
        )
        rows.append(
            {
                "system": "ultralytics",
                "path": name,
                "map50": 100 * m["map50"],
                "own_val_map50": 100 * float(own.box.map50),
                "pre_ms": float(med[0]),
                "infer_ms": float(med[1]),
                "post_ms": float(med[2]),
                "total_ms": float(med.sum()),
                "wall_ms": float(np.median(walls)),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def edgecv_rows(
    best: Path, out: Path, data_root: Path, samples: list[Any], max_drop: float = 1.0
) -> list[dict[str, Any]]:
    from edgecv.backends import open_runner
    from edgecv.bench.stages import stage_times
    from edgecv.bundle import Bundle
    from edgecv.validate.detection import runner_map

    bundle_dir = out / "edgecv_bundle"
    if not (bundle_dir / "manifest.json").is_file():
        edgecv_cli(
            "export",
            str(best),
            "-o",
            str(bundle_dir),
            "--trust-checkpoint",
            "--conf",
            str(CONF),
            "--iou-threshold",
            str(IOU),
            "--max-det",
            str(MAX_DET),
            "--static-batch",
            "--force",
        )
        edgecv_cli("compile", str(bundle_dir), "-b", "openvino", "-p", "fp32")
        # the best INT8 path: calibrated on the train images, under an accuracy budget on the val split (layers that
        # cost mAP are kept in float until the drop is within --max-drop)
        int8 = edgecv_cli(
            "compile",
            str(bundle_dir),
            "-b",
            "openvino",
            "-p",
            "int8",
            "--calib",
            str(data_root / "images" / "train"),
            "--val",
            str(data_root),
            "--max-drop",
            str(max_drop),
        )
        (out / "edgecv_int8.json").write_text(json.dumps(int8, indent=1))
    bundle = Bundle.open(bundle_dir)
    c = bundle.contract
    rows = []
    for backend, precision in (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "int8")):
        with open_runner(bundle, backend, precision) as runner:
            m, _ = runner_map(runner, c, samples)
            st = stage_times(runner, c, [s[0] for s in samples], n=len(samples), warmup=5)
        rows.append(
            {
                "system": "edgecv",
                "path": f"{backend} {precision}",
                "map50": 100 * m["map50"],
                "own_val_map50": None,
                "pre_ms": st.pre_ms,
                "infer_ms": st.infer_ms,
                "post_ms": st.post_ms,
                "total_ms": st.pre_ms + st.infer_ms + st.post_ms,
                "wall_ms": st.total_ms,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="out/vs_ultralytics")
    ap.add_argument("--model", default="yolov8n.yaml")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--minutes", type=float, default=6.0, help="Ultralytics training time on the CPU")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--n-train", type=int, default=1200)
    ap.add_argument("--n-val", type=int, default=150)
    ap.add_argument(
        "--init",
        default=None,
        help="start training from these Ultralytics weights (e.g. an earlier run's last.pt) instead of random init",
    )
    ap.add_argument("--max-drop", type=float, default=1.0, help="edgecv INT8 accuracy budget, mAP@0.5 points")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from ultralytics import YOLO
    from ultralytics import __version__ as ul_version

    data_yaml = make_data(out / "data", args.n_train, args.n_val, args.imgsz)
    best = train(args.model, data_yaml, out, args.imgsz, args.minutes, args.batch, args.init)
    samples = val_samples(out / "data")
    nc = 8
    # Ultralytics' own exports of the same checkpoint
    onnx_path = out / "train" / "weights" / "best.onnx"
    ov_path = out / "train" / "weights" / "best_openvino_model"
    if not onnx_path.is_file():
        YOLO(str(best)).export(format="onnx", imgsz=args.imgsz, simplify=True, dynamic=False, verbose=False)
    if not ov_path.is_dir():
        YOLO(str(best)).export(format="openvino", imgsz=args.imgsz, dynamic=False, verbose=False)
    rows = ultralytics_rows(
        {"PyTorch (.pt)": str(best), "ONNX Runtime": str(onnx_path), "OpenVINO fp32": str(ov_path)},
        samples,
        args.imgsz,
        nc,
        data_yaml,
    )
    rows += edgecv_rows(best, out, out / "data", samples, args.max_drop)

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    trained = f"trained {args.minutes:g} min on {args.n_train} synthetic images" + (
        f" from {args.init}" if args.init else " from random init"
    )
    head = (
        f"{args.model} imgsz {args.imgsz}, {trained}, {len(samples)} val images, conf {CONF} IoU {IOU} "
        f"max_det {MAX_DET}; "
        f"{cpu}, {os.cpu_count()} logical CPUs; ultralytics {ul_version}"
    )
    lines = [
        head,
        "",
        "| system | path | mAP@0.5 (same evaluator) | Ultralytics val mAP@0.5 | pre ms | infer ms | "
        "post ms | pre+infer+post ms | frame/s | wall ms/frame |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        own = f"{r['own_val_map50']:.2f}" if r["own_val_map50"] is not None else ""
        lines.append(
            f"| {r['system']} | {r['path']} | {r['map50']:.2f} | {own} | {r['pre_ms']:.2f} | "
            f"{r['infer_ms']:.2f} | {r['post_ms']:.2f} | {r['total_ms']:.2f} | {1000 / r['total_ms']:.1f} | "
            f"{r['wall_ms']:.2f} |"
        )
    text = "\n".join(lines)
    print(text)
    (out / "table.md").write_text(text + "\n")
    (out / "rows.json").write_text(json.dumps({"header": head, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
