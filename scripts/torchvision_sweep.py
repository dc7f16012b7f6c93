#!/usr/bin/env python
"""Every torchvision builder, named only by ``torchvision:<name>``, through edgecv: ``export`` (random weights,
offline), ``validate`` on ONNX Runtime and OpenVINO fp32, and ``run`` on a 3-frame video clip (JSON lines and the
annotated video).

Resumable: one JSON line per model is appended to ``--jsonl`` as soon as that model is done, and a rerun skips every
model that already has a line there (``--redo`` runs them again, ``--retry-failed`` only the failed ones). Models run
cheapest first (parameter count from torchvision's weight metadata; nothing is downloaded), each in its own worker
process (its memory is freed when it ends; ``--timeout`` kills it), and inside the worker the three commands run
in-process through edgecv's own CLI entry (``edgecv.cli.app.main``), so torch and edgecv are imported once per
model instead of once per command. Bundles are deleted after a model passes (``--keep`` keeps them)::

    nice -n 10 python scripts/torchvision_sweep.py --jsonl /work/notes/tv_sweep.jsonl -o /tmp/tv_sweep
    python scripts/torchvision_sweep.py --jsonl /work/notes/tv_sweep.jsonl --summary   # n/N so far, no run

Inputs are small to keep it short: classifiers at ``--size`` (96; ViTs get ``image_size`` to match, MaxViT keeps
224, and a classifier that refuses the small size is retried at its default), segmenters at 128 px, detectors at
320 px (``min_size``/``max_size`` 320 for the families that resize; SSD300 and SSDlite at their fixed size).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GROUPS = ("classification", "segmentation", "detection")
SKIP_MODULES = ("video", "optical_flow", "quantization")
STEPS = ("export", "validate", "run")
#: classifiers whose input side must be a multiple of something else than 32: their side at ``--size``
_VIT_PATCH = {"vit_b_16": 16, "vit_b_32": 32, "vit_l_16": 16, "vit_l_32": 32, "vit_h_14": 14}
#: classifiers kept at their own size (MaxViT's 7x7 partitions need 224)
_DEFAULT_SIZE = {"maxvit_t"}
CLIP_FRAMES = 3


# ---------------------------------------------------------------------------------------------------------- listing
def builders() -> dict[str, list[str]]:
    import torchvision.models as tvm

    det = tvm.list_models(module=tvm.detection)
    seg = tvm.list_models(module=tvm.segmentation)
    other: set[str] = set()
    for sub in SKIP_MODULES:
        other |= set(tvm.list_models(module=getattr(tvm, sub)))
    cls = [n for n in tvm.list_models() if n not in set(det) | set(seg) | other]
    return {"classification": cls, "segmentation": seg, "detection": det}


def num_params(name: str) -> int:
    """Parameter count from the builder's weight metadata (no download, no build); 0 when unknown."""
    import torchvision.models as tvm

    try:
        return int(tvm.get_model_weights(name).DEFAULT.meta.get("num_params") or 0)
    except Exception:  # noqa: BLE001 - a builder without weight enums sorts first
        return 0


# ----------------------------------------------------------------------------------------------------- worker side
def export_args(group: str, name: str, size: int) -> list[str]:
    if group == "classification":
        if name in _DEFAULT_SIZE:
            return []
        if name in _VIT_PATCH:
            p = _VIT_PATCH[name]
            side = max(p, round(size / p) * p)
            return ["--input-shape", f"1x3x{side}x{side}", "--kwarg", f"image_size={side}"]
        return ["--input-shape", f"1x3x{size}x{size}"]
    if group == "segmentation":
        return ["--input-shape", "1x3x128x128"]
    if name.startswith("ssd"):
        return ["--conf", "0.05"]
    return ["--input-shape", "1x3x320x320", "--kwarg", "min_size=320", "--kwarg", "max_size=320", "--conf", "0.05"]


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.lower().startswith(("error", "valueerror", "runtimeerror"))]
    return (errs[-1] if errs else lines[-1] if lines else "no output")[:300]


def _json_of(text: str) -> dict[str, Any]:
    start = text.find("{")
    return json.loads(text[start:]) if start >= 0 else {}


def cli(args: list[str]) -> tuple[int, str, str]:
    """``edgecv ARGS`` in this process, through the console-script entry (errors → one line, exit codes)."""
    from edgecv.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["edgecv", *args]
    rc = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return rc, out.getvalue(), err.getvalue()


def worker(group: str, name: str, work: Path, clip: Path, size: int, status: Path) -> dict[str, Any]:
    """export → validate (onnxruntime + openvino) → run, for one builder; the row for the JSON-lines file."""
    row: dict[str, Any] = {"group": group, "name": name, "export": False, "validate": False, "run": False}
    secs: dict[str, float] = {}
    row["seconds"] = secs
    bundle = work / "bundle"

    def step(label: str, args: list[str]) -> tuple[int, str, str]:
        status.write_text(label)
        t0 = time.perf_counter()
        res = cli(args)
        secs[label] = round(time.perf_counter() - t0, 1)
        return res

    base = ["export", f"torchvision:{name}", "-o", str(bundle), "--force", "--n-reference", "2", "--json"]
    extra = export_args(group, name, size)
    rc, out, err = step("export", [*base, *extra])
    if rc != 0 and group == "classification" and extra:
        row["small_input_refused"] = _one_line(err or out)
        rc, out, err = step("export_default_size", base)
    if rc != 0:
        row["reason"] = "export: " + _one_line(err or out)
        return row
    res = _json_of(out)
    row["export"] = True
    row["task"] = res["contract"]["task"]
    row["input"] = "x".join(map(str, res["contract"]["input_shape"]))
    row["exporter"] = res.get("exporter")
    row["notices"] = res.get("notices") or []

    rc, out, err = step(
        "validate",
        ["validate", str(bundle), "-b", "onnxruntime", "-b", "openvino", "--no-record", "--allow-unchecked", "--json"],
    )
    rep = _json_of(out) if out.strip() else {}
    if rc != 0 or not rep.get("passed"):
        failed = [r for r in rep.get("rows", []) if not r.get("passed")]
        fails = [f for r in failed for o in r.get("outputs", []) for f in o.get("failures") or []]
        errs = [str(r["error"]) for r in failed if r.get("error")]
        why = (fails or errs or [_one_line(err or out)])[0]
        names = ", ".join(r.get("backend", "?") for r in failed)
        row["reason"] = f"validate: {names + ' failed: ' if names else ''}{why}"[:300]
        return row
    row["validate"] = True
    row["reference"] = rep.get("reference")
    # random weights: a classifier may give every reference photo one class, a detector no confident box; the
    # numeric checks (max error, cosine) still ran; what could not be checked is kept in the row
    unchecked = {n for r in rep.get("rows", []) for n in r.get("not_checked") or []}
    if unchecked:
        row["unchecked"] = sorted(unchecked)

    jsonl = work / "run.jsonl"
    video = work / "run.avi"
    rc, out, err = step(
        "run",
        [
            "run",
            str(bundle),
            "--source",
            str(clip),
            "-b",
            "onnxruntime",
            "--max-frames",
            str(CLIP_FRAMES),
            "--jsonl",
            str(jsonl),
            "--save",
            str(video),
            "--writer",
            "opencv",
            "--quiet",
            "--force",
        ],
    )
    lines = jsonl.read_text().splitlines() if jsonl.is_file() else []
    if rc != 0 or len(lines) < CLIP_FRAMES or not video.is_file() or video.stat().st_size == 0:
        what = _one_line(err or out) if rc else f"{len(lines)} JSON lines for {CLIP_FRAMES} frames"
        if rc == 0 and (not video.is_file() or video.stat().st_size == 0):
            what = "no annotated video written"
        row["reason"] = "run: " + what
        return row
    row["run"] = True
    row["run_keys"] = sorted(json.loads(lines[0]).keys())
    return row


# ----------------------------------------------------------------------------------------------------- parent side
def make_clip(path: Path) -> Path:
    """A 3-frame MJPG clip (astronaut, coffee, cat at 320x240), written once and reused by every model."""
    if path.is_file() and path.stat().st_size > 0:
        return path
    import cv2
    from skimage import data

    path.parent.mkdir(parents=True, exist_ok=True)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for img in (data.astronaut(), data.coffee(), data.chelsea()):
        vw.write(cv2.resize(img[..., ::-1], (320, 240), interpolation=cv2.INTER_AREA))
    vw.release()
    return path


def read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """The last row per model name in a JSON-lines file (later lines replace earlier ones)."""
    rows: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                r = json.loads(line)
                rows[r["name"]] = r
    return rows


def ok(row: dict[str, Any]) -> bool:
    return bool(row.get("export") and row.get("validate") and row.get("run"))


def _mem_available() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024.0
    return float("inf")


def run_model(group: str, name: str, params: int, args: argparse.Namespace, clip: Path) -> dict[str, Any]:
    work = args.out / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    row_file, status = work / "row.json", work / "status"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        group,
        name,
        "--work",
        str(work),
        "--clip",
        str(clip),
        "--size",
        str(args.size),
    ]
    t0 = time.perf_counter()
    with (work / "worker.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    wall = round(time.perf_counter() - t0, 1)
    if row_file.is_file():
        row = json.loads(row_file.read_text())
    else:
        at = status.read_text() if status.is_file() else "start"
        why = (
            f"timed out after {args.timeout:.0f} s"
            if rc is None
            else f"worker died (exit {rc}{', killed: out of memory?' if rc == -9 else ''})"
        )
        tail = (work / "worker.log").read_text(errors="replace")[-2000:] if rc is not None else ""
        row = {"group": group, "name": name, "export": False, "validate": False, "run": False}
        row["reason"] = f"{at}: {why}" + (f" ({_one_line(tail)})" if tail.strip() else "")
    row.update(params=params, wall_s=wall, date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), env=args.env)
    if ok(row) and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return row


def summary(rows: dict[str, dict[str, Any]], lists: dict[str, list[str]]) -> list[str]:
    out = []
    total_ok = total = 0
    for group in GROUPS:
        names = lists[group]
        done = [rows[n] for n in names if n in rows]
        n_ok = sum(ok(r) for r in done)
        total_ok += n_ok
        total += len(names)
        out.append(
            f"{group}: {n_ok}/{len(names)} export + validate (onnxruntime, openvino) + run "
            f"({len(done)} tried, {len(names) - len(done)} not yet run)"
        )
        out += [f"  FAIL {r['name']}: {r.get('reason', '?')}" for r in done if not ok(r)]
    out.append(f"all: {total_ok}/{total}")
    return out


def _env() -> dict[str, str]:
    import torch
    import torchvision

    import edgecv

    commit = subprocess.run(
        ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "edgecv": f"{edgecv.__version__}+{commit}",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--jsonl", type=Path, default=Path("tv_sweep.jsonl"), help="results, one JSON line per model")
    ap.add_argument("-o", "--out", type=Path, default=Path("tv_sweep"), help="work folder (bundles, logs)")
    ap.add_argument("--groups", default=",".join(GROUPS), help="comma-separated: " + ", ".join(GROUPS))
    ap.add_argument("--only", default="", help="comma-separated builder names")
    ap.add_argument("--size", type=int, default=96, help="classifier input side (default 96)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per model (default 900)")
    ap.add_argument(
        "--max-params", type=float, default=0, help="skip models with more parameters (millions; 0: no cap)"
    )
    ap.add_argument(
        "--no-memory-guard",
        action="store_true",
        help="run models the free-memory estimate (8x the fp32 weights + 2 GB) would skip; vit_h_14 (633 M) needs "
        "far less than its 22 GB estimate",
    )
    ap.add_argument("--limit", type=int, default=0, help="run at most N models this time (0: all)")
    ap.add_argument("--redo", action="store_true", help="run models that already have a row again")
    ap.add_argument("--retry-failed", action="store_true", help="run models whose row failed again")
    ap.add_argument("--keep", action="store_true", help="keep the bundles of models that pass")
    ap.add_argument("--summary", action="store_true", help="print n/N from --jsonl and exit")
    ap.add_argument("--worker", nargs=2, metavar=("GROUP", "NAME"), help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        group, name = args.worker
        row = worker(group, name, args.work, args.clip, args.size, args.work / "status")
        (args.work / "row.json").write_text(json.dumps(row))
        return 0

    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        ap.error(f"--groups: expected {', '.join(GROUPS)}, found {', '.join(bad)}")
    lists = builders()
    if args.summary:
        print("\n".join(summary(read_rows(args.jsonl), lists)))
        return 0
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = only - {n for g in GROUPS for n in lists[g]}
    if unknown:
        ap.error(f"--only: not torchvision builders: {', '.join(sorted(unknown))}")
    todo = [(num_params(n), g, n) for g in groups for n in lists[g] if not only or n in only]
    todo.sort()
    rows = read_rows(args.jsonl)
    args.env = _env()
    args.out.mkdir(parents=True, exist_ok=True)
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    clip = make_clip(args.out / "_clip" / "clip.avi")
    ran = 0
    t_all = time.perf_counter()
    for params, group, name in todo:
        prev = rows.get(name)
        if prev is not None and not args.redo and not (args.retry_failed and not ok(prev)):
            continue
        if args.max_params and params > args.max_params * 1e6:
            print(f"{group:15s} {name:40s} skipped ({params / 1e6:.0f} M parameters > --max-params)", flush=True)
            continue
        need = params * 4 * 8 + 2e9  # fp32 weights, the traced graph, the ONNX proto, two engines
        if _mem_available() < need and not args.no_memory_guard:
            print(f"{group:15s} {name:40s} skipped (needs ~{need / 1e9:.0f} GB free memory)", flush=True)
            continue
        if args.limit and ran >= args.limit:
            break
        row = run_model(group, name, params, args, clip)
        ran += 1
        rows[name] = row
        with args.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"{group:15s} {name:40s} {'ok' if ok(row) else 'FAIL'} {row['wall_s']:7.1f}s {row.get('reason', '')}",
            flush=True,
        )
    print(f"\n{ran} models run in {time.perf_counter() - t_all:.0f} s\n" + "\n".join(summary(rows, lists)))
    return 0 if all(ok(r) for r in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
