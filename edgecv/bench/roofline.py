"""How far from this machine's limit a model runs: operations counted from the ONNX graph, peak measured.

* :func:`count_ops` counts the multiply-adds of Conv, ConvTranspose, Gemm and MatMul nodes at the contract's input
  shape (batch 1; ONNX shape inference gives every tensor's shape) and reports operations = 2 × MACs, the
  convention of torch's FlopCounterMode and of ``edgecv models``. Element-wise ops are not counted.
* The peak probe: small ONNX models built in memory in the forms CPU engines run fastest (:data:`FORMS`: stacks of
  dense 3×3 convolutions at resnet's stage sizes with channels a multiple of 64, a 1×1 and a plain GEMM; Q/DQ
  around every activation for int8), run through the same engine and Runner class as the benchmark, at the
  precision the row ran. Every rate is the form's median call.
* :func:`measure_peak` screens all forms alone (interleaved rounds) and caches the result per host in the user's
  cache folder (``$EDGECV_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgecv``, else ``~/.cache/edgecv``).
  :func:`probe_companions` gives ``bench_bundle`` the best screened forms to time **side by side** with the rows
  (same rounds, same load) — the default of ``edgecv bench``; ``--cached-peak`` uses the cached screening instead
  (faster, but probe and model were timed at different moments, so on a busy machine % of peak moves with load).
* :func:`annotate` raises an engine:precision's peak to the best rate any of its rows reached, so % of peak never
  exceeds 100 %; the raise is reported (``info["raised"]``), never silent.
* :func:`supported_precisions` asks the engine what the device can compute in (OpenVINO's
  ``OPTIMIZATION_CAPABILITIES``); a precision it does not list is never probed.
* :func:`annotate` fills ``gops_per_s``, ``peak_gops_per_s`` and ``pct_peak`` of every bench row.
"""

from __future__ import annotations

import json
import os
import tempfile
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
@dataclass(frozen=True)
class ProbeForm:
    """One shape of the peak probe: ``layers`` convolutions (``kernel``×``kernel``, ``channels`` in and out,
    ``size``×``size`` pixels, padding keeps the shape, each followed by ReLU) or one ``channels``² MatMul.

    Dense 3×3 convolutions with channel counts that are multiples of 64 at resnet's stage sizes are what CPU
    engines run fastest (OpenVINO's int8 and fp32 convolution kernels); grouped or depthwise convolutions are never
    a peak form. A stack of layers keeps the int8 activations in int8 between layers, as a quantized model does, so
    the float input's quantization and the output's dequantization are a small part of the call."""

    name: str
    op: str  # "conv" | "matmul"
    channels: int
    size: int = 1
    kernel: int = 3
    layers: int = 1

    @property
    def input_shape(self) -> list[int]:
        return [self.channels, self.channels] if self.op == "matmul" else [1, self.channels, self.size, self.size]


#: the forms the probe tries; the best measured one is the peak (resnet18's four stages, a larger 3×3, a 1×1 and
#: a plain GEMM, which is the fastest form on some engines)
FORMS: tuple[ProbeForm, ...] = (
    ProbeForm("conv3x3-c64-56", "conv", 64, 56, 3, 4),
    ProbeForm("conv3x3-c128-28", "conv", 128, 28, 3, 4),
    ProbeForm("conv3x3-c256-14", "conv", 256, 14, 3, 4),
    ProbeForm("conv3x3-c512-7", "conv", 512, 7, 3, 4),
    ProbeForm("conv3x3-c256-28", "conv", 256, 28, 3, 2),
    ProbeForm("conv1x1-c512-14", "conv", 512, 14, 1, 4),
    ProbeForm("matmul-1024", "matmul", 1024),
)
#: how many of the best screened forms are timed side by side with the rows
SIDE_BY_SIDE_FORMS = 2


def forms_id(forms: tuple[ProbeForm, ...] | None = None) -> str:
    """A short id of a probe form set (default :data:`FORMS`): part of the cache key, so changing the forms
    re-measures."""
    import hashlib

    return hashlib.sha256(repr(tuple(forms or FORMS)).encode()).hexdigest()[:8]


def probe_model(form: ProbeForm, precision: str, seed: int = 0) -> Any:
    """The probe of ``form`` as an in-memory ONNX model; for int8, Q/DQ around every activation and per-channel
    int8 weights (what a QDQ model holds, so the engines run their integer kernels)."""
    onnx = lazy_import("onnx", extra="onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    int8 = precision == "int8"
    shape = form.input_shape
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    nodes: list[Any] = []
    inits: list[Any] = []
    cur = "x"
    if int8:
        inits += [
            numpy_helper.from_array(np.array(0.02, np.float32), "a_s"),
            numpy_helper.from_array(np.array(0, np.uint8), "a_zp"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "a_s", "a_zp"], ["q0"]),
            helper.make_node("DequantizeLinear", ["q0", "a_s", "a_zp"], ["d0"]),
        ]
        cur = "d0"
    c, k = form.channels, form.kernel
    layers = 1 if form.op == "matmul" else form.layers
    for i in range(layers):
        wshape = (c, c) if form.op == "matmul" else (c, c, k, k)
        if int8:
            axis = 1 if form.op == "matmul" else 0  # per output channel
            inits += [
                numpy_helper.from_array(rng.integers(-127, 128, size=wshape, dtype=np.int8), f"w{i}_q"),
                numpy_helper.from_array(np.full((c,), 1e-3, np.float32), f"w{i}_s"),
                numpy_helper.from_array(np.zeros((c,), np.int8), f"w{i}_zp"),
            ]
            nodes.append(helper.make_node("DequantizeLinear", [f"w{i}_q", f"w{i}_s", f"w{i}_zp"], [f"w{i}"], axis=axis))
        else:
            inits.append(numpy_helper.from_array((rng.standard_normal(wshape) * 0.05).astype(np.float32), f"w{i}"))
        if form.op == "matmul":
            nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"]))
        else:
            nodes.append(helper.make_node("Conv", [cur, f"w{i}"], [f"m{i}"], pads=[k // 2] * 4))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"]))
        cur = f"r{i}"
        if int8:
            nodes += [
                helper.make_node("QuantizeLinear", [cur, "a_s", "a_zp"], [f"q{i + 1}"]),
                helper.make_node("DequantizeLinear", [f"q{i + 1}", "a_s", "a_zp"], [f"d{i + 1}"]),
            ]
            cur = f"d{i + 1}"
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    graph = helper.make_graph(nodes, f"edgecv_peak_probe_{form.name}_{precision}", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return model


@dataclass
class Peak:
    """The best GOP/s the probe reached on one engine, device and precision (median call of the best form).

    ``forms``: every form's GOP/s in that measurement; ``source``: ``"side by side"`` (timed in the same rounds
    as the bench rows), ``"screened"`` (timed now, alone) or ``"cache"`` (a screening from an earlier run)."""

    backend: str
    device: str
    precision: str
    gops_per_s: float
    form: str
    threads: int | None
    precision_ran: str
    measured: str
    engine_version: str | None = None
    size: int = 0
    forms: dict[str, float] = field(default_factory=dict)
    source: str = "screened"

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


def cache_key(
    backend: str, device: str | None, precision: str, threads: int | None, forms: tuple[ProbeForm, ...] | None = None
) -> str:
    """What a cached peak depends on: engine, its version, device, precision, threads and the probe forms (the
    host is the cache file's name)."""
    return (
        f"{backend}|{(device or 'default').upper()}|{precision}|threads={threads}|v={_engine_version(backend)}"
        f"|forms={forms_id(forms)}"
    )


def _read_cache() -> dict[str, Any]:
    p = _cache_file()
    try:
        data = json.loads(p.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, peak: Peak) -> None:
    from edgecv._io import write_json

    data = _read_cache()
    data[key] = peak.to_dict()
    try:
        write_json(_cache_file(), data)
    except OSError:  # a read-only home: the peak is still used for this run
        pass


def cached_peak(
    backend: str,
    precision: str,
    device: str | None = None,
    threads: int | None = None,
    forms: tuple[ProbeForm, ...] | None = None,
) -> Peak | None:
    """The cached peak of this host for the engine (and its version), device, precision, threads and probe forms;
    None when there is none."""
    hit = _read_cache().get(cache_key(backend, device, precision, threads, forms))
    if isinstance(hit, dict):
        try:
            return Peak(**{**hit, "source": "cache"})
        except TypeError:  # an entry written by an older edgecv
            return None
    return None


def _open_probe(backend: str, path: Path, precision: str, device: str | None, threads: int | None) -> Any:
    from edgecv.backends import RUNNERS

    cls = RUNNERS.get(backend)
    return cls(path, precision, device, threads)  # type: ignore[call-arg]


def open_probe(
    backend: str, form: ProbeForm, precision: str, device: str | None = None, threads: int | None = None
) -> tuple[Any, dict[str, np.ndarray], int]:
    """A loaded runner of ``form``'s probe through ``backend``'s own Runner class (same device and threads as the
    benchmark), its feed and its operations per call (counted by :func:`count_ops`, as a model's are)."""
    onnx = lazy_import("onnx", extra="onnxruntime")
    model = probe_model(form, precision)
    ops = count_ops(model).ops
    with tempfile.TemporaryDirectory(prefix="edgecv-peak-") as tmp:
        path = Path(tmp) / f"probe_{form.name}_{precision}.onnx"
        onnx.save(model, str(path))
        runner = _open_probe(backend, path, precision, device, threads)
        runner.load()  # the engine holds the compiled model; the file can go
    feed = {"x": np.random.default_rng(7).uniform(0, 2, form.input_shape).astype(np.float32)}
    return runner, feed, ops


def _check_probe(backend: str, precision: str, device: str | None) -> None:
    if backend not in PROBED:
        raise ConfigError(f"peak: expected a backend with a GEMM probe ({', '.join(PROBED)}), found '{backend}'")
    supported = supported_precisions(backend, device)
    if precision not in supported:
        raise ConfigError(
            f"peak: {backend} {device or 'default device'} reports {', '.join(supported) or 'nothing'}"
            f", expected {precision} among them"
        )


def rate(ops: int, samples_s: list[float]) -> float:
    """GOP/s of the median call."""
    return ops / float(np.median(samples_s)) / 1e9


def measure_peak(
    backend: str,
    precision: str,
    device: str | None = None,
    threads: int | None = None,
    *,
    forms: tuple[ProbeForm, ...] | None = None,
    min_time_s: float = 0.6,
    rounds: int = 3,
    use_cache: bool = True,
) -> Peak:
    """Screen the probe forms alone: every form timed in ``rounds`` interleaved rounds (order rotating, as bench
    rows are), each form's rate at its median call; the peak is the best form.

    The screening is cached per host, engine version, device, precision, threads and form set: it picks the forms
    that :func:`probe_companions` times side by side with a model, and it is the peak of ``edgecv bench
    --cached-peak``. ``use_cache=False`` measures again (and re-caches).

    Raises:
        ConfigError: a backend without a probe, or a precision the device does not list.
    """
    from edgecv.bench.core import collect, schedule
    from edgecv.bundle import now_iso

    _check_probe(backend, precision, device)
    forms = tuple(forms or FORMS)
    key = cache_key(backend, device, precision, threads, forms)
    if use_cache:
        hit = cached_peak(backend, precision, device, threads, forms)
        if hit is not None:
            return hit
    opened: dict[str, tuple[Any, dict[str, np.ndarray], int]] = {}
    samples: dict[str, list[float]] = {}
    try:
        for f in forms:
            opened[f.name] = open_probe(backend, f, precision, device, threads)
            runner, feed, _ = opened[f.name]
            for _ in range(3):
                runner.infer(feed)
        for rnd, slot in schedule([], [1], list(opened), rounds):
            runner, feed, _ = opened[str(slot)]
            samples.setdefault(str(slot), []).extend(
                collect(
                    runner, feed, warmup=1 if rnd else 0, min_time_s=min_time_s / rounds, min_iters=3, max_iters=2000
                )
            )
        rates = {name: rate(opened[name][2], s) for name, s in samples.items()}
        best = max(rates, key=lambda n: rates[n])
        runner = opened[best][0]
        ran, dev = str(runner.precision), str(runner.device)
    finally:
        for runner, _, _ in opened.values():
            runner.close()
    form = next(f for f in forms if f.name == best)
    peak = Peak(
        backend=backend,
        device=dev,
        precision=precision,
        gops_per_s=rates[best],
        form=best,
        threads=threads,
        precision_ran=ran,
        measured=now_iso(),
        engine_version=_engine_version(backend),
        size=form.size if form.op == "conv" else form.channels,
        forms=rates,
        source="screened",
    )
    _write_cache(key, peak)
    return peak


def probe_key(backend: str, precision: str, form: str) -> str:
    """The companion key of one probe form in a bench run."""
    return f"probe:{backend}:{precision}:{form}"


def probe_companions(
    specs: list[tuple[str, str]],
    device: str | None = None,
    threads: int | None = None,
    *,
    k: int = SIDE_BY_SIDE_FORMS,
    screen: Any = None,
) -> dict[str, Any]:
    """Openers of the probes to time side by side with the rows of ``specs`` (``bench_bundle(companions=...)``):
    for every engine:precision that has a probe and that the device lists, the ``k`` best forms of the host's
    screening (:func:`measure_peak`, cached; screened now when there is none)."""
    screen = screen or measure_peak
    out: dict[str, Any] = {}
    for backend, precision in dict.fromkeys(specs):
        if backend not in PROBED or precision not in supported_precisions(backend, device):
            continue
        try:
            screened = screen(backend, precision, device=device, threads=threads)
        except Exception:  # noqa: BLE001, S112 - annotate says why this precision has no peak
            continue
        best = sorted(screened.forms, key=lambda n: -screened.forms[n])[:k] or [screened.form]
        for name in best:
            form = next((f for f in FORMS if f.name == name), None)
            if form is None:
                continue

            def opener(b: str = backend, f: ProbeForm = form, p: str = precision) -> tuple[Any, Any]:
                runner, feed, _ = open_probe(b, f, p, device, threads)
                return runner, feed

            out[probe_key(backend, precision, name)] = opener
    return out


def _side_by_side(report: BenchReport, backend: str, precision: str) -> Peak | None:
    """The peak from the probes timed in the same rounds as the rows (their median calls), None if none ran."""
    from edgecv.bundle import now_iso

    prefix = probe_key(backend, precision, "")
    rates: dict[str, float] = {}
    for key, s in report.companion_samples.items():
        if key.startswith(prefix) and s:
            form = next((f for f in FORMS if f.name == key[len(prefix) :]), None)
            if form is not None:
                rates[form.name] = rate(count_ops(probe_model(form, precision)).ops, s)
    if not rates:
        return None
    best = max(rates, key=lambda n: rates[n])
    form = next(f for f in FORMS if f.name == best)
    dev = next((r.device for r in report.rows if r.backend == backend and r.device), None) or "default"
    return Peak(
        backend=backend,
        device=dev,
        precision=precision,
        gops_per_s=rates[best],
        form=best,
        threads=report.settings.get("threads"),
        precision_ran=precision,
        measured=now_iso(),
        engine_version=_engine_version(backend),
        size=form.size if form.op == "conv" else form.channels,
        forms=rates,
        source="side by side",
    )


def annotate(
    report: BenchReport,
    bundle: Bundle,
    *,
    peak: bool = True,
    threads: int | None = None,
    device: str | None = None,
    measure: Any = None,
) -> dict[str, Any]:
    """Fill every row's ``gops_per_s`` (from the graph's operations and its median latency) and, with ``peak``,
    ``peak_gops_per_s`` and ``pct_peak`` for the precision the row actually ran.

    The peak of an engine:precision is, in order of preference, the probes timed side by side with the rows
    (``report.companion_samples``, see :func:`probe_companions`), else ``measure`` (default :func:`measure_peak`:
    the host's cached screening, or one now). It is then raised to the best rate any row of that engine:precision
    reached, so no row shows more than 100 %: a model whose kernels beat every probe form defines the ceiling
    itself, and ``info["raised"]`` says so (the bench table prints it as a footnote).

    Returns what was used (operation count, peaks, raised peaks, and why a row has no peak), also stored in
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
    info: dict[str, Any] = {
        "ops": ops.to_dict(),
        "peaks": {},
        "no_peak": {},
        "raised": {},
        "method": "GOP/s = 2 x MACs of Conv/ConvTranspose/Gemm/MatMul (batch 1, ONNX shape "
        "inference) x batch / median latency; peak = best probe form (dense 3x3/1x1 "
        "convolutions, GEMM) through the same engine at the precision that ran, at "
        "its median call, raised to any faster row",
    }
    for row in report.rows:
        if row.stats is not None:
            row.gops_per_s = ops.ops * row.batch / (row.stats.p50_ms / 1e3) / 1e9
    if report.companion_errors:
        info["probe_errors"] = dict(report.companion_errors)
    if not peak:
        report.settings["roofline"] = info
        return info
    for row in report.rows:
        if row.stats is None:
            continue
        ran = row.precision_ran or row.precision
        key = f"{row.backend}:{ran}"
        if key in info["peaks"] or key in info["no_peak"]:
            continue
        if row.backend not in PROBED:
            info["no_peak"][key] = f"no GEMM probe for {row.backend}"
        elif ran not in supported_precisions(row.backend, device):
            info["no_peak"][key] = f"{row.backend} does not list {ran} for this device"
        else:
            try:
                p = _side_by_side(report, row.backend, ran) or measure(row.backend, ran, device=device, threads=threads)
                info["peaks"][key] = p.to_dict()
            except Exception as exc:  # noqa: BLE001 - a probe that fails leaves the rows without a peak
                info["no_peak"][key] = " ".join(str(exc).split())[:200]
    for key, p in info["peaks"].items():
        mine = [
            r
            for r in report.rows
            if r.gops_per_s is not None and f"{r.backend}:{r.precision_ran or r.precision}" == key
        ]
        fastest = max(mine, key=lambda r: r.gops_per_s or 0.0, default=None)
        if fastest is not None and fastest.gops_per_s is not None and fastest.gops_per_s > p["gops_per_s"]:
            info["raised"][key] = {
                "probe_gops_per_s": p["gops_per_s"],
                "probe_form": p["form"],
                "gops_per_s": fastest.gops_per_s,
                "by": f"{fastest.label} batch {fastest.batch}",
            }
            p["gops_per_s"] = fastest.gops_per_s
        for r in mine:
            r.peak_gops_per_s = float(p["gops_per_s"])
            r.pct_peak = 100.0 * (r.gops_per_s or 0.0) / r.peak_gops_per_s
            r.peak_raised = key in info["raised"]
    report.settings["roofline"] = info
    return info


__all__ = [
    "FORMS",
    "OpCount",
    "Peak",
    "ProbeForm",
    "annotate",
    "bundle_ops",
    "cache_dir",
    "cache_key",
    "cached_peak",
    "count_ops",
    "forms_id",
    "measure_peak",
    "open_probe",
    "probe_companions",
    "probe_key",
    "probe_model",
    "rate",
    "supported_precisions",
]
