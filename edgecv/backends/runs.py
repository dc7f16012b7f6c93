"""Helpers every command that opens backends shares (validate, bench, run, serve): backend specs, installed
backends, the targets of a bundle, feeds, batched inference. Owned by backends (specs, openers and feeds), so
validate and bench both import down into it and never into each other."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv.errors import BackendError, ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from edgecv.backends.base import Runner
    from edgecv.bundle import Bundle, Contract

from edgecv.types import PRECISIONS, parse_backend_spec, parse_precision  # noqa: F401  (re-exported)

#: ``opener(bundle, backend, precision=..., device=..., threads=...) -> Runner`` (not yet loaded)
Opener = Callable[..., "Runner"]


def default_opener() -> Opener:
    """``edgecv.backends.open_runner``: the engines a runtime-tier device has.

    The runtime tier never imports the pipeline (DESIGN.md); callers that can rebuild the eager torch model (the
    CLI, ``run_recipe``) pass ``edgecv.pipeline.open_runner`` in instead.
    """
    from edgecv.backends import open_runner

    return open_runner


def parse_backend_specs(specs: Sequence[str], default_precision: str = "fp32") -> list[tuple[str, str]]:
    """``["onnxruntime", "openvino:bf16"]`` → ``[("onnxruntime", "fp32"), ("openvino", "bf16")]``.

    Raises:
        ConfigError: empty name or unknown precision.
        UnknownNameError: unknown backend (lists the choices).
    """
    from edgecv.backends import RUNNERS

    default = parse_precision(default_precision)
    out: list[tuple[str, str]] = []
    for spec in specs:
        name, prec = parse_backend_spec(spec, default)
        if name not in RUNNERS:
            RUNNERS.get(name)  # raises UnknownNameError listing the choices
        if (name, prec) not in out:
            out.append((name, prec))
    return out


def installed_backends(include_torch: bool = True) -> list[str]:
    """Registered backends whose framework imports here and whose runner module exists, in registry order."""
    from edgecv._lazy import is_available
    from edgecv.backends import RUNNERS

    names: list[str] = []
    for name in ("torch", "onnxruntime", "openvino", "tensorrt"):
        if name not in RUNNERS or (name == "torch" and not include_torch):
            continue
        module = RUNNERS.meta(name).get("module", name)
        if importlib.util.find_spec(f"edgecv.backends.{name}") is None:
            continue
        if is_available(module):
            names.append(name)
    return names


def bundle_targets(bundle: Bundle, precision: str | None = None, include_torch: bool = True) -> list[tuple[str, str]]:
    """What ``validate`` and ``bench`` check when no ``--backend`` is given: every engine installed here at fp32
    (ONNX Runtime and OpenVINO read ``model.onnx`` itself), every artifact recorded in the bundle whose engine is
    installed here (``openvino:int8``, ``onnxruntime:fp16``, ``tensorrt:fp16``…), and torch when installed. With
    ``precision``, only the targets at that precision (torch only where autocast runs it; an engine that runs the
    ONNX model directly at that precision — OpenVINO bf16/fp16 — is included too).

    Raises:
        ConfigError: ``precision`` given and nothing here runs it (names the command that builds it).
    """
    from edgecv.types import TORCH_PRECISIONS

    installed = installed_backends(include_torch=include_torch)
    out: list[tuple[str, str]] = []
    for name in installed:
        if name == "torch":
            if precision is None or precision in TORCH_PRECISIONS:
                out.append(("torch", precision or "fp32"))
        elif name != "tensorrt":  # a TensorRT engine exists only as an artifact
            out.append((name, "fp32"))
    for art in bundle.manifest.artifacts.values():
        if art.backend in installed and (art.backend, art.precision) not in out:
            out.append((art.backend, art.precision))
    if precision is None or precision == "fp32":
        return [t for t in out if precision is None or t[1] == "fp32"]
    picked = [t for t in out if t[1] == precision]
    if precision in ("fp16", "bf16") and "openvino" in installed and ("openvino", precision) not in picked:
        picked.append(("openvino", precision))  # OpenVINO runs the ONNX model at an inference-precision hint
    if not [t for t in picked if t[0] != "torch"]:
        have = ", ".join(f"{n}:{p}" for n, p in out) or "none"
        build = f"edgecv compile {bundle.root} -b openvino -p {precision}" + (
            " --calib DIR" if precision == "int8" else ""
        )
        raise ConfigError(
            f"--precision {precision}: expected an artifact at {precision} in the bundle, found "
            f"{have}; build one with '{build}'"
        )
    return picked


def require_artifacts(bundle: Bundle, specs: Sequence[tuple[str, str]]) -> None:
    """Refuse, before any engine loads, an INT8 target the bundle holds no model for: an error in the input (one line,
    exit 2, naming the command that builds it), not a failed row in a table.

    Raises:
        ConfigError: a ``NAME:int8`` in ``specs`` with no artifact (a bundle written by ``edgecv quantize``, whose
            model.onnx is the QDQ model, has one for every engine that reads ONNX).
    """
    quantized = isinstance(bundle.manifest.provenance.get("quantized"), dict)
    for name, precision in specs:
        if precision != "int8" or name in ("torch", "remote") or bundle.artifact(name, precision) is not None:
            continue
        if quantized and name != "tensorrt":
            continue
        have = ", ".join(bundle.manifest.artifacts) or "none"
        raise ConfigError(
            f"-b {name}:int8: expected an INT8 artifact in the bundle, found {have}; build one with "
            f"'edgecv compile {bundle.root} -b {name}:int8 --calib DIR'"
        )


#: engines in the order ``edgecv run`` prefers them when the bundle holds artifacts for several
_ENGINE_RANK = ("tensorrt", "openvino", "onnxruntime")
_PRECISION_RANK = ("int8", "fp16", "bf16", "fp32")


def best_target(bundle: Bundle, precision: str | None = None) -> tuple[str, str]:
    """The one default of every command that runs a single engine (``run``, ``serve``): the best artifact the
    bundle holds for this machine — a compiled artifact before the plain ONNX model, INT8 before fp16 before bf16
    before fp32, and at one precision TensorRT before OpenVINO before ONNX Runtime — else ONNX Runtime (or
    OpenVINO) on ``model.onnx``.
    With ``precision``, the best target at that precision.

    Raises:
        ConfigError: nothing here runs the bundle at ``precision`` (names the command that builds it).
    """
    targets = bundle_targets(bundle, precision, include_torch=False)
    arts = [t for t in targets if bundle.artifact(*t) is not None]

    def rank(t: tuple[str, str]) -> tuple[int, int]:
        e = _ENGINE_RANK.index(t[0]) if t[0] in _ENGINE_RANK else len(_ENGINE_RANK)
        p = _PRECISION_RANK.index(t[1]) if t[1] in _PRECISION_RANK else len(_PRECISION_RANK)
        return e, p

    if arts:
        return min(arts, key=lambda t: (rank(t)[1], rank(t)[0]))
    for name in ("onnxruntime", "openvino"):
        if (name, precision or "fp32") in targets:
            return name, precision or "fp32"
    if targets:
        return targets[0]
    raise ConfigError(
        "no inference engine is installed: expected onnxruntime, openvino or tensorrt "
        "(pip install 'edgecv[onnxruntime]')"
    )


def fit_batch(arrays: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """Slice or cycle every array along axis 0 to ``batch`` rows (cycling repeats whole samples)."""
    if batch < 1:
        raise ConfigError(f"--batch: expected a positive integer, found {batch}")
    out = {}
    for k, a in arrays.items():
        n = a.shape[0]
        if n == 0:
            raise ConfigError(f"reference array '{k}' is empty")
        idx = np.arange(batch) % n
        out[k] = np.ascontiguousarray(a[idx])
    return out


def random_inputs(contract: Contract, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A deterministic random input batch shaped by the contract (normal floats, or uint8 pixels)."""
    rng = np.random.default_rng(seed)
    shape = (batch, *contract.input_shape[1:])
    if contract.dtype == "uint8":
        arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
    else:
        arr = rng.standard_normal(shape).astype(contract.dtype)
    from edgecv.tasks.decode import make_feed

    return make_feed(contract, arr)  # + the rois a proposal-driven detector takes


def reference_inputs(bundle: Bundle, batch: int | None) -> dict[str, np.ndarray] | None:
    """The inputs saved in ``reference.npz`` fitted to ``batch`` rows, or None when the bundle has none."""
    if not bundle.reference_path.exists():
        return None
    inputs = bundle.load_reference()["inputs"]
    inputs = fit_batch(inputs, batch) if batch else inputs
    x = inputs.get(bundle.contract.input_name)
    if x is None:
        return inputs
    from edgecv.tasks.decode import extra_inputs

    return {**inputs, **extra_inputs(bundle.contract, x)}  # + the rois of a proposal-driven detector (R-CNN)


def fixed_batch(runner: Runner) -> int | None:
    """The static batch size the runner's first input demands, or None when the batch dim is dynamic."""
    spec = runner.input_spec
    if not spec or not spec[0].shape:
        return None
    return spec[0].shape[0]


def infer_batched(runner: Runner, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``runner.infer(feed)``, split into chunks when the model has a static batch smaller than the feed's."""
    n = next(iter(feed.values())).shape[0]
    b = fixed_batch(runner)
    if b is None or b == n:
        return runner.infer(feed)
    if n % b:
        raise BackendError(
            f"{runner.name}: model has a fixed batch of {b}; expected a multiple of {b} samples, found {n}"
        )
    parts: list[dict[str, np.ndarray]] = [
        runner.infer({k: v[i : i + b] for k, v in feed.items()}) for i in range(0, n, b)
    ]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def error_line(exc: BaseException) -> str:
    """One line for a table cell / JSON field."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def missing_framework(backend: str, exc: ImportError) -> MissingDependencyError:
    """A plain ImportError while opening ``backend`` → :class:`MissingDependencyError` naming its extra."""
    from edgecv.backends import RUNNERS

    extra = RUNNERS.meta(backend).get("extra", backend) if backend in RUNNERS else backend
    return MissingDependencyError(
        f"backend '{backend}' cannot be opened here: {error_line(exc)}; install it with: pip install 'edgecv[{extra}]'"
    )


def runner_info(runner: Runner) -> dict[str, Any]:
    return {
        "precision_ran": str(getattr(runner, "precision", "?")),
        "device": str(getattr(runner, "device", "?")),
        "load_time_s": float(getattr(runner, "load_time_s", 0.0)),
    }
