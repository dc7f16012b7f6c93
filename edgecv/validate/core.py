"""Validate a bundle's backends against the PyTorch reference (live model, or ``reference.npz`` saved at export).

On a torch-less device the reference is the outputs export saved beside the model (the Polygraphy "saved
RunResults" idea); where torch and the model source are present, the live eager model is the reference, and the
saved outputs are used to check that the live model is the one that was exported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edgecv.backends.runs import (
    Opener,
    default_opener,
    error_line,
    fit_batch,
    infer_batched,
    missing_framework,
    random_inputs,
    reference_inputs,
    runner_info,
)
from edgecv.errors import AccuracyError, BundleError, ConfigError, EdgecvError, MissingDependencyError, UnknownNameError
from edgecv.validate.compare import TOLERANCES, OutputComparison, Tolerance, compare_outputs, judge, tolerance_for

if TYPE_CHECKING:
    from edgecv.bundle import Bundle

ReferenceMode = Literal["auto", "live", "npz"]

# errors that mean "the user asked for something impossible" (exit 2), not "this backend failed its check"
_USER_ERRORS = (ConfigError, UnknownNameError, MissingDependencyError)


class ValidationFailed(AccuracyError):
    """A backend failed its numeric check. The CLI exits 1 for it (2 is kept for bad input)."""

    exit_code = 1


@dataclass
class BackendResult:
    """One backend's validation: what was asked, what ran, the per-output comparisons and the verdict."""

    backend: str
    precision: str
    tolerance: Tolerance
    precision_ran: str | None = None
    device: str | None = None
    load_time_s: float | None = None
    outputs: list[OutputComparison] = field(default_factory=list)
    error: str | None = None
    allow_unchecked: bool = False  # the user accepted checks that had nothing to compare (--allow-unchecked)
    # the backend's raw outputs on the reference inputs (for the report's gallery; not part of to_dict)
    raw: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def not_checked(self) -> list[str]:
        """``output: reason`` for every check that had nothing to compare."""
        return [f"{o.name}: {why}" for o in self.outputs for why in o.not_checked]

    @property
    def passed(self) -> bool:
        """Every output met its bounds and every check compared something (or the user accepted that it did
        not): a check with nothing to compare never passes by default."""
        return (
            self.error is None
            and bool(self.outputs)
            and all(o.passed for o in self.outputs)
            and (self.allow_unchecked or not self.not_checked)
        )

    @property
    def verdict(self) -> str:
        """``pass``, ``fail``, ``not checked`` (bounds met, something compared nothing) or ``pass (unchecked
        accepted)``."""
        if self.error is not None or not self.outputs or not all(o.passed for o in self.outputs):
            return "fail"
        if self.not_checked:
            return "pass (unchecked accepted)" if self.allow_unchecked else "not checked"
        return "pass"

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "precision_ran": self.precision_ran,
            "device": self.device,
            "load_time_s": self.load_time_s,
            "passed": self.passed,
            "verdict": self.verdict,
            "not_checked": self.not_checked,
            "allow_unchecked": self.allow_unchecked,
            "error": self.error,
            "tolerance": {**self.tolerance.__dict__, "text": self.tolerance.describe()},
            "outputs": [{**o.to_dict(), "tolerance_text": self.tolerance.describe_for(o)} for o in self.outputs],
        }


@dataclass
class ValidationReport:
    """Everything :func:`validate_bundle` found. ``passed`` is True only when every backend passed."""

    bundle: str
    task: str
    reference: str  # "live" or "npz": where the reference outputs came from
    reference_note: str
    batch: int
    input_shapes: dict[str, list[int]]
    results: list[BackendResult] = field(default_factory=list)
    reference_check: list[OutputComparison] | None = None  # live torch vs reference.npz, when both exist
    # the bundle's contract preprocessing re-run on the reference's source images vs the saved inputs: a wrong
    # colour order, scale, mean/std or resize in the artifact shows here (the backends are fed the saved inputs)
    preprocess_check: OutputComparison | None = None
    # the reference outputs the backends were compared with (for the report's gallery; not part of to_dict)
    raw_reference: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        pre_ok = self.preprocess_check is None or bool(self.preprocess_check.passed)
        return bool(self.results) and all(r.passed for r in self.results) and pre_ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "task": self.task,
            "reference": self.reference,
            "reference_note": self.reference_note,
            "batch": self.batch,
            "input_shapes": self.input_shapes,
            "passed": self.passed,
            "reference_check": None if self.reference_check is None else [o.to_dict() for o in self.reference_check],
            "preprocess_check": None if self.preprocess_check is None else self.preprocess_check.to_dict(),
            "rows": [r.to_dict() for r in self.results],  # "results" in edgecv/validate/1
        }


def check_preprocessing(bundle: Bundle, batch: int | None = None) -> OutputComparison | None:
    """The contract's preprocessing of the reference's source images against the inputs saved at export, judged
    at fp32 tolerance; None when the reference inputs were not made from images (noise, older bundles).

    The backends are fed the saved inputs, so without this a bundle whose contract was changed after export
    (RGB↔BGR, scale, mean/std) would pass validate and then be fed wrongly preprocessed frames by ``run``.
    """
    from edgecv.tasks.preprocess import preprocess

    ref = bundle.load_reference()
    images = ref.get("images") or []
    saved = ref["inputs"].get(bundle.contract.input_name)
    if not images or saved is None:
        return None
    n = min(len(images), len(saved), batch or len(images))
    try:
        got = np.concatenate([preprocess(im, bundle.contract)[0] for im in images[:n]], axis=0)
    except EdgecvError as exc:
        cmp = OutputComparison(
            name="preprocessing",
            shape=tuple(saved[:n].shape),
            got_shape=(),
            failures=[f"the contract's preprocessing fails on the reference images: {exc}"],
            passed=False,
        )
        return cmp
    cmp = compare_outputs({"preprocessing": saved[:n]}, {"preprocessing": got}, "generic")[0]
    judge(cmp, TOLERANCES["fp32"])
    if not cmp.passed:
        cmp.failures.append(
            f"the bundle's contract (colour {bundle.contract.color}, mean {bundle.contract.mean}, "
            f"std {bundle.contract.std}, resize {bundle.contract.resize}) does not reproduce the "
            "inputs the reference was made with: the model would be fed wrongly preprocessed frames"
        )
    return cmp


def _open_bundle(bundle: Bundle | str | Path) -> Bundle:
    from edgecv.bundle import Bundle

    return bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)


def _run_once(
    opener: Opener,
    bundle: Bundle,
    backend: str,
    precision: str,
    feed: dict[str, np.ndarray],
    device: str | None,
    threads: int | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    runner = opener(bundle, backend, precision=precision, device=device, threads=threads)
    with runner:
        out = infer_batched(runner, feed)
        info = runner_info(runner)
    return out, info


def _live_reference(
    opener: Opener, bundle: Bundle, feed: dict[str, np.ndarray], threads: int | None
) -> dict[str, np.ndarray]:
    # the reference always runs fp32 on the CPU: it is what the other numbers are measured against
    out, _ = _run_once(opener, bundle, "torch", "fp32", feed, "cpu", threads)
    return out


def validate_bundle(
    bundle: Bundle | str | Path,
    backends: list[tuple[str, str]],
    device: str | None = None,
    reference: ReferenceMode = "auto",
    batch: int | None = None,
    *,
    threads: int | None = None,
    overrides: dict[str, float | None] | None = None,
    opener: Opener | None = None,
    seed: int = 0,
    allow_unchecked: bool = False,
) -> ValidationReport:
    """Run every backend on the reference inputs and compare its outputs with the reference outputs.

    Args:
        bundle: a :class:`~edgecv.bundle.Bundle` or its folder.
        backends: ``(backend, precision)`` pairs, e.g. ``[("onnxruntime", "fp32"), ("openvino", "bf16")]``.
        device: backend device (``CPU``, ``GPU``, ``cuda:0``…); None lets each backend choose.
        reference: ``live`` runs the eager torch model rebuilt from the bundle's recorded source; ``npz`` reads
            ``reference.npz``; ``auto`` tries live when torch imports and the source loads (and agrees with the
            saved outputs), else npz. The report says which one was used and why.
        batch: samples to validate; the saved inputs are sliced or cycled to it. None: all saved samples
            (or the contract's batch when there is no ``reference.npz``).
        threads: CPU threads per backend.
        overrides: tolerance fields to override for every precision (``atol``, ``rtol``, ``min_cosine``,
            ``min_top1``, ``min_pixel``); None values are ignored.
        opener: ``opener(bundle, backend, precision=, device=, threads=) -> Runner``; defaults to
            :func:`edgecv.pipeline.open_runner`.
        seed: seed of the random inputs used when the bundle has no ``reference.npz``.
        allow_unchecked: accept checks that had nothing to compare (no confident reference box, every reference
            sample of one class, an empty mask); by default such a backend fails with the reason.

    Returns:
        A :class:`ValidationReport`; a backend that fails to load or run is a failed result with its error.

    Raises:
        ConfigError: bad ``reference``/``batch``/tolerance, or no backends.
        BundleError: ``reference="npz"`` and the bundle has no reference.npz.
        UnknownNameError, MissingDependencyError: a backend that is not registered or not installed.
        EdgecvError: ``reference="live"`` and the live torch model cannot be built.
    """
    if reference not in ("auto", "live", "npz"):
        raise ConfigError(f"--reference: expected auto, live or npz, found '{reference}'")
    if not backends:
        raise ConfigError("--backend: expected at least one backend to validate, found none")
    if batch is not None and batch < 1:
        raise ConfigError(f"--batch: expected a positive integer, found {batch}")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    tolerances = {p: tolerance_for(p, **overrides) for p in TOLERANCES}  # validates overrides up front
    for _, prec in backends:
        if prec not in tolerances:
            raise ConfigError(f"precision: expected one of {', '.join(TOLERANCES)}, found '{prec}'")
    b = _open_bundle(bundle)
    opener = opener or default_opener()
    task = b.contract.task

    # ---------------------------------------------------------------- reference inputs and outputs
    feed = reference_inputs(b, batch)
    saved: dict[str, np.ndarray] | None = None
    if feed is not None:
        saved_all = b.load_reference()["outputs"]
        saved = fit_batch(saved_all, batch) if batch else saved_all
    elif reference == "npz":
        raise BundleError(f"--reference npz: expected {b.reference_path}, found nothing; re-export the bundle")
    else:
        feed = random_inputs(b.contract, batch or b.contract.input_shape[0], seed=seed)

    ref_out: dict[str, np.ndarray] | None = None
    used, note = "npz", "reference.npz saved at export"
    check: list[OutputComparison] | None = None
    if reference in ("auto", "live"):
        try:
            live = _live_reference(opener, b, feed, threads)
        except Exception as exc:
            if reference == "live" or saved is None:
                if isinstance(exc, EdgecvError):
                    raise
                raise BundleError(f"live torch reference unavailable: {error_line(exc)}") from exc
            note = f"reference.npz (live torch unavailable: {error_line(exc)})"
        else:
            if saved is not None:
                check = [judge(c, TOLERANCES["fp32"]) for c in compare_outputs(saved, live, task)]
            if check is not None and not all(c.passed for c in check) and reference == "auto":
                worst = max(check, key=lambda c: c.max_rel)
                note = (
                    f"reference.npz (the live torch model disagrees with it, max rel {worst.max_rel:.3g}: "
                    "its source or weights changed since export)"
                )
            else:
                ref_out, used = live, "live"
                note = "live torch model rebuilt from the bundle's source"
                if check is not None and not all(c.passed for c in check):
                    note += "; WARNING: it disagrees with reference.npz (source or weights changed since export)"
                elif check is not None:
                    note += "; agrees with reference.npz"
    if ref_out is None:
        ref_out = saved if saved is not None else {}  # saved is always set on the npz path

    n = next(iter(feed.values())).shape[0]
    report = ValidationReport(
        bundle=str(b.root),
        task=task,
        reference=used,
        reference_note=note,
        batch=n,
        input_shapes={k: list(v.shape) for k, v in feed.items()},
        reference_check=check,
        raw_reference=ref_out,
        preprocess_check=check_preprocessing(b, batch) if saved is not None else None,
    )

    # ---------------------------------------------------------------- each backend
    for backend, prec in backends:
        res = BackendResult(
            backend=backend, precision=prec, tolerance=tolerances[prec], allow_unchecked=allow_unchecked
        )
        try:
            got, info = _run_once(opener, b, backend, prec, feed, device, threads)
        except _USER_ERRORS:
            raise
        except ImportError as exc:
            raise missing_framework(backend, exc) from exc
        except Exception as exc:  # noqa: BLE001 - a backend that cannot load or run fails its check
            res.error = error_line(exc)
            report.results.append(res)
            continue
        res.precision_ran, res.device, res.load_time_s = info["precision_ran"], info["device"], info["load_time_s"]
        res.outputs = [judge(c, res.tolerance) for c in compare_outputs(ref_out, got, task)]
        res.raw = got
        report.results.append(res)
    return report
