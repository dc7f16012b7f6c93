"""Mutation testing of ``edgecv validate``: corrupt a bundle the way a bad build or a tampered file would (weights
scaled, biases shifted, the detector head's width/height biases moved, the preprocessing contract changed), re-hash
the manifest so the files look legitimate, and check that validate fails every corruption that moves the task
metric by 1 point or more.

Used by ``tests/test_mutation.py`` (fast: a few corruptions) and its ``slow`` test (the table in the issue note);
``python tests/mutations.py OUT`` prints the full table.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecv._io import sha256_path
from edgecv.bundle import Bundle

Mutation = Callable[[Path], None]  # edits a copied bundle folder in place


# ------------------------------------------------------------------------------------------------ the edits
def rehash(bundle_dir: Path) -> None:
    """Recompute every hash in the manifest (what someone hiding a change would do)."""
    b = Bundle.open(bundle_dir, verify=False)
    with b.update() as m:
        for rel in list(m.files):
            m.files[rel] = sha256_path(bundle_dir / rel)
        for art in m.artifacts.values():
            if (bundle_dir / art.path).is_file():
                art.sha256 = sha256_path(bundle_dir / art.path)


def _edit_onnx(bundle_dir: Path, fn: Callable[[Any], None]) -> None:
    import onnx

    path = bundle_dir / "model.onnx"
    model = onnx.load(str(path))
    fn(model)
    onnx.save(model, str(path))
    rehash(bundle_dir)


def _convs(model: Any) -> list[Any]:
    return [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "ConvTranspose")]


def _init(model: Any, name: str) -> Any:
    return next((t for t in model.graph.initializer if t.name == name), None)


def _set(t: Any, arr: np.ndarray) -> None:
    from onnx import numpy_helper

    t.CopyFrom(numpy_helper.from_array(arr.astype(numpy_helper.to_array(t).dtype), t.name))


def scale_weight(which: str, factor: float) -> Mutation:
    """Multiply the weight of the first / middle / last compute layer by ``factor``."""

    def edit(model: Any) -> None:
        from onnx import numpy_helper

        convs = [n for n in _convs(model) if _init(model, n.input[1]) is not None]
        node = {"first": convs[0], "middle": convs[len(convs) // 2], "last": convs[-1]}[which]
        t = _init(model, node.input[1])
        _set(t, numpy_helper.to_array(t) * factor)

    return lambda d: _edit_onnx(d, edit)


def shift_bias(which: str, delta: float, channels: Callable[[int], list[int]] | None = None) -> Mutation:
    """Add ``delta`` to the bias of the first / last compute layer(s) (``last``: every head conv feeding an output
    path, i.e. each compute layer with no compute layer after it), optionally only on ``channels(n_out)``."""

    def edit(model: Any) -> None:
        from onnx import numpy_helper

        from edgecv.quant.layers import float_head_nodes

        convs = [n for n in _convs(model) if len(n.input) > 2 and _init(model, n.input[2]) is not None]
        if which == "first":
            nodes = convs[:1]
        else:
            head = set(float_head_nodes(model))
            producer = {t: n for n in model.graph.node for t in n.output}
            # last compute layers: those whose output reaches only head (non-compute) nodes or graph outputs
            cons: dict[str, list[Any]] = {}
            for n in model.graph.node:
                for t in n.input:
                    cons.setdefault(t, []).append(n)
            outs = {o.name for o in model.graph.output}
            nodes = [
                c
                for c in convs
                if all(x.name in head for x in cons.get(c.output[0], []))
                and (cons.get(c.output[0]) or c.output[0] in outs)
            ]
            del producer
        for node in nodes:
            t = _init(model, node.input[2])
            b = numpy_helper.to_array(t).copy()
            idx = channels(b.shape[0]) if channels else list(range(b.shape[0]))
            b[idx] += delta
            _set(t, b)

    return lambda d: _edit_onnx(d, edit)


def yolo_wh(num_classes: int) -> Callable[[int], list[int]]:
    """The width/height channels of a YOLO head conv (per anchor: x, y, w, h, objectness, classes)."""
    per = 5 + num_classes
    return lambda n: [c for c in range(n) if c % per in (2, 3)]


def contract_edit(**changes: Any) -> Mutation:
    """Change the preprocessing contract in the manifest and in the ONNX metadata (both, as a rebuild would)."""

    def edit(bundle_dir: Path) -> None:
        import onnx

        from edgecv.bundle import CONTRACT_KEY

        b = Bundle.open(bundle_dir, verify=False)
        with b.update() as m:
            c = m.contract.model_dump()
            for k, v in changes.items():
                c[k] = v(c[k]) if callable(v) else v
            m.contract = type(m.contract)(**c)
        model = onnx.load(str(bundle_dir / "model.onnx"))
        for p in model.metadata_props:
            if p.key == CONTRACT_KEY:
                p.value = Bundle.open(bundle_dir, verify=False).contract.to_json()
        onnx.save(model, str(bundle_dir / "model.onnx"))
        rehash(bundle_dir)

    return edit


def swap_color(bundle_dir: Path) -> None:
    c = Bundle.open(bundle_dir, verify=False).contract
    contract_edit(color="BGR" if c.color == "RGB" else "RGB")(bundle_dir)


def mutations(task: str, num_classes: int, host_nms: bool = False, full: bool = False) -> dict[str, Mutation]:
    """The corruptions for a model of ``task``; ``full`` adds several magnitudes of each."""
    mags = [0.5, 0.9, 0.99, 1.01, 1.1, 2.0] if full else [0.5, 1.1]
    shifts = [0.01, 0.05, 0.4, 1.0] if full else [0.4]
    out: dict[str, Mutation] = {}
    for f in mags:
        for which in ("first", "middle", "last") if full else ("middle",):
            out[f"{which} weight ×{f:g}"] = scale_weight(which, f)
    for s in shifts:
        out[f"last bias +{s:g}"] = shift_bias("last", s)
        if task == "detect":
            out[f"head w/h bias +{s:g}"] = shift_bias("last", s, yolo_wh(num_classes))
            if full:
                out[f"head w/h bias -{s:g}"] = shift_bias("last", -s, yolo_wh(num_classes))
    if full:
        out["first bias +0.1"] = shift_bias("first", 0.1)
    out["colour order swapped"] = swap_color
    out["scale ×2 (1/127.5)"] = contract_edit(scale=lambda v: v * 2)
    if full:
        out["scale ×0.5"] = contract_edit(scale=lambda v: v * 0.5)
        out["mean shifted +0.1"] = contract_edit(mean=lambda v: [x + 0.1 for x in v])
    del host_nms
    return out


# ------------------------------------------------------------------------------------------------ measuring
@dataclass
class Row:
    model: str
    corruption: str
    metric: float
    delta: float
    caught: bool
    reason: str

    def must_be_caught(self) -> bool:
        return abs(self.delta) >= 1.0


def task_metric(bundle_dir: Path, val: Any) -> float:
    """The task metric (points) of the bundle's fp32 ONNX Runtime artifact on ``val``, preprocessing per the
    bundle's contract (as ``run`` would feed it)."""
    from edgecv.backends import open_runner
    from edgecv.validate.metrics import metric_for

    b = Bundle.open(bundle_dir)
    val.contract = b.contract
    with open_runner(b, "onnxruntime") as r:
        return float(metric_for(b.contract.task)(r, val))


def run_mutations(
    model: str, clean: Path, val_dir: Path, work: Path, muts: dict[str, Mutation], val_limit: int = 60
) -> list[Row]:
    """Apply each mutation to a copy of ``clean``, measure the task metric and run validate (npz reference, as on
    a device; unchecked checks are not accepted)."""
    from edgecv.validate.core import validate_bundle
    from edgecv.validate.metrics import open_val

    b = Bundle.open(clean)
    val = open_val(val_dir, b.contract, limit=val_limit).materialize()
    base = task_metric(clean, val)
    rows = []
    clean_rep = validate_bundle(clean, [("onnxruntime", "fp32")], reference="npz")
    rows.append(Row(model, "none (clean)", base, 0.0, not clean_rep.passed, _why(clean_rep)))
    for name, mut in muts.items():
        d = work / f"{model}-{len(rows)}"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(clean, d)
        mut(d)
        m = task_metric(d, open_val(val_dir, Bundle.open(d).contract, limit=val_limit).materialize())
        rep = validate_bundle(d, [("onnxruntime", "fp32")], reference="npz")
        rows.append(Row(model, name, m, m - base, not rep.passed, _why(rep)))
        shutil.rmtree(d, ignore_errors=True)
    return rows


def _why(rep: Any) -> str:
    if rep.preprocess_check is not None and not rep.preprocess_check.passed:
        return "preprocessing"
    for r in rep.results:
        for o in r.outputs:
            if o.failures:
                return f"{o.name}: {o.failures[0]}"[:90]
            if o.not_checked:
                return f"{o.name}: not checked"
    return ""


def table(rows: list[Row]) -> str:
    lines = ["| model | corruption | metric | Δ points | caught | by |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.corruption} | {r.metric:.1f} | {r.delta:+.1f} | "
            f"{'yes' if r.caught else 'NO' if r.must_be_caught() else 'no'} | {r.reason} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ shipped models
SHIPPED = {  # name: (zoo model, task, export args)
    "classifier": ("shapes_classifier", "classify", {}),
    "detector (graph NMS)": ("shapes_detector", "detect", {"nms": "graph"}),
    "detector (host NMS)": ("shapes_detector", "detect", {"nms": "host"}),
    "segmenter": ("shapes_segmenter", "segment", {}),
}


def shipped_val(task: str, out: Path, n: int = 60) -> Path:
    """The shipped model's validation split (seed/size from its weights record), ``n`` images."""
    from edgecv.data.synth import generate

    rec_name = {"classify": "shapes_classifier", "segment": "shapes_segmenter", "detect": "yolov3_tiny_synth"}[task]
    rec = json.loads((Path(__file__).resolve().parents[1] / "edgecv/zoo/weights" / f"{rec_name}.json").read_text())
    v = rec.get("val", {})
    root = out / f"val-{task}"
    if not root.exists():
        generate(task, root, n_train=0, n_val=n, size=int(v.get("size", 96)), seed=int(v.get("seed", 0)))
    return root if task == "detect" else root / "val"


def export_shipped(key: str, out: Path, ref: Path) -> Path:
    from edgecv.export import export_model, load_model

    zoo, task, opts = SHIPPED[key]
    loaded = load_model(zoo)
    if task == "detect":
        from edgecv.export.detection import prepare_detection_export

        loaded = prepare_detection_export(loaded, nms=opts["nms"])
    d = out / (key.split()[0] + ("-host" if opts.get("nms") == "host" else ""))
    export_model(loaded, d, opset=17, force=True, reference_data=ref, n_reference=8)
    return d


def shipped_rows(key: str, out: Path, full: bool = True) -> list[Row]:
    _zoo, task, opts = SHIPPED[key]
    val = shipped_val(task, out)
    clean = export_shipped(key, out, val)
    nc = len(Bundle.open(clean).contract.class_names)
    return run_mutations(key, clean, val, out, mutations(task, nc, opts.get("nms") == "host", full=full))


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/mutation")
    out.mkdir(parents=True, exist_ok=True)
    keys = sys.argv[2:] or list(SHIPPED)
    for k in keys:
        rows = shipped_rows(k, out)
        print(table(rows), flush=True)
