"""Before/after comparison of a rewrite (params, GFLOPs, drift, ONNX Runtime / OpenVINO latency), saving and
rebuilding rewritten models, and distillation fine-tuning. Used by ``edgecv rewrite``."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecv.errors import ConfigError, EdgecvError
from edgecv.export.onnx import export_onnx
from edgecv.export.sources import REWRITE_FORMAT, split_file_arch
from edgecv.export.sources import load_rewritten as _load_rewritten
from edgecv.export.stats import count_flops, count_params
from edgecv.rewrite.apply import apply_passes

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgecv.export.loaded import LoadedModel

SAVE_FORMAT = REWRITE_FORMAT


def measure_latency(
    paths: dict[str, Path], sample: torch.Tensor, min_time_s: float = 1.0, rounds: int = 3
) -> dict[str, dict[str, Any]]:
    """p50 latency (ms) of each ONNX file with ONNX Runtime and OpenVINO (fp32, CPU), measured in this one run:
    ``rounds`` alternating rounds per backend (before, after, before, after...) so load on a shared machine hits
    both alike; the median of the rounds' p50 is reported. A backend that fails gives ``<backend>_error``."""
    import statistics

    from edgecv.bench.core import measure

    feed = {"input": sample.detach().numpy()}
    out: dict[str, dict[str, Any]] = {k: {} for k in paths}
    for backend in ("onnxruntime", "openvino"):
        runners: dict[str, Any] = {}
        try:
            if backend == "onnxruntime":
                from edgecv.backends.onnxruntime import OnnxRuntimeRunner

                runners = {k: OnnxRuntimeRunner(p, "fp32", "CPU") for k, p in paths.items()}
            else:
                from edgecv.backends.openvino import OpenVINORunner

                runners = {k: OpenVINORunner(p, precision="fp32", device="CPU") for k, p in paths.items()}
            for r in runners.values():
                r.load()
            p50s: dict[str, list[float]] = {k: [] for k in runners}
            for rnd in range(rounds):
                for key, r in runners.items():
                    stats = measure(
                        r,
                        feed,
                        warmup=5 if rnd == 0 else 2,
                        min_time_s=min_time_s / rounds,
                        min_iters=max(10 // rounds, 3),
                    )
                    p50s[key].append(stats.p50_ms)
            for key, vals in p50s.items():
                out[key][backend] = statistics.median(vals)
        except EdgecvError as exc:
            for key in paths:
                out[key].setdefault(f"{backend}_error", str(exc))
        finally:
            for r in runners.values():
                try:
                    r.close()
                except Exception:  # noqa: BLE001, S110 - closing a half-loaded runner
                    pass
    return out


def save_rewritten(
    path: Path,
    model: nn.Module,
    arch: str,
    passes: list[str],
    options: dict[str, Any],
    input_shape: list[int],
    model_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Write ``{"arch", "rewrite": {passes, options, input_shape}, "state_dict"}`` atomically; plain data and
    tensors only, so ``torch.load(weights_only=True)`` reads it. :func:`load_rewritten` rebuilds the module."""
    import torch

    from edgecv._io import atomic_path

    blob = {
        "format": SAVE_FORMAT,
        "arch": _arch_relative_to(arch, Path(path).parent),
        "model_kwargs": dict(model_kwargs or {}),
        "rewrite": {"passes": list(passes), "options": options, "input_shape": list(input_shape)},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return path


def _arch_relative_to(arch: str, folder: Path) -> str:
    """A ``file.py:factory`` arch stored relative to the folder of the file that names it (so the saved model
    loads from any working directory); other archs unchanged."""
    import os

    parts = split_file_arch(arch)
    if parts is None:
        return arch
    file = Path(parts[0]).expanduser().resolve()
    try:
        rel = os.path.relpath(file, folder.resolve())
    except ValueError:  # another drive (Windows): keep it absolute
        rel = str(file)
    return f"{Path(rel).as_posix()}:{parts[1]}"


def load_rewritten(path: str | Path) -> nn.Module:
    """Rebuild a model saved by :func:`save_rewritten`: load ``arch``, re-run the passes for their structure
    (on seeded noise), then load the saved weights (strict). Export reads the file; this package runs the passes."""
    return _load_rewritten(path, apply_passes)


def finetune_distill(student: nn.Module, teacher: nn.Module, data_dir: Path, epochs: int, contract: Any = None) -> Any:
    """Distil ``student`` from ``teacher`` on ``data_dir`` with :func:`edgecv.train.distill` (student changed in
    place); images are resized and normalised as the model's contract says."""
    if not Path(data_dir).exists():
        raise ConfigError(f"--finetune: expected an existing data folder, found no '{data_dir}'")
    try:
        from edgecv.train import distill
    except ImportError as exc:
        raise ConfigError(
            "--finetune: expected edgecv.train.distill(student, teacher, data, epochs=...) to "
            f"exist, found none in this install ({exc}); rewrite without --finetune"
        ) from exc
    kw: dict[str, Any] = {}
    if contract is not None:
        kw = {"image_size": tuple(contract.input_shape[-2:]), "mean": tuple(contract.mean), "std": tuple(contract.std)}
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return distill(student, teacher, str(data_dir), epochs=epochs, **kw)


def run_rewrite(
    loaded: LoadedModel,
    spec: str,
    passes: list[str],
    options: dict[str, Any],
    *,
    bench: bool = True,
    bench_time: float = 1.0,
    output: Path | None = None,
    finetune: Path | None = None,
    epochs: int = 1,
) -> dict[str, Any]:
    """The whole ``edgecv rewrite`` flow; returns a JSON-ready dict."""

    from edgecv.rewrite.lint import lint_inputs

    original = loaded.module.eval()
    shape = list(loaded.contract.input_shape)
    # drift (and top-1 agreement) on a few real photos when the model takes RGB images, timing on the given shape
    n = max(shape[0], 4)
    sample, sample_desc = lint_inputs((n, *shape[1:]), n, mean=loaded.contract.mean, std=loaded.contract.std)
    bench_sample = sample[: shape[0]]
    new, report = apply_passes(original, passes, sample, inplace=False, options=options)
    messages: list[str] = []
    if finetune is not None:
        teacher = copy.deepcopy(original)
        finetune_distill(new, teacher, finetune, epochs, loaded.contract)
        new.eval()
        from edgecv.rewrite.base import compare_outputs, run_model

        diff = compare_outputs(run_model(original, sample), run_model(new, sample))
        messages.append(
            f"fine-tuned {epochs} epoch(s) by distillation from the original on {finetune}: max abs "
            f"diff {report.max_abs:.4g} -> {diff.max_abs:.4g}, cosine {report.cosine:.4f} -> "
            f"{diff.cosine:.4f}"
        )
        report.max_abs, report.cosine, report.top1_agreement = diff.max_abs, diff.cosine, diff.top1_agreement
    elif report.finetune_needed:
        messages.append("lossy passes changed the outputs: fine-tune before deploying (--finetune DATA)")
    before = {"params": count_params(original), "gflops": count_flops(original, bench_sample) / 1e9}
    after = {"params": count_params(new), "gflops": count_flops(new, bench_sample) / 1e9}
    if bench:
        with tempfile.TemporaryDirectory(prefix="edgecv-rewrite-") as tmp:
            paths = {
                "before": export_onnx(original, bench_sample, Path(tmp) / "before.onnx"),
                "after": export_onnx(new, bench_sample, Path(tmp) / "after.onnx"),
            }
            lat = measure_latency(paths, bench_sample, bench_time)
        before.update(lat["before"])
        after.update(lat["after"])
        for k, v in lat["before"].items():
            if k.endswith("_error"):
                messages.append(f"{k[:-6]}: not measured ({v})")
    if output is not None:
        save_rewritten(output, new, spec, passes, options, shape, loaded.source_info.get("kwargs"))
        messages.append(
            f"wrote {output} (state dict + arch + passes; rebuild with edgecv.rewrite.compare.load_rewritten)"
        )
    return {
        "model": spec,
        "input_shape": shape,
        "sample": sample_desc,
        "passes": passes,
        "report": report.to_dict(),
        "before": before,
        "after": after,
        "messages": messages,
    }
