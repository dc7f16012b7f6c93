"""Measure the zoo: parameter count and FLOPs at the default input, and an export check that really exports each
model to ONNX and runs it on ONNX Runtime and OpenVINO (fp32), comparing with torch.

It lives in ``export`` (above the zoo) because it exports: the ONNX file comes from
:func:`edgecv.export.onnx.export_onnx`, sizes from :mod:`edgecv.export.stats`, the comparison from
:mod:`edgecv.validate.torch_adapter`. The check talks to onnxruntime / openvino directly (imported lazily) rather
than through ``edgecv.backends``: it measures the bare runtimes on a loose file, with no bundle.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

from edgecv._lazy import lazy_import
from edgecv.errors import ExportError, one_line
from edgecv.export.onnx import SINGLE_EXPORTERS as EXPORTERS
from edgecv.export.onnx import export_onnx
from edgecv.export.stats import count_flops as _count_flops
from edgecv.export.stats import count_params
from edgecv.validate.torch_adapter import output_arrays
from edgecv.zoo.catalog import create_model, model_cfg

__all__ = [
    "EXPORTERS",
    "RTOL",
    "align_detections",
    "check_model",
    "check_module",
    "compare",
    "count_params",
    "export_onnx",
    "model_stats",
    "randomize_norm_stats",
]
# ‖torch − runtime‖∞ must stay within RTOL × max(1, ‖torch‖∞): absolute for outputs of order 1, relative above
RTOL = 1e-4


def model_stats(name: str, batch: int = 1) -> dict[str, Any]:
    """Parameters and FLOPs of a registered model at its default input.

    Computed on the meta device (no memory, no arithmetic); a model with data-dependent ops (e.g. NMS inside a
    detector) cannot run there and is measured with a real CPU forward on random input instead. FLOPs come from
    :class:`torch.utils.flop_counter.FlopCounterMode`, which counts a multiply-add as 2 FLOPs (conv, matmul,
    attention); element-wise ops (norms, activations, pooling) are not counted.

    Returns:
        ``{"name", "family", "task", "input_size", "num_classes", "tiny", "params", "params_m", "flops",
        "gflops", "flops_device", "flops_error"}``; ``flops``/``gflops`` are None (with ``flops_error``) when
        the forward failed on both devices.
    """
    torch = lazy_import("torch")

    cfg = model_cfg(name)
    flops: int | None = None
    device, error = "meta", None
    try:
        with torch.device("meta"), warnings.catch_warnings():
            # variants with shipped weights copy them into meta tensors: a no-op torch warns about, harmless here
            warnings.simplefilter("ignore", UserWarning)
            model = create_model(name).eval()
        params = count_params(model)
        flops = _count_flops(model, torch.empty(batch, *cfg["input_size"], device="meta"))
    except Exception:  # noqa: BLE001 - data in __init__ or data-dependent shapes in forward: measure for real
        device = "cpu"
        torch.manual_seed(0)
        try:
            model = create_model(name).eval()
        except Exception as exc:  # noqa: BLE001 - e.g. a variant whose shipped weights are missing: report it in its row
            params, error = None, f"build failed: {type(exc).__name__}: {_first_line(exc)}"
        else:
            params = count_params(model)
            try:
                flops = _count_flops(model, torch.rand(batch, *cfg["input_size"]))
            except Exception as exc:  # noqa: BLE001 - a failure is a measured row of the check, not a crash
                error = f"{type(exc).__name__}: {_first_line(exc)}"
    return {
        "name": name,
        "family": cfg["family"],
        "task": cfg["task"],
        "input_size": list(cfg["input_size"]),
        "num_classes": cfg["num_classes"],
        "tiny": bool(cfg["tiny"]),
        "params": params,
        "params_m": None if params is None else params / 1e6,
        "flops": flops,
        "gflops": None if flops is None else flops / 1e9,
        "flops_device": device,
        "flops_error": error,
    }


def run_onnxruntime(path: str | Path, x: Any) -> list[Any]:
    """Run an ONNX file on ONNX Runtime's CPU provider (fp32); returns every output, in graph order. ``x`` is the
    input array, or a tuple of arrays in the graph's input order."""
    ort = lazy_import("onnxruntime")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    return list(sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), xs)}))


def run_openvino(path: str | Path, x: Any) -> list[Any]:
    """Compile an ONNX file for OpenVINO CPU with ``INFERENCE_PRECISION_HINT=f32``, run once; every output."""
    ov = lazy_import("openvino")
    core = ov.Core()
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    res = compiled(dict(enumerate(xs)))
    return [res[out] for out in compiled.outputs]


def compare(ref: Any, out: Any) -> dict[str, Any]:
    """Max abs error of ``out`` against ``ref`` and whether it is within ``RTOL × max(1, max|ref|)``.

    ``ref`` and ``out`` may be arrays or equal-length lists of arrays (multi-output models); every output must
    pass, ``max_abs`` is the worst one and ``tol`` the tolerance of that output. The numbers are
    :func:`edgecv.validate.compare.compare_output`'s (float64 ``max |out - ref|`` and the scale ``max |ref|``).
    """
    import math

    from edgecv.validate.compare import compare_output

    refs, outs = (list(v) if isinstance(v, (list, tuple)) else [v] for v in (ref, out))
    if len(refs) != len(outs):
        return {"ok": False, "max_abs": None, "error": f"{len(outs)} outputs != torch {len(refs)}"}
    worst: dict[str, Any] = {"ok": True, "max_abs": 0.0, "tol": RTOL, "error": None}
    for i, (r, o) in enumerate(zip(refs, outs)):
        if tuple(o.shape) != tuple(r.shape):
            return {
                "ok": False,
                "max_abs": None,
                "error": f"output {i}: shape {list(o.shape)} != torch {list(r.shape)}",
            }
        cmp = compare_output(f"output{i}", r, o)
        err, tol = cmp.max_abs, RTOL * max(1.0, cmp.scale)
        ok = bool(math.isfinite(err) and err <= tol)
        if not ok and worst["ok"]:
            worst = {
                "ok": False,
                "max_abs": err,
                "tol": tol,
                "error": f"max abs {err:.3g} > {tol:.3g}" + (f" (output {i})" if len(refs) > 1 else ""),
            }
        elif ok == worst["ok"] and (not math.isfinite(err) or err > worst["max_abs"]):
            worst.update(max_abs=err, tol=tol)
    return worst


def align_detections(ref: list[Any], out: list[Any], score_tol: float = RTOL) -> list[Any]:
    """Reorder a graph-NMS detector's runtime outputs (boxes [B,K,4], scores [B,K], classes [B,K], num_dets [B]) so
    that rows whose scores tie (within ``score_tol``) line up with the reference's rows of the same class.

    NMS and the top-K sort by score: two detections whose scores differ by float noise (random weights give many at
    ~1/(C+1)) may come out in either order on another runtime, which an elementwise comparison reports as a box error
    of the full box offset. Only rows of the same class within ``score_tol`` of the reference score are swapped
    (the closest box first); every value is still compared afterwards, so a wrong box or score still fails."""
    import numpy as np

    boxes, scores, classes = (np.array(a, copy=True) for a in out[:3])
    rb, rs, rc = (np.asarray(a) for a in ref[:3])
    if boxes.shape != rb.shape or scores.shape != rs.shape or classes.shape != rc.shape or rb.ndim != 3:
        return out  # not the layout this is for: compare as it is (a shape mismatch is reported by compare)
    for b in range(rb.shape[0]):
        used = np.zeros(rb.shape[1], bool)
        order = np.full(rb.shape[1], -1)
        for i in range(rb.shape[1]):
            cand = np.where(~used & (classes[b] == rc[b, i]) & (np.abs(scores[b] - rs[b, i]) <= score_tol))[0]
            if cand.size:
                j = cand[np.argmin(np.abs(boxes[b, cand] - rb[b, i]).max(1))]
                used[j], order[i] = True, j
        rest = iter(np.where(~used)[0])
        order = np.array([j if j >= 0 else next(rest) for j in order])
        boxes[b], scores[b], classes[b] = boxes[b, order], scores[b, order], classes[b, order]
    return [boxes, scores, classes, *out[3:]]


def check_module(
    model: Any,
    x: Any,
    workdir: str | Path,
    exporter: str = "torchscript",
    opset: int = 17,
    runtimes: tuple[str, ...] = ("onnxruntime", "openvino"),
) -> dict[str, Any]:
    """Export ``model`` at input ``x`` (a tensor, or a tuple for a model with several inputs), run it on each
    runtime, and compare every output with torch.

    Returns:
        ``{"export": {"ok", "error"}, "onnxruntime": {"ok", "max_abs", "tol", "error"}, "openvino": {...}}``;
        a failure is recorded with its one-line reason, never raised.
    """
    torch = lazy_import("torch")
    model = model.eval()
    args = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    with torch.no_grad():
        ref = output_arrays(model(*args))
    graph_nms = bool(getattr(model, "exports_graph_nms", False)) and len(ref) == 4
    xs: Any = tuple(a.numpy() for a in args) if len(args) > 1 else args[0].numpy()
    result: dict[str, Any] = {}
    path = Path(workdir) / "model.onnx"
    try:
        export_onnx(model, args, path, exporter, opset, num_outputs=len(ref))
        result["export"] = {"ok": True, "error": None}
    except ExportError as exc:
        result["export"] = {"ok": False, "error": str(exc)}
        for rt in runtimes:
            result[rt] = {"ok": False, "max_abs": None, "error": "export failed"}
        return result
    runners = {"onnxruntime": run_onnxruntime, "openvino": run_openvino}
    for rt in runtimes:
        try:
            out = runners[rt](path, xs)
            if graph_nms:  # detections tied in score may come out in either order: match them, then compare
                out = align_detections(ref, out)
            result[rt] = compare(ref, out)
        except Exception as exc:  # noqa: BLE001 - a runtime failure is a measured result, not a crash of the check
            result[rt] = {"ok": False, "max_abs": None, "error": f"{type(exc).__name__}: {_first_line(exc)}"}
    return result


def check_model(
    name: str,
    exporter: str = "torchscript",
    opset: int = 17,
    batch: int = 1,
    seed: int = 0,
    runtimes: tuple[str, ...] = ("onnxruntime", "openvino"),
) -> dict[str, Any]:
    """Build a registered model (random init, seeded), export it at its default input and check it on runtimes.

    BN running statistics are randomised first, so that a runtime that mishandles them cannot pass by accident.
    """
    torch = lazy_import("torch")
    cfg = model_cfg(name)
    torch.manual_seed(seed)
    try:
        model = create_model(name).eval()
    except Exception as exc:  # noqa: BLE001 - a failure is a measured row of the check, not a crash
        why = f"build failed: {type(exc).__name__}: {_first_line(exc)}"
        return {
            "name": name,
            "exporter": exporter,
            "opset": opset,
            "export": {"ok": False, "error": why},
            **{rt: {"ok": False, "max_abs": None, "error": "export failed"} for rt in runtimes},
        }
    randomize_norm_stats(model, seed)
    x: Any = torch.randn(batch, *cfg["input_size"], generator=torch.Generator().manual_seed(seed + 1))
    example_inputs = getattr(model, "example_inputs", None)
    if callable(example_inputs):  # more inputs than the image (R-CNN's rois): the model makes them from x
        x = example_inputs(x)
    used = exporter
    with tempfile.TemporaryDirectory(prefix="edgecv-zoo-") as tmp:
        if exporter == "auto":
            # what `edgecv export` does: dynamo first, the TorchScript exporter when dynamo cannot take the model
            used = "dynamo"
            result = check_module(model, x, tmp, "dynamo", max(opset, 18), runtimes)
            if not result["export"]["ok"]:
                used = "torchscript"
                result = check_module(model, x, tmp, "torchscript", opset, runtimes)
        else:
            result = check_module(model, x, tmp, exporter, opset, runtimes)
    return {"name": name, "exporter": used, "opset": opset, **result}


def randomize_norm_stats(model: Any, seed: int = 0) -> None:
    """Give every BatchNorm-like running mean/var a non-trivial value (fresh ones are 0 and 1)."""
    torch = lazy_import("torch")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            rm, rv = getattr(m, "running_mean", None), getattr(m, "running_var", None)
            if isinstance(rm, torch.Tensor) and isinstance(rv, torch.Tensor) and rm.is_floating_point():
                rm.copy_(torch.rand(rm.shape, generator=g) * 0.2 - 0.1)
                rv.copy_(torch.rand(rv.shape, generator=g) * 0.5 + 0.75)


def _first_line(exc: BaseException) -> str:
    return one_line(exc, 200, with_type=False)
