"""How far from this machine's limit a model runs: operations counted from the ONNX graph, peak measured.

* :func:`count_ops` counts the multiply-adds of Conv, ConvTranspose, Gemm and MatMul nodes at the contract's input
  shape (batch 1; ONNX shape inference gives every tensor's shape) and reports operations = 2 × MACs, the
  convention of torch's FlopCounterMode and of ``edgecv models``. Element-wise ops are not counted.
* :func:`measure_peak` runs a GEMM probe — a tiny MatMul ONNX model built in memory (Q/DQ around it for int8) —
  through the same engine and Runner class as the benchmark, at the precision the row ran, and keeps the best
  GOP/s over a few sizes (each at its 10th-percentile call: a ceiling, not a typical call). Results are cached per host in the user's cache folder (``$EDGECV_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/edgecv``, else ``~/.cache/edgecv``).
* :func:`supported_precisions` asks the engine what the device can compute in (OpenVINO's
  ``OPTIMIZATION_CAPABILITIES``); a precision it does not list is never probed.
* :func:`annotate` fills ``gops_per_s``, ``peak_gops_per_s`` and ``pct_peak`` of every bench row.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.errors import ConfigError

if TYPE_CHECKING:
    from edgecv.bench.core import BenchReport
    from edgecv.bundle import Bundle, Contract

#: engines with a GEMM probe; others (torch eager, TensorRT here) get no peak and say so
PROBED = ("openvino", "onnxruntime")
PROBE_SIZES = (512, 1024)
FORMS = ("matmul", "conv1x1", "conv3x3")
PEAK_PERCENTILE = 10
_OV_CAPS = {"FP32": "fp32", "BF16": "bf16", "FP16": "fp16", "INT8": "int8"}


# ------------------------------------------------------------------------------------------ operation count
@dataclass
class OpCount:
    """Operations of one inference at batch 1: ``ops`` = 2 × multiply-adds, per op type, and what was skipped."""

    ops: int
    by_type: dict[str, int] = field(default_factory=dict)
    nodes: int = 0
    unknown: list[str] = field(default_factory=list)  # compute nodes whose shapes inference could not give

    @property
    def gops(self) -> float:
        return self.ops / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gops": self.gops}


def _dims(vi: Any) -> list[int] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if not d.HasField("dim_value") or d.dim_value <= 0:
            return None
        out.append(int(d.dim_value))
    return out


def count_ops(model: Any, contract: Contract | None = None) -> OpCount:
    """Count the operations of an ONNX model (a path or a ModelProto) at batch 1.

    Args:
        model: the float or QDQ ONNX model.
        contract: fixes the input's shape (batch set to 1); None keeps the graph's shapes (must be static).
    """
    onnx = lazy_import("onnx", extra="onnxruntime")
    m = onnx.load(str(model), load_external_data=False) if isinstance(model, (str, Path)) else model
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    inits = {i.name for i in m2.graph.initializer}
    real_inputs = [i for i in m2.graph.input if i.name not in inits]
    for inp in real_inputs:
        dims = inp.type.tensor_type.shape.dim
        shape = list(contract.input_shape) if contract is not None and inp.name == contract.input_name else None
        for k, d in enumerate(dims):
            if shape is not None and k < len(shape):
                d.Clear()
                d.dim_value = 1 if k == 0 else int(shape[k])
            elif k == 0 and not d.HasField("dim_value"):
                d.Clear()
                d.dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(m2, strict_mode=False)
    shapes: dict[str, list[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        s = _dims(vi)
        if s is not None:
            shapes[vi.name] = s
    for init in inferred.graph.initializer:
        shapes[init.name] = [int(d) for d in init.dims]
    by_type: dict[str, int] = {}
    unknown: list[str] = []
    nodes = 0
    for node in inferred.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        nodes += 1
        macs = _macs(node, shapes)
        if macs is None:
            unknown.append(node.name or node.op_type)
            continue
        by_type[node.op_type] = by_type.get(node.op_type, 0) + 2 * macs
    return OpCount(ops=sum(by_type.values()), by_type=by_type, nodes=nodes, unknown=unknown)


def _attr(node: Any, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return a.i if a.type == a.INT else list(a.ints) if a.ints else default
    return default


def _macs(node: Any, shapes: dict[str, list[int]]) -> int | None:
    ins = [shapes.get(n) for n in node.input]
    out = shapes.get(node.output[0])
    if node.op_type == "Conv":
        w = ins[1] if len(ins) > 1 else None
        if w is None or out is None:
            return None
        # out [N, Cout, *spatial]; w [Cout, Cin/group, *kernel]
        return int(np.prod(out, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))
    if node.op_type == "ConvTranspose":
        x, w = ins[0], ins[1] if len(ins) > 1 else None
        if x is None or w is None:
            return None
        # every input pixel scatters a w[1:] kernel (Cout/group channels)
        return int(np.prod(x, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))
    if node.op_type == "Gemm":
        a = ins[0]
        if a is None or out is None or len(a) != 2:
            return None
        k = a[0] if _attr(node, "transA", 0) else a[1]
        return int(out[0] * out[1] * k)
    if node.op_type == "MatMul":
        a = ins[0]
        if a is None or out is None or not a:
            return None
        return int(np.prod(out, dtype=np.int64) * a[-1])
    return None


def bundle_ops(bundle: Bundle) -> OpCount:
    """Operations of the bundle's ``model.onnx`` at its contract's input shape, batch 1."""
    return count_ops(bundle.onnx_path, bundle.contract)


# ------------------------------------------------------------------------------------------ GEMM probe
def _gemm_model(n: int, precision: str, form: str = "matmul", seed: int = 0) -> Any:
    """``y = x @ W`` with x [n, n] and W [n, n] a constant; for int8 Q/DQ on x, W and y (what a QDQ model holds,
    so OpenVINO and ONNX Runtime run an integer MatMul).

    ``form="conv1x1"`` writes the same GEMM as a 1×1 convolution (x [1, n, n/32, 32], W [n, n, 1, 1]) and
    ``form="conv3x3"`` as an implicit GEMM, a padded 3×3 convolution of n/4 channels on 32×32 (K = 9·n/4): engines
    route these to their convolution kernels, which on some CPUs are faster than their MatMul path (OpenVINO's
    int8 FullyConnected on AVX2 is), so the probe reports the best of the three. The operations of each form are
    counted by :func:`count_ops`, as the model's are."""
    onnx = lazy_import("onnx", extra="onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    conv = form in ("conv1x1", "conv3x3")
    c = n // 4 if form == "conv3x3" else n
    xshape = [1, c, 32, 32] if form == "conv3x3" else [1, n, n // 32, 32] if conv else [n, n]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, xshape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, xshape)
    op = "Conv" if conv else "MatMul"
    wshape = (c, c, 3, 3) if form == "conv3x3" else (n, n, 1, 1) if conv else (n, n)
    attrs: dict[str, Any] = {"pads": [1, 1, 1, 1]} if form == "conv3x3" else {}
    nodes = []
    inits = []
    if precision == "int8":
        wq = rng.integers(-127, 128, size=wshape, dtype=np.int8)
        inits += [numpy_helper.from_array(wq, "w_q"),
                  numpy_helper.from_array(np.array(0.01, np.float32), "w_s"),
                  numpy_helper.from_array(np.array(0, np.int8), "w_zp"),
                  numpy_helper.from_array(np.array(0.02, np.float32), "x_s"),
                  numpy_helper.from_array(np.array(0, np.uint8), "x_zp"),
                  numpy_helper.from_array(np.array(0.5, np.float32), "y_s"),
                  numpy_helper.from_array(np.array(128, np.uint8), "y_zp")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "x_s", "x_zp"], ["xd"]),
                  helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["wd"]),
                  helper.make_node(op, ["xd", "wd"], ["m"], **attrs),
                  helper.make_node("QuantizeLinear", ["m", "y_s", "y_zp"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "y_s", "y_zp"], ["y"])]
    else:
        w = rng.standard_normal(wshape).astype(np.float32) * 0.05
        inits.append(numpy_helper.from_array(w, "w"))
        nodes.append(helper.make_node(op, ["x", "w"], ["y"], **attrs))
    graph = helper.make_graph(nodes, f"edgecv_gemm_probe_{form}_{n}", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return model


@dataclass
class Peak:
    """The best GOP/s a GEMM probe reached on one engine, device and precision."""

    backend: str
    device: str
    precision: str
    gops_per_s: float
    size: int
    threads: int | None
    precision_ran: str
    measured: str
    engine_version: str | None = None
    form: str = "matmul"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def supported_precisions(backend: str, device: str | None = None) -> list[str]:
    """The precisions the engine says ``device`` computes in (never assumed from the CPU's name).

    OpenVINO: the device's ``OPTIMIZATION_CAPABILITIES``. ONNX Runtime's CPU provider: fp32, and int8 through
    its QLinear/Integer kernels. Other engines: none probed here.
    """
    if backend == "openvino":
        ov = lazy_import("openvino")
        dev = (device or "CPU").upper()
        try:
            caps = ov.Core().get_property(dev, "OPTIMIZATION_CAPABILITIES")
        except Exception:  # noqa: BLE001 - a virtual device (AUTO) has no capabilities of its own
            return []
        return [_OV_CAPS[c] for c in caps if c in _OV_CAPS]
    if backend == "onnxruntime":
        return ["fp32", "int8"] if (device or "CPU").upper() == "CPU" else ["fp32"]
    return []


def cache_dir() -> Path:
    """Where per-host results are cached: ``$EDGECV_CACHE_DIR`` or ``$XDG_CACHE_HOME/edgecv`` or ``~/.cache/edgecv``."""
    env = os.environ.get("EDGECV_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgecv"


def _cache_file() -> Path:
    from edgecv.results import this_host

    return cache_dir() / f"peak-{this_host()['id']}.json"


def _engine_version(backend: str) -> str | None:
    from edgecv._lazy import version_of

    return version_of(backend)


def _cache_key(backend: str, device: str | None, precision: str, threads: int | None) -> str:
    return f"{backend}|{(device or 'default').upper()}|{precision}|threads={threads}|v={_engine_version(backend)}"


def _read_cache() -> dict[str, Any]:
    p = _cache_file()
    try:
        data = json.loads(p.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _open_probe(backend: str, path: Path, precision: str, device: str | None, threads: int | None) -> Any:
    from edgecv.backends import RUNNERS

    cls = RUNNERS.get(backend)
    return cls(path, precision, device, threads)  # type: ignore[call-arg]


def measure_peak(backend: str, precision: str, device: str | None = None, threads: int | None = None, *,
                 sizes: tuple[int, ...] = PROBE_SIZES, min_time_s: float = 1.0, use_cache: bool = True) -> Peak:
    """This machine's peak GOP/s for ``backend`` at ``precision``: the best over GEMM probes (two forms, each of
    ``sizes``) of the rate at the 10th-percentile call.

    The probe goes through the engine's own Runner with the same threads and device as the benchmark. Cached per
    host, engine version, device, precision and threads; ``use_cache=False`` measures again (and re-caches).

    Raises:
        ConfigError: a backend without a probe, or a precision the device does not list.
    """
    from edgecv._io import write_json
    from edgecv.bench.core import collect
    from edgecv.bundle import now_iso

    if backend not in PROBED:
        raise ConfigError(f"peak: expected a backend with a GEMM probe ({', '.join(PROBED)}), found '{backend}'")
    supported = supported_precisions(backend, device)
    if precision not in supported:
        raise ConfigError(f"peak: {backend} {device or 'default device'} reports {', '.join(supported) or 'nothing'}"
                          f", expected {precision} among them")
    key = _cache_key(backend, device, precision, threads)
    if use_cache:
        hit = _read_cache().get(key)
        if isinstance(hit, dict):
            try:
                return Peak(**hit)
            except TypeError:
                pass
    onnx = lazy_import("onnx", extra="onnxruntime")
    best: tuple[float, int, str, str, str] | None = None
    with tempfile.TemporaryDirectory(prefix="edgecv-peak-") as tmp:
        for form in FORMS:
            for n in sizes:
                path = Path(tmp) / f"gemm_{form}_{n}.onnx"
                model = _gemm_model(n, precision, form)
                ops = count_ops(model).ops
                onnx.save(model, str(path))
                runner = _open_probe(backend, path, precision, device, threads)
                with runner:
                    shape = [int(d.dim_value) for d in model.graph.input[0].type.tensor_type.shape.dim]
                    feed = {"x": np.random.default_rng(n).uniform(0, 2, shape).astype(np.float32)}
                    s = collect(runner, feed, warmup=3, min_time_s=min_time_s, min_iters=10, max_iters=5000)
                    # a peak is what the engine reaches undisturbed: the 10th-percentile call, so that a busy
                    # neighbour during the probe does not lower the ceiling (rows use their median, so % of peak
                    # stays conservative; on a quiet machine the two are within a few percent)
                    gops = ops / float(np.percentile(s, PEAK_PERCENTILE)) / 1e9
                    if best is None or gops > best[0]:
                        best = (gops, n, str(runner.precision), str(runner.device), form)
    assert best is not None  # sizes is never empty
    peak = Peak(backend=backend, device=best[3], precision=precision, gops_per_s=best[0], size=best[1],
                threads=threads, precision_ran=best[2], measured=now_iso(), engine_version=_engine_version(backend),
                form=best[4])
    data = _read_cache()
    data[key] = peak.to_dict()
    write_json(_cache_file(), data)
    return peak


def annotate(report: BenchReport, bundle: Bundle, *, peak: bool = True, threads: int | None = None,
             device: str | None = None, measure: Any = None) -> dict[str, Any]:
    """Fill every row's ``gops_per_s`` (from the graph's operations and its median latency) and, with ``peak``,
    ``peak_gops_per_s`` and ``pct_peak`` for the precision the row actually ran.

    Returns what was used (operation count, peaks, and why a row has no peak), also stored in
    ``report.settings["roofline"]``.
    """
    measure = measure or measure_peak
    if not any(r.stats is not None for r in report.rows):
        return {}  # nothing ran: the rows' errors say why
    try:
        ops = bundle_ops(bundle)
    except Exception as exc:  # noqa: BLE001 - a graph onnx cannot read or infer leaves the rows without GOP/s
        report.settings["roofline"] = {"error": f"operations not counted: {' '.join(str(exc).split())[:200]}"}
        return report.settings["roofline"]  # type: ignore[no-any-return]
    info: dict[str, Any] = {"ops": ops.to_dict(), "peaks": {}, "no_peak": {},
                            "method": "GOP/s = 2 x MACs of Conv/ConvTranspose/Gemm/MatMul (batch 1, ONNX shape "
                                      "inference) x batch / median latency; peak = best GEMM probe (10th-percentile "
                                      "call) through the same engine at the precision that ran"}
    for row in report.rows:
        if row.stats is None:
            continue
        row.gops_per_s = ops.ops * row.batch / (row.stats.p50_ms / 1e3) / 1e9
        if not peak:
            continue
        ran = row.precision_ran or row.precision
        key = f"{row.backend}:{ran}"
        if key not in info["peaks"] and key not in info["no_peak"]:
            if row.backend not in PROBED:
                info["no_peak"][key] = f"no GEMM probe for {row.backend}"
            elif ran not in supported_precisions(row.backend, device):
                info["no_peak"][key] = f"{row.backend} does not list {ran} for this device"
            else:
                try:
                    info["peaks"][key] = measure(row.backend, ran, device=device, threads=threads).to_dict()
                except Exception as exc:  # noqa: BLE001 - a probe that fails leaves the rows without a peak
                    info["no_peak"][key] = " ".join(str(exc).split())[:200]
        p = info["peaks"].get(key)
        if p is not None and p["gops_per_s"] > 0:
            row.peak_gops_per_s = float(p["gops_per_s"])
            row.pct_peak = 100.0 * row.gops_per_s / row.peak_gops_per_s
    report.settings["roofline"] = info
    return info


__all__ = ["OpCount", "Peak", "annotate", "bundle_ops", "cache_dir", "count_ops", "measure_peak",
           "supported_precisions"]
