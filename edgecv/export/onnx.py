"""torch → ONNX export into a bundle: exporter (dynamo first, TorchScript fallback), simplification, checker,
metadata contract, reference outputs and an ONNX Runtime parity check.

The model is exported once; simplification, metadata and the checker work on the in-memory ``ModelProto``
(below 2 GB) and the file is written once. Everything goes into a work folder beside the output and is moved
into place by :meth:`edgecv.bundle.Bundle.create` (manifest last, then a rename), so an interrupted export leaves
no folder that looks complete.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv import __version__
from edgecv._io import check_output_dir
from edgecv._lazy import lazy_import, version_of
from edgecv.bundle import (
    CONTRACT_KEY,
    ONNX_FILE,
    REFERENCE_FILE,
    Bundle,
    Contract,
    Manifest,
    host_info,
    is_bundle_dir,
    now_iso,
    save_reference,
)
from edgecv.data.readers import read_image
from edgecv.errors import (
    BundleError,
    ConfigError,
    DataError,
    EdgecvError,
    ExportError,
    MissingDependencyError,
    one_line,
)
from edgecv.validate.torch_adapter import named_outputs

if TYPE_CHECKING:
    from edgecv.export.loaded import LoadedModel, PassRunner

#: ONNX protobufs cannot exceed 2 GiB; above this many parameter bytes the weights go to an external data file
EXTERNAL_DATA_BYTES = 1_800_000_000
ONNX_DATA_FILE = ONNX_FILE + ".data"
#: photos shipped inside scikit-image (no download), used to build realistic reference inputs
REFERENCE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera")
EXPORTERS = ("dynamo", "torchscript")


@dataclass
class ExportResult:
    """What :func:`export_model` did.

    Attributes:
        bundle: the bundle written.
        exporter: ``"dynamo"`` or ``"torchscript"`` (the fallback).
        notices: things the user should know (exporter fallback, skipped simplification, guessed task…).
        opset: ONNX opset of the model.
        nodes_exported / nodes_final: graph node counts straight from the exporter and after simplification.
        simplified: whether onnxslim ran.
        file_size: bytes of ``model.onnx`` plus its external data file, if any.
        parity: per output, ONNX Runtime vs PyTorch on the reference inputs (``OutputComparison.to_dict()``:
            ``max_abs``, ``max_rel`` (of the output's scale), ``cosine``, ``passed``…).
        parity_passed: every output met the fp32 tolerance (None when ONNX Runtime is not installed).
        timings: seconds per stage (``export``, ``simplify``, ``check``, ``parity``, ``total``).
    """

    bundle: Bundle
    exporter: str
    notices: list[str]
    opset: int
    nodes_exported: int
    nodes_final: int
    simplified: bool
    file_size: int
    parity: list[dict[str, Any]]
    parity_passed: bool | None
    timings: dict[str, float] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.bundle.root

    @property
    def contract(self) -> Contract:
        return self.bundle.contract

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle.root),
            "onnx": str(self.bundle.onnx_path),
            "exporter": self.exporter,
            "notices": self.notices,
            "opset": self.opset,
            "nodes_exported": self.nodes_exported,
            "nodes_final": self.nodes_final,
            "simplified": self.simplified,
            "file_size": self.file_size,
            "parity": self.parity,
            "parity_passed": self.parity_passed,
            "timings": self.timings,
            "reference": self.reference,
            "contract": self.contract.model_dump(),
        }


# --------------------------------------------------------------------------------------------- entry point
def export_model(
    source: LoadedModel,
    out: str | Path,
    *,
    opset: int = 18,
    dynamic_batch: bool = True,
    batch_range: Sequence[int] = (1, 1, 8),
    simplify: bool = True,
    n_reference: int = 4,
    force: bool = False,
    input_name: str = "input",
    output_names: Sequence[str] | None = None,
    reference_images: Sequence[str | Path | np.ndarray] | None = None,
    rewrite: Sequence[str] | None = None,
    name: str | None = None,
    reference_data: str | Path | None = None,
    passes: PassRunner | None = None,
) -> ExportResult:
    """Export ``source`` to ONNX and write a bundle at ``out``.

    Args:
        source: from :func:`edgecv.export.sources.load_model`; its contract is the one embedded.
        out: bundle folder to create.
        opset: ONNX opset (the dynamo exporter needs 18 or newer; older opsets go to the TorchScript exporter).
        dynamic_batch: make the batch dimension dynamic within ``batch_range``; else it is fixed at
            ``contract.input_shape[0]``.
        batch_range: ``(min, opt, max)`` batch for dynamic exports (TensorRT profiles read it).
        simplify: run onnxslim on the exported graph.
        n_reference: number of reference samples saved in ``reference.npz`` and used for the parity check.
        force: replace an existing bundle at ``out``.
        input_name: name of the graph input.
        output_names: graph output names; default: the keys of a dict output, ``output`` for one tensor,
            ``output0..`` for a tuple.
        reference_images: image files or BGR uint8 arrays for the reference inputs; default: photos shipped with
            scikit-image, or seeded noise when it (or OpenCV) is missing.
        reference_data: in-domain images for the reference inputs instead: an image folder or a data set (COCO
            JSON, a folder with ``val.json`` or a ``val/`` split); ``n_reference`` images spread over its classes
            (:func:`edgecv.data.readers.reference_images`). A detector's reference then has boxes to compare.
        rewrite: names of model passes applied before export, by ``passes``.
        passes: the pass runner for ``rewrite`` (``edgecv.rewrite.apply_passes``; export does not import rewrite,
            which sits above it).
        name: bundle name (default: the source's name).

    Returns:
        An :class:`ExportResult` with the bundle, node counts, file size and parity numbers.

    Raises:
        ExportError: both exporters failed, or the ONNX model fails the checker.
        BundleError: ``out`` already holds files and ``force`` is not set.
        ConfigError: a bad option (opset, batch range, output names).
    """
    torch = lazy_import("torch")
    onnx = lazy_import("onnx")
    t_start = time.perf_counter()
    started = now_iso()
    out = Path(out)
    _check_destination(out, force)
    max_opset = int(onnx.defs.onnx_opset_version())
    if not 7 <= opset <= max_opset:
        raise ConfigError(f"opset: expected 7..{max_opset} (onnx {onnx.__version__}), got {opset}")
    if n_reference < 1:
        raise ConfigError(f"n-reference: expected at least 1, got {n_reference}")
    notices: list[str] = list(getattr(source, "notes", []))
    contract = _export_contract(source.contract, dynamic_batch, batch_range, input_name)
    module = source.module

    # reference inputs first: real photos preprocessed by the contract double as the tracing sample
    if reference_data is not None:
        if reference_images is not None:
            raise ConfigError("reference: expected reference_images or reference_data, found both")
        from edgecv.data.readers import reference_images as _data_images

        reference_images = _data_images(reference_data, n_reference)
    ref_label = str(reference_data) if reference_data is not None else None
    source_ref = getattr(source, "reference", None)
    if reference_images is None and source_ref is not None:
        reference_images, ref_label = source_ref(n_reference)
    ref_inputs, ref_info = make_reference_inputs(contract, n_reference, images=reference_images, seed=0)
    if ref_label is not None:
        ref_info["data"] = ref_label
    if ref_info.get("notice"):
        notices.append(ref_info.pop("notice"))
    source_images = ref_info.pop("source_images", None)
    chunk = contract.batch_range[2] if contract.dynamic_batch else contract.input_shape[0]
    sample = torch.from_numpy(ref_inputs[: min(len(ref_inputs), 2 if contract.dynamic_batch else chunk)].copy())
    if contract.dynamic_batch and contract.batch_range[2] < sample.shape[0]:
        sample = sample[:1]

    rewrite_report: Any = None
    if rewrite:
        module, rewrite_report = _apply_rewrites(module, list(rewrite), sample, passes)

    ref_outputs = _torch_outputs(module, ref_inputs, chunk, output_names, contract)
    names = list(ref_outputs)
    if source.guess_task:
        contract, guessed = _guess_task(contract, ref_outputs)
        if guessed:
            notices.append(guessed)

    with _work_dir(out) as work:
        onnx_path = work / ONNX_FILE
        large = _param_bytes(module) > EXTERNAL_DATA_BYTES
        t0 = time.perf_counter()
        proto, exporter, fallback = _export(
            module,
            sample,
            onnx_path,
            opset=opset,
            input_name=contract.input_name,
            output_names=names,
            contract=contract,
            large=large,
            extra=_extra_inputs(contract, sample.numpy()),
        )
        t_export = time.perf_counter() - t0
        if fallback:
            notices.append(fallback)
        nodes_exported = len(proto.graph.node) if proto is not None else _node_count(onnx_path)

        t0 = time.perf_counter()
        simplified = False
        if simplify and proto is not None:
            proto, simplified, note = _simplify(proto)
            if note:
                notices.append(note)
        elif simplify:
            notices.append("onnxslim skipped: the model is over 2 GB (external data)")
        t_simplify = time.perf_counter() - t0

        if proto is not None:
            actual_in = [i.name for i in proto.graph.input]
            actual_out = [o.name for o in proto.graph.output]
        else:
            m = onnx.load(str(onnx_path), load_external_data=False)
            actual_in, actual_out = [i.name for i in m.graph.input], [o.name for o in m.graph.output]
        if actual_in[:1] != [contract.input_name] or actual_out != names:
            raise ExportError(
                f"exported graph has inputs {actual_in} and outputs {actual_out}; expected "
                f"['{contract.input_name}'] and {names}"
            )
        contract = contract.model_copy(update={"output_names": names})

        meta = _metadata(contract, source, exporter, opset)
        t0 = time.perf_counter()
        if proto is not None:
            _set_metadata(proto, meta, source, exporter, opset)
            _check(proto, None)
            onnx.save(proto, str(onnx_path))
        else:
            m = onnx.load(str(onnx_path), load_external_data=False)
            _set_metadata(m, meta, source, exporter, opset)
            onnx.save(m, str(onnx_path))  # external tensors keep pointing at model.onnx.data
            _check(None, onnx_path)
        t_check = time.perf_counter() - t0

        ref_path = work / REFERENCE_FILE
        save_reference(ref_path, {contract.input_name: ref_inputs}, ref_outputs, images=source_images)

        t0 = time.perf_counter()
        parity, parity_passed = _parity(onnx_path, contract, ref_inputs, ref_outputs, chunk)
        if parity_passed is None:
            notices.append("parity check skipped: onnxruntime is not installed")
        t_parity = time.perf_counter() - t0

        files = {ONNX_FILE: onnx_path, REFERENCE_FILE: ref_path}
        data_path = work / ONNX_DATA_FILE
        if data_path.exists():
            files[ONNX_DATA_FILE] = data_path
        file_size = onnx_path.stat().st_size + (data_path.stat().st_size if data_path.exists() else 0)
        timings = {"export": t_export, "simplify": t_simplify, "check": t_check, "parity": t_parity}
        provenance = {
            "source": source.source_info,
            "exporter": exporter,
            "exporter_notice": fallback,
            "opset": opset,
            "versions": _versions(),
            "build_flags": {
                "opset": opset,
                "dynamic_batch": contract.dynamic_batch,
                "batch_range": contract.batch_range,
                "simplify": simplify,
                "n_reference": n_reference,
                "input_name": contract.input_name,
                "output_names": names,
                "rewrite": list(rewrite or []),
            },
            "host": host_info(),
            "started": started,
            "nodes": {"exported": nodes_exported, "final": len(proto.graph.node) if proto is not None else None},
            "reference": ref_info,
            "parity": parity,
            "parity_passed": parity_passed,
            "notices": notices,
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        if rewrite:
            provenance["rewrite"] = {"passes": list(rewrite), "report": _jsonable(rewrite_report)}
        provenance["finished"] = now_iso()
        manifest = Manifest(
            name=name or source.name,
            contract=contract,
            provenance=provenance,
            history=[{"event": "export", "time": provenance["finished"], "exporter": exporter}],
        )
        bundle = Bundle.create(out, manifest, files, force=force)

    timings["total"] = time.perf_counter() - t_start
    nodes_final = len(proto.graph.node) if proto is not None else nodes_exported
    return ExportResult(
        bundle=bundle,
        exporter=exporter,
        notices=notices,
        opset=opset,
        nodes_exported=nodes_exported,
        nodes_final=nodes_final,
        simplified=simplified,
        file_size=file_size,
        parity=parity,
        parity_passed=parity_passed,
        timings=timings,
        reference=ref_info,
    )


# --------------------------------------------------------------------------------------------- helpers
def _check_destination(out: Path, force: bool) -> None:
    # checked before the (slow) export; Bundle.create checks again at the end. --force replaces only a bundle (or
    # an empty folder), never a folder of other files
    check_output_dir(out, force, is_bundle_dir, "bundle", "a bundle (a folder with manifest.json)", error=BundleError)


@contextlib.contextmanager
def _work_dir(out: Path) -> Iterator[Path]:
    """A scratch folder beside ``out`` (same filesystem, so the final moves are renames), always removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _export_contract(contract: Contract, dynamic: bool, batch_range: Sequence[int], input_name: str) -> Contract:
    if not input_name or not input_name.replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"input-name: expected an identifier, got '{input_name}'")
    if dynamic:
        br = [int(b) for b in batch_range]
        if len(br) != 3 or not (1 <= br[0] <= br[1] <= br[2]):
            raise ConfigError(f"batch-range: expected min <= opt <= max with min >= 1, got {list(batch_range)}")
        shape = [br[1], *contract.input_shape[1:]]
    else:
        b = contract.input_shape[0]
        br, shape = [b, b, b], list(contract.input_shape)
    upd: dict[str, Any] = {"batch_range": br, "input_shape": shape, "input_name": input_name}
    if contract.channels == 1 and contract.color != "GRAY":
        upd["color"] = "GRAY"
    return contract.model_copy(update=upd)


def _param_bytes(module: Any) -> int:
    try:
        tensors = list(module.parameters()) + list(module.buffers())
    except Exception:  # noqa: BLE001 - TorchScript/GraphModule without the usual accessors
        return 0
    return int(sum(t.numel() * t.element_size() for t in tensors))


def _node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


def _jsonable(obj: Any) -> Any:
    import json

    try:
        return json.loads(json.dumps(obj, default=lambda o: getattr(o, "__dict__", str(o))))
    except (TypeError, ValueError):
        return str(obj)


def _versions() -> dict[str, str | None]:
    return {
        "edgecv": __version__,
        "torch": version_of("torch"),
        "torchvision": version_of("torchvision"),
        "onnx": version_of("onnx"),
        "onnxruntime": version_of("onnxruntime"),
        "onnxslim": version_of("onnxslim"),
        "onnxscript": version_of("onnxscript"),
        "numpy": np.__version__,
    }


def _one_line(exc: BaseException) -> str:
    return one_line(exc, 160)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter chatter (progress lines, tracer warnings) so the CLI output stays readable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield


# --------------------------------------------------------------------------------------------- reference data
def make_reference_inputs(
    contract: Contract, n: int, *, images: Sequence[str | Path | np.ndarray] | None = None, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """``n`` deterministic input samples for ``contract``, batched on axis 0.

    Real photos (the given images, else scikit-image's bundled photos) go through
    :func:`edgecv.tasks.preprocess.preprocess` so the samples look like what the model will see; beyond the
    photos available, seeded crops/flips of them are added. Without photos (no scikit-image or OpenCV, or an
    input that is not 1 or 3 channels) the samples are seeded noise.

    Returns:
        ``(array, info)``; ``info`` says how they were made (``kind``: ``photos``/``noise``, ``images``, ``seed``).
    """
    rng = np.random.default_rng(seed)
    static_b = 1 if contract.dynamic_batch else contract.input_shape[0]
    n = -(-n // static_b) * static_b  # a static batch needs whole batches
    per_sample = [1, *contract.input_shape[1:]]
    photos: list[tuple[str, np.ndarray]] = []
    notice = None
    if contract.channels in (1, 3):
        try:
            photos = _load_photos(images)
        except EdgecvError:
            raise
        except (ImportError, OSError) as exc:
            notice = f"reference inputs are seeded noise: no photos ({_one_line(exc)})"
    else:
        notice = f"reference inputs are seeded noise: a {contract.channels}-channel input is not a photo"
    if photos:
        from edgecv.tasks.preprocess import preprocess

        try:
            xs, used, sources = [], [], []
            for i in range(n):
                label, img = photos[i % len(photos)]
                if i >= len(photos):  # deterministic variants once every photo is used
                    img, how = _variant(img, rng)
                    label = f"{label}[{how}]"
                img = _shrink(img, contract)
                x, _ = preprocess(img, contract)
                xs.append(x)
                used.append(label)
                sources.append(img)
            # source_images: the BGR images the inputs were preprocessed from (saved in reference.npz, so validate
            # can re-run the contract's preprocessing on them: a wrong colour order or scale in the bundle shows)
            return np.concatenate(xs, axis=0), {
                "kind": "photos",
                "images": used,
                "seed": seed,
                "source_images": sources,
            }
        except MissingDependencyError as exc:
            notice = f"reference inputs are seeded noise: {exc}"
    if contract.dtype == "uint8":
        arr = rng.integers(0, 256, size=(n, *per_sample[1:]), dtype=np.uint8)
    else:
        arr = rng.standard_normal((n, *per_sample[1:])).astype(contract.dtype)
    info: dict[str, Any] = {"kind": "noise", "seed": seed}
    if notice:
        info["notice"] = notice
    return arr, info


def _load_photos(images: Sequence[str | Path | np.ndarray] | None) -> list[tuple[str, np.ndarray]]:
    """BGR uint8 photos: the given ones, or scikit-image's bundled samples."""
    out: list[tuple[str, np.ndarray]] = []
    if images:
        for i, im in enumerate(images):
            if isinstance(im, np.ndarray):
                out.append((f"array{i}", im))
                continue
            try:
                arr = read_image(im)
            except DataError as exc:
                raise ConfigError(f"reference image: {exc}") from None
            out.append((Path(im).name, arr))
        return out
    import skimage.data as skd

    for nm in REFERENCE_PHOTOS:
        img = getattr(skd, nm)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append((nm, np.ascontiguousarray(img[..., :3][..., ::-1])))  # skimage is RGB; preprocess wants BGR
    return out


def _shrink(img: np.ndarray, contract: Contract) -> np.ndarray:
    """``img`` reduced (area interpolation) to at most twice the model input on its longer side, so the source
    images saved in reference.npz stay small; the reference input is preprocessed from this very image."""
    import cv2

    h, w = img.shape[:2]
    f = 2.0 * max(contract.hw) / max(h, w)
    if f >= 1.0:
        return img
    return np.ascontiguousarray(
        cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    )


def _variant(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    h, w = img.shape[:2]
    f = float(rng.uniform(0.6, 0.9))
    ch, cw = max(1, int(h * f)), max(1, int(w * f))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = img[y : y + ch, x : x + cw]
    flip = bool(rng.integers(0, 2))
    if flip:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop), f"crop{y},{x},{ch}x{cw}{',flip' if flip else ''}"


def _extra_inputs(contract: Contract | None, x: np.ndarray) -> dict[str, np.ndarray]:
    """Inputs beside the image that the host makes per batch (R-CNN / Fast R-CNN rois from selective search)."""
    if contract is None:
        return {}
    from edgecv.tasks.decode import extra_inputs

    return extra_inputs(contract, x)


def _torch_outputs(
    module: Any,
    inputs: np.ndarray,
    chunk: int,
    output_names: Sequence[str] | None,
    contract: Contract | None = None,
) -> dict[str, np.ndarray]:
    import torch

    parts: list[list[tuple[str, Any]]] = []
    with torch.inference_mode():
        for i in range(0, len(inputs), chunk):
            try:
                x = inputs[i : i + chunk].copy()
                more = [torch.from_numpy(v) for v in _extra_inputs(contract, x).values()]
                y = module(torch.from_numpy(x), *more)
            except Exception as exc:
                raise ExportError(
                    f"the model failed on a {list(inputs[i : i + chunk].shape)} input: "
                    f"{_one_line(exc)}; check --input-shape"
                ) from exc
            parts.append(named_outputs(y))
    names = [n for n, _ in parts[0]]
    if output_names:
        if len(output_names) != len(names):
            raise ConfigError(
                f"output-names: the model has {len(names)} outputs ({', '.join(names)}), got {len(output_names)} names"
            )
        names = list(output_names)
    if len(set(names)) != len(names):
        raise ConfigError(f"output-names: expected unique names, got {names}")
    return {nm: np.concatenate([p[j][1].detach().cpu().numpy() for p in parts], axis=0) for j, nm in enumerate(names)}


def _guess_task(contract: Contract, outputs: dict[str, np.ndarray]) -> tuple[Contract, str | None]:
    """classify for one (N, K) output, segment for one (N, K, H, W) output at input resolution."""
    if len(outputs) != 1:
        return contract, None
    ((name, y),) = outputs.items()
    if y.ndim == 2 and y.shape[1] > 1:
        return (
            contract.model_copy(update={"task": "classify", "decode": {"activation": "softmax"}}),
            f"task guessed as classify from output '{name}' {list(y.shape)}; set --task to override",
        )
    if y.ndim == 4 and tuple(y.shape[2:]) == contract.hw and y.shape[1] > 1:
        return (
            contract.model_copy(update={"task": "segment", "decode": {"activation": "argmax"}}),
            f"task guessed as segment from output '{name}' {list(y.shape)}; set --task to override",
        )
    return contract, None


def _apply_rewrites(module: Any, names: list[str], sample: Any, passes: PassRunner | None) -> tuple[Any, Any]:
    if passes is None:
        raise MissingDependencyError(
            f"--rewrite {', '.join(names)}: expected a pass runner (passes=edgecv.rewrite.apply_passes), found none"
        )
    return passes(module, names, sample)


# --------------------------------------------------------------------------------------------- export proper
def _export(
    module: Any,
    sample: Any,
    path: Path,
    *,
    opset: int,
    input_name: str,
    output_names: list[str],
    contract: Contract,
    large: bool,
    extra: dict[str, np.ndarray] | None = None,
) -> tuple[Any, str, str | None]:
    """Export with dynamo, else TorchScript. Returns ``(proto or None when written with external data,
    exporter, fallback notice)``. ``extra``: sample values of inputs beside the image (R-CNN's ``rois``), exported
    as further graph inputs with a dynamic first dimension, as is every output's (one row per proposal)."""
    import torch

    extra = extra or {}
    args = (sample, *(torch.from_numpy(v) for v in extra.values()))
    in_names = [input_name, *extra]
    lo, _, hi = contract.batch_range
    dynamic = contract.dynamic_batch
    dyn_error = None
    # a module may say up front that it needs the TorchScript exporter (e.g. an in-graph NonMaxSuppression symbolic):
    # trying dynamo first would only cost a failed trace
    torchscript_only = getattr(module, "onnx_exporter", None) == "torchscript"
    if opset < 18:
        dyn_error = f"opset {opset} < 18, which the dynamo exporter needs"
    elif torchscript_only or extra:
        torchscript_only = True
        dyn_error = f"{type(module).__name__} exports with the TorchScript exporter only"
    else:
        try:
            dynamic_shapes = ({0: torch.export.Dim("batch", min=lo, max=hi)},) if dynamic else None
            with _quiet():
                prog = _torch_onnx_export(
                    module,
                    (sample,),
                    None,
                    dynamo=True,
                    opset_version=opset,
                    input_names=[input_name],
                    output_names=output_names,
                    dynamic_shapes=dynamic_shapes,
                    verbose=False,
                    optimize=True,
                )
            if large:
                prog.save(str(path), external_data=True)
                return None, "dynamo", None
            return prog.model_proto, "dynamo", None
        except Exception as exc:  # noqa: BLE001 - any dynamo failure falls back to the TorchScript exporter
            dyn_error = _one_line(exc)

    notice = (
        f"{dyn_error}; used the TorchScript exporter (dynamo=False)"
        if torchscript_only
        else f"dynamo exporter failed ({dyn_error}); used the TorchScript exporter (dynamo=False)"
    )
    axes = {n: {0: "batch"} for n in [input_name, *output_names]} if dynamic else None
    if extra:  # per-proposal inputs and outputs: their row count changes with every image
        axes = {
            **({input_name: {0: "batch"}} if dynamic else {}),
            **{n: {0: "num_rois"} for n in [*extra, *output_names]},
        }
    try:
        with _quiet():
            _torch_onnx_export(
                module,
                args,
                str(path),
                dynamo=False,
                opset_version=min(opset, 20),
                input_names=in_names,
                output_names=output_names,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    except Exception as exc:
        raise ExportError(
            f"ONNX export failed with both exporters: dynamo: {dyn_error}; TorchScript: {_one_line(exc)}"
        ) from exc
    import onnx

    if large or _file_bytes(path) > EXTERNAL_DATA_BYTES:
        _move_to_external(path)
        return None, "torchscript", notice
    return onnx.load(str(path)), "torchscript", notice


def _torch_onnx_export(*args: Any, **kwargs: Any) -> Any:
    """The one call of ``torch.onnx.export`` in edgecv (an indirection so tests can make one exporter fail)."""
    import torch

    return torch.onnx.export(*args, **kwargs)


#: the exporters :func:`export_onnx` takes one at a time (``export_model`` tries dynamo, then TorchScript)
SINGLE_EXPORTERS = ("torchscript", "dynamo")


def export_onnx(
    model: Any,
    example: Any,
    path: str | Path,
    exporter: str = "torchscript",
    opset: int = 17,
    num_outputs: int = 1,
    *,
    check: bool = True,
) -> Path:
    """Export ``model`` (eval mode) at the fixed shape of ``example`` with one exporter to one self-contained ONNX
    file: input ``input`` (more inputs named by the model's ``input_names``), outputs ``output`` (or ``output0``, ``output1`` …). No bundle, contract or fallback:
    for measuring a model (the zoo check, the rewrite latency table); :func:`export_model` makes bundles.

    Args:
        model: a ``torch.nn.Module``.
        example: the input tensor, or a tuple of them for a model with more inputs (named after the model's
            ``input_names``, e.g. R-CNN's ``input`` and ``rois``).
        path: destination ``.onnx`` file.
        exporter: ``torchscript`` (``dynamo=False``) or ``dynamo``.
        opset: ONNX opset version (17 and 18 are tested).
        num_outputs: how many tensors the model returns.
        check: verify the written file is a valid ONNX model at ``opset`` (:func:`verify_onnx`).

    Raises:
        ConfigError: unknown exporter.
        ExportError: torch.onnx.export failed (the message carries the first line of the reason), or the check.
    """
    import logging

    torch = lazy_import("torch")
    if exporter not in SINGLE_EXPORTERS:
        raise ConfigError(f"exporter: expected one of {', '.join(SINGLE_EXPORTERS)}, got '{exporter}'")
    path = Path(path)
    names = ["output"] if num_outputs == 1 else [f"output{i}" for i in range(num_outputs)]
    args = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    in_names = list(getattr(model, "input_names", ["input"]))[: len(args)] if len(args) > 1 else ["input"]
    kwargs: dict[str, Any] = {"input_names": in_names, "output_names": names, "opset_version": opset}
    if exporter == "dynamo":
        kwargs.update(dynamo=True, external_data=False, verbose=False)
    else:
        kwargs.update(dynamo=False, do_constant_folding=True)
    # the exporters log version-conversion tracebacks; the file is judged by the check below instead
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with _quiet(), torch.no_grad():
            _torch_onnx_export(model.eval(), args, str(path), **kwargs)
    except Exception as exc:  # the exporters raise many types; report one line
        raise ExportError(
            f"torch.onnx.export ({exporter}, opset {opset}) failed: {one_line(exc, 200, with_type=False)}"
        ) from exc
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    if check:
        verify_onnx(path, exporter, opset)
    return path


def verify_onnx(path: Path, exporter: str, opset: int) -> None:
    """Fail unless the file is a valid ONNX model at the requested opset.

    The dynamo exporter builds opset 18 and converts down; when that conversion fails it keeps opset 18 and only
    logs it (torch 2.14), and a "successful" conversion can still emit an invalid node (e.g. opset-18 ``Split``
    attributes at opset 17), so both are checked here.
    """
    onnx = lazy_import("onnx")
    proto = onnx.load(str(path), load_external_data=False)
    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise ExportError(
            f"torch.onnx.export ({exporter}) wrote opset {got}, not the requested {opset} "
            "(torch's version conversion failed)"
        )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(
            f"torch.onnx.export ({exporter}, opset {opset}) wrote an invalid model: "
            f"{one_line(exc, 200, with_type=False)}"
        ) from exc


def _file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file())


def _move_to_external(path: Path) -> None:
    """Gather whatever the exporter wrote (one file or one per tensor) into ``model.onnx.data``."""
    import onnx

    m = onnx.load(str(path))
    for p in list(path.parent.iterdir()):
        if p != path and p.name not in (REFERENCE_FILE,):
            p.unlink()
    onnx.save_model(
        m,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=ONNX_DATA_FILE,
        size_threshold=1024,
    )


def _simplify(proto: Any) -> tuple[Any, bool, str | None]:
    try:
        onnxslim = lazy_import("onnxslim", "torch")
    except MissingDependencyError as exc:
        return proto, False, f"onnxslim skipped: {exc}"
    try:
        with _quiet():
            slim = onnxslim.slim(proto)
    except Exception as exc:  # noqa: BLE001 - a simplifier bug must not lose the export
        return proto, False, f"onnxslim failed ({_one_line(exc)}); the unsimplified graph is kept"
    if slim is None:
        return proto, False, "onnxslim returned nothing; the unsimplified graph is kept"
    return slim, True, None


def _metadata(contract: Contract, source: LoadedModel, exporter: str, opset: int) -> dict[str, str]:
    return {
        CONTRACT_KEY: contract.to_json(),
        "edgecv.version": __version__,
        "edgecv.exporter": exporter,
        "edgecv.source": str(source.source_info.get("spec", "")),
        "edgecv.task": contract.task,
    }


def _set_metadata(model: Any, meta: dict[str, str], source: LoadedModel, exporter: str, opset: int) -> None:
    # drop the exporter's own props that collide, then add ours; other props (pkg.torch.*) are kept
    keep = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.add(key=p.key, value=p.value)
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    torch_v = version_of("torch")
    model.producer_name = "edgecv"
    model.producer_version = __version__
    model.model_version = 1
    model.doc_string = (
        f"{source.name} exported by edgecv {__version__} from {source.source_info.get('spec')} "
        f"with torch {torch_v} ({exporter} exporter, opset {opset})"
    )


def _check(proto: Any, path: Path | None) -> None:
    import onnx

    target = proto if proto is not None else str(path)
    try:
        onnx.checker.check_model(target, full_check=True)
        return
    except onnx.checker.ValidationError as exc:
        err = exc
    except Exception as exc:  # noqa: BLE001 - full_check's strict shape inference trips on some valid graphs
        try:
            onnx.checker.check_model(target)
            return
        except onnx.checker.ValidationError as exc2:
            err = exc2
        except Exception:  # noqa: BLE001
            raise ExportError(f"onnx checker failed: {_one_line(exc)}") from exc
    raise ExportError(f"the exported ONNX model is invalid (onnx checker): {_one_line(err)}") from err


# --------------------------------------------------------------------------------------------- parity
def _parity(
    onnx_path: Path, contract: Contract, inputs: np.ndarray, ref: dict[str, np.ndarray], chunk: int
) -> tuple[list[dict[str, Any]], bool | None]:
    """ONNX Runtime (CPU) vs the PyTorch reference outputs, judged by the fp32 tolerance of ``edgecv validate``."""
    try:
        ort = lazy_import("onnxruntime")
    except MissingDependencyError:
        return [], None
    from edgecv.validate.compare import compare_outputs, judge, tolerance_for

    so = ort.SessionOptions()
    # small, predictable thread use: this runs once per export on machines that may be shared
    so.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"ONNX Runtime cannot load the exported model: {_one_line(exc)}") from exc
    names = list(ref)
    got: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(0, len(inputs), chunk):
        x = inputs[i : i + chunk]
        outs = sess.run(names, {contract.input_name: x, **_extra_inputs(contract, x)})
        for n, o in zip(names, outs):
            got[n].append(o)
    merged = {n: np.concatenate(v, axis=0) for n, v in got.items()}
    tol = tolerance_for("fp32")
    cmps = [judge(c, tol) for c in compare_outputs(ref, merged, contract.task)]
    return [c.to_dict() for c in cmps], all(bool(c.passed) for c in cmps)
