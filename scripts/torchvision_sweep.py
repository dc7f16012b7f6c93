#!/usr/bin/env python
"""Every torchvision builder, named only by ``torchvision:<name>``, through edgecv: export (random weights, offline),
validate on ONNX Runtime and OpenVINO fp32, and ``edgecv run`` on a folder of photos.

Prints n/N per group (classification, segmentation, detection) and every failure with a one-line reason; ``--json``
writes the rows. Each step is the CLI a user runs, in a subprocess::

    python scripts/torchvision_sweep.py --groups detection,segmentation --classify-sample 8 -o /tmp/tv_sweep

Small inputs keep the sweep short: classifiers at ``--size`` (96) and, where a model refuses it (fixed-size ViTs,
Inception), at its default size; segmentation at 128 px; detectors at 320 px (``min_size``/``max_size`` 320 for the
families that resize, SSD300 at 300). The whole list is long on a 2-core machine: ``--classify-sample N`` takes every
k-th classifier.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GROUPS = ("classification", "segmentation", "detection")
SKIP_MODULES = ("video", "optical_flow", "quantization")


def builders() -> dict[str, list[str]]:
    import torchvision.models as tvm

    det = tvm.list_models(module=tvm.detection)
    seg = tvm.list_models(module=tvm.segmentation)
    other = set()
    for sub in SKIP_MODULES:
        other |= set(tvm.list_models(module=getattr(tvm, sub)))
    cls = [n for n in tvm.list_models() if n not in set(det) | set(seg) | other]
    return {"classification": cls, "segmentation": seg, "detection": det}


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.lower().startswith(("error", "valueerror", "runtimeerror"))]
    return (errs[-1] if errs else lines[-1] if lines else "no output")[:300]


def _cli(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edgecv", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ})
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"error: timed out after {timeout:.0f} s")


def export_args(group: str, name: str, size: int) -> list[str]:
    if group == "classification":
        return ["--input-shape", f"1x3x{size}x{size}"]
    if group == "segmentation":
        return ["--input-shape", "1x3x128x128"]
    if name.startswith("ssd"):
        return []
    return [
        "--input-shape",
        "1x3x320x320",
        "--kwarg",
        "min_size=320",
        "--kwarg",
        "max_size=320",
        "--conf",
        "0.05",
    ]


def sweep_one(group: str, name: str, out: Path, frames: Path, size: int, timeout: float) -> dict[str, Any]:
    row: dict[str, Any] = {"group": group, "name": name, "export": False, "validate": False, "run": False}
    bundle = out / name
    t0 = time.perf_counter()
    proc = _cli(
        [
            "export",
            f"torchvision:{name}",
            "-o",
            str(bundle),
            "--force",
            "--n-reference",
            "2",
            *export_args(group, name, size),
            "--json",
        ],
        timeout,
    )
    if proc.returncode != 0 and group == "classification":
        # fixed-size models (ViT, Swin, MaxViT…) refuse a small input: their default size
        proc = _cli(
            ["export", f"torchvision:{name}", "-o", str(bundle), "--force", "--n-reference", "2", "--json"], timeout
        )
    if proc.returncode != 0:
        row["reason"] = "export: " + _one_line(proc.stderr or proc.stdout)
        return row
    res = json.loads(proc.stdout)
    row["export"] = True
    row["task"] = res["contract"]["task"]
    row["input"] = "x".join(map(str, res["contract"]["input_shape"]))
    proc = _cli(["validate", str(bundle), "-b", "onnxruntime", "-b", "openvino", "--json"], timeout)
    if proc.returncode != 0:
        row["reason"] = "validate: " + _one_line(proc.stderr or proc.stdout)
        return row
    rep = json.loads(proc.stdout)
    failed = [r["backend"] for r in rep["rows"] if not r.get("passed")]
    if failed:
        fails = [
            f for r in rep["rows"] if not r.get("passed") for o in r.get("outputs", []) for f in o.get("failures") or []
        ]
        row["reason"] = f"validate: {', '.join(failed)} failed ({fails[0] if fails else 'see the report'})"
        return row
    row["validate"] = True
    proc = _cli(
        [
            "run",
            str(bundle),
            "--source",
            str(frames),
            "-b",
            "onnxruntime",
            "--max-frames",
            "2",
            "--jsonl",
            str(out / f"{name}.jsonl"),
        ],
        timeout,
    )
    lines = (out / f"{name}.jsonl").read_text().splitlines() if (out / f"{name}.jsonl").is_file() else []
    if proc.returncode != 0 or len(lines) < 2:
        row["reason"] = "run: " + (
            _one_line(proc.stderr or proc.stdout) if proc.returncode else f"{len(lines)} JSON lines for 2 frames"
        )
        return row
    row["run"] = True
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, default=Path("tv_sweep"))
    ap.add_argument("--groups", default=",".join(GROUPS), help="comma-separated: " + ", ".join(GROUPS))
    ap.add_argument("--classify-sample", type=int, default=0, help="only N classifiers, spread over the list (0: all)")
    ap.add_argument("--only", default="", help="comma-separated builder names (overrides the groups' lists)")
    ap.add_argument("--size", type=int, default=96, help="classifier input side (default 96)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per CLI step")
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = ap.parse_args(argv)

    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        ap.error(f"--groups: expected {', '.join(GROUPS)}, found {', '.join(bad)}")
    lists = builders()
    if args.classify_sample and len(lists["classification"]) > args.classify_sample:
        step = len(lists["classification"]) / args.classify_sample
        lists["classification"] = [lists["classification"][int(i * step)] for i in range(args.classify_sample)]
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    args.out.mkdir(parents=True, exist_ok=True)
    frames = args.out / "_frames"
    frames.mkdir(exist_ok=True)
    import cv2
    from skimage import data

    for i, img in enumerate((data.astronaut(), data.coffee())):
        cv2.imwrite(str(frames / f"{i}.jpg"), img[..., ::-1].copy())

    rows: list[dict[str, Any]] = []
    for group in groups:
        names = [n for n in lists[group] if not only or n in only]
        for name in names:
            row = sweep_one(group, name, args.out, frames, args.size, args.timeout)
            rows.append(row)
            ok = row["export"] and row["validate"] and row["run"]
            print(f"{group:15s} {name:40s} {'ok' if ok else 'FAIL'} {row.get('reason', '')}", flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    print()
    for group in groups:
        g = [r for r in rows if r["group"] == group]
        if not g:
            continue
        n_ok = sum(r["export"] and r["validate"] and r["run"] for r in g)
        print(
            f"{group}: {n_ok}/{len(g)} export + validate (onnxruntime, openvino) + run "
            f"(export {sum(r['export'] for r in g)}, validate {sum(r['validate'] for r in g)}, "
            f"run {sum(r['run'] for r in g)})"
        )
        for r in g:
            if "reason" in r:
                print(f"  {r['name']}: {r['reason']}")
    return 0 if all(r["export"] and r["validate"] and r["run"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
