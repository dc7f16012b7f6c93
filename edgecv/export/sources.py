"""Where a model comes from: a zoo name, ``torchvision:<name>``, ``timm:<name>``, ``file.py:factory``, a checkpoint, a TorchScript
archive or a ``torch.export`` ``.pt2`` program.

Every source gives a :class:`LoadedModel`: the module in eval mode, the contract defaults that go with it, and the
provenance the bundle manifest records so that the torch runner (and ``validate``'s live reference) can rebuild
exactly the same module later (:func:`load_model_from_manifest`).

Checkpoints are never unpickled with code execution: ``torch.load(weights_only=True)`` only, and archives are
inspected as zip files (their member names) before anything in them is loaded. A pickled ``nn.Module`` or any
pickle that names a Python callable is refused.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecv._io import sha256_file
from edgecv._lazy import lazy_import
from edgecv.bundle import Contract
from edgecv.errors import ConfigError, EdgecvError, ModelSourceError, UnknownNameError, one_line
from edgecv.export.loaded import LoadedModel, PassRunner

if TYPE_CHECKING:
    from torch import nn

    from edgecv.bundle import Manifest

#: suffixes treated as checkpoint / archive files
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pt2", ".ts", ".jit", ".torchscript")
TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
ULTRALYTICS_PREFIX = "ultralytics:"
#: torch seed set while a model is built, so that random-init models rebuild identically from a manifest
INIT_SEED = 0
# keys under which training scripts (Lightning, timm, torchvision references, edgecv train) nest the state dict
_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema", "ema", "net")
# keys that name the architecture inside a checkpoint dict (edgecv train, timm, torchvision references)
_ARCH_KEYS = ("arch", "model_name", "architecture")

SPEC_FORMS = (
    "a zoo name (see 'edgecv models'), torchvision:<name>, timm:<name>, path/to/file.py:factory, "
    "a state-dict checkpoint (.pt/.pth/.ckpt with --arch), a TorchScript archive or a torch.export .pt2"
)
#: the ``format`` of a model file written by ``edgecv rewrite -o`` (:func:`edgecv.rewrite.compare.save_rewritten`)
REWRITE_FORMAT = "edgecv.rewrite/1"


# --------------------------------------------------------------------------------------------- public API
def load_model(
    spec: str,
    *,
    weights: str | Path | None = None,
    input_shape: tuple[int, ...] | list[int] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    arch: str | None = None,
    trust_checkpoint: bool = False,
    passes: PassRunner | None = None,
) -> LoadedModel:
    """Load a model from any supported source.

    Args:
        spec: a zoo name (``resnet18``), ``torchvision:<name>``, ``timm:<name>`` (built with ``pretrained=False``;
            its contract from the model's ``pretrained_cfg``), ``path/to/file.py:factory``, a checkpoint file
            (``.pt/.pth/.ckpt``: a state dict, which needs ``arch``), a TorchScript archive, or a ``.pt2``
            ``torch.export`` program.
        weights: a local state-dict file loaded into the model built by ``spec`` (never downloaded).
        input_shape: ``(N, C, H, W)`` overriding the model's default input shape.
        model_kwargs: keyword arguments for the zoo variant / torchvision builder / factory.
        arch: the architecture (any ``spec`` form that builds a module) for a state-dict checkpoint.
        trust_checkpoint: allow unpickling an Ultralytics checkpoint (a full pickle: loading it runs code from the
            file); every other checkpoint is loaded with ``weights_only=True`` regardless.
        passes: the pass runner (:data:`PassRunner`, e.g. ``edgecv.rewrite.apply_passes``) that rebuilds a model
            file written by ``edgecv rewrite -o``; without one such a file is refused.

    Returns:
        A :class:`LoadedModel` with the module in eval mode.

    Raises:
        ModelSourceError: the source is missing, malformed, refused (unsafe pickle) or builds no ``nn.Module``.
        UnknownNameError: an unknown zoo / torchvision name (lists the choices).
    """
    kwargs = dict(model_kwargs or {})
    spec = str(spec).strip()
    if not spec:
        raise ModelSourceError(f"expected a model source: {SPEC_FORMS}; got an empty string")
    shape = _check_shape(input_shape)
    if weights is not None:
        _existing_file(weights, "weights file")  # before the (slow) torch import and model build
    path_part = spec.rpartition(":")[0] if _is_file_factory(spec) else spec
    if (_is_file_factory(spec) or _looks_like_path(spec)) and not Path(path_part).expanduser().exists():
        raise ModelSourceError(f"model file '{path_part}' does not exist (from '{spec}'; expected {SPEC_FORMS})")
    torch = lazy_import("torch")
    # builders without weights draw random init; a fixed seed makes the rebuild in load_model_from_manifest (the
    # torch runner, validate's live reference) produce the very weights that were exported
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        loaded = _dispatch(
            spec, weights=weights, shape=shape, kwargs=kwargs, arch=arch, trust=trust_checkpoint, passes=passes
        )
    loaded.source_info.setdefault("init_seed", INIT_SEED)
    return loaded


def _dispatch(
    spec: str,
    *,
    weights: str | Path | None,
    shape: tuple[int, ...] | None,
    kwargs: dict[str, Any],
    arch: str | None,
    trust: bool = False,
    passes: PassRunner | None = None,
) -> LoadedModel:
    if spec.startswith(ULTRALYTICS_PREFIX):
        from edgecv.export.adapters.ultralytics import load_ultralytics

        loaded = load_ultralytics(spec[len(ULTRALYTICS_PREFIX) :], kwargs, trust_checkpoint=trust)
    elif spec.startswith(TORCHVISION_PREFIX):
        loaded = _load_torchvision(spec[len(TORCHVISION_PREFIX) :], kwargs)
    elif spec.startswith(TIMM_PREFIX):
        loaded = _load_timm(spec[len(TIMM_PREFIX) :], kwargs)
    elif _is_file_factory(spec):
        loaded = _load_file_factory(spec, kwargs)
    elif spec.endswith(".py"):
        path = Path(spec).expanduser()
        found = _functions_in_file(path) if path.is_file() else []
        hint = f"; functions in it: {', '.join(found)}" if found else ""
        raise ModelSourceError(
            f"expected 'path/to/file.py:factory' naming the function that builds the model, got '{spec}'{hint}"
        )
    elif Path(spec).expanduser().is_file():
        return _load_checkpoint_file(
            Path(spec).expanduser().resolve(),
            shape=shape,
            kwargs=kwargs,
            arch=arch,
            weights=weights,
            trust=trust,
            passes=passes,
        )
    elif _looks_like_path(spec):
        raise ModelSourceError(f"model file '{spec}' does not exist (expected {SPEC_FORMS})")
    else:
        loaded = _load_zoo(spec, kwargs)

    if trust:
        raise ConfigError(
            f"--trust-checkpoint: only used with an Ultralytics checkpoint (.pt), but the source is '{spec}'"
        )
    if arch is not None:
        raise ConfigError(
            f"--arch: only used with a state-dict checkpoint, but the source '{spec}' builds the model "
            "itself; pass the checkpoint with --weights instead"
        )
    if weights is not None:
        wpath = _existing_file(weights, "weights file")
        _load_weights_into(loaded.module, wpath, what=loaded.name)
        loaded.source_info["weights"] = str(wpath)
        loaded.source_info["weights_sha256"] = sha256_file(wpath)
    if shape is not None:
        loaded.contract = loaded.contract.model_copy(update={"input_shape": list(shape)})
    loaded.module.eval()
    return loaded


#: source kinds the live reference may be rebuilt from with nothing but the manifest: registered names only
REGISTERED_KINDS = ("zoo", "torchvision", "timm", "ultralytics")
_REGISTERED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def load_model_from_manifest(
    manifest: Manifest,
    source: str | None = None,
    weights: str | Path | None = None,
    passes: PassRunner | None = None,
) -> nn.Module:
    """Rebuild the eager module a bundle was exported from.

    A bundle is data (DESIGN rule 15): nothing it names is imported or loaded from outside it. The module is
    rebuilt from ``manifest.provenance["source"]`` only when that is a registered name (a zoo model,
    ``torchvision:<name>``, ``timm:<name>``, ``ultralytics:<yaml shipped with Ultralytics>``) with no weights file;
    any other source (a ``file.py:factory``, a checkpoint, TorchScript, ``.pt2``, or weights from a file) is rebuilt
    only from what the caller names in this invocation (``source`` / ``weights``, i.e. ``--source`` / ``--weights``
    on the command line). A full-pickle checkpoint (Ultralytics ``best.pt``, exported with ``--trust-checkpoint``)
    is never unpickled here, not even when named by ``source``: trust given once at export does not carry over to
    a later command; its live reference comes from a ``file.py:factory`` the user names (their code loads it), else
    validate uses ``reference.npz``.

    Raises:
        ModelSourceError: nothing safe to rebuild from, a malformed record, or the model fails to build.
    """
    src = manifest.provenance.get("source")
    if not isinstance(src, dict) or not isinstance(src.get("spec"), str) or not src.get("spec"):
        if source is None:
            raise ModelSourceError(
                f"bundle '{manifest.name}' records no model source (manifest provenance.source); "
                "pass --model-source to name the model, or re-export it with 'edgecv export'"
            )
        src = {}
    kind = str(src.get("kind", ""))
    spec = str(src.get("spec", ""))
    kwargs = src.get("kwargs") or {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) and _plain_value(v) for k, v in kwargs.items()):
        raise ModelSourceError(
            f"bundle '{manifest.name}': provenance.source.kwargs: expected an object of plain "
            "values (numbers up to 1e6, short strings, booleans, lists of them)"
        )
    if source is not None:
        # the user named the model in this invocation: theirs to trust, as any Python import is; but it must be the
        # file the bundle was exported from, or the live reference is another model
        recorded = src.get("source_sha256")
        user_file = source.rpartition(":")[0] if _is_file_factory(source) else source
        if (
            recorded
            and Path(user_file).expanduser().is_file()
            and sha256_file(Path(user_file).expanduser()) != recorded
        ):
            raise ModelSourceError(
                f"--source: '{user_file}' differs from the model file the bundle was exported from "
                f"(sha256 {sha256_file(Path(user_file).expanduser())[:12]}…, recorded "
                f"{str(recorded)[:12]}…); the live PyTorch model would not be the exported one"
            )
        user_weights = str(weights) if weights is not None else None
        loaded = load_model(source, weights=user_weights, model_kwargs=kwargs or None, passes=passes)
    else:
        if kind not in REGISTERED_KINDS:
            shown = spec if len(spec) <= 80 else spec[:77] + "..."
            raise ModelSourceError(
                f"bundle '{manifest.name}' was exported from a {kind or 'unnamed'} source ({shown}); a bundle is data, "
                "so edgecv does not run or load files it names: pass --model-source with the model file you trust to "
                "rebuild the live PyTorch reference (reference.npz is used otherwise)"
            )
        name = (
            spec[len(TORCHVISION_PREFIX) :]
            if kind == "torchvision" and spec.startswith(TORCHVISION_PREFIX)
            else spec.split(":", 1)[1]
            if kind in ("timm", "ultralytics") and spec.startswith(f"{kind}:")
            else spec
        )
        if not _REGISTERED_NAME.match(name) or (kind == "zoo" and spec != name):
            raise ModelSourceError(
                f"bundle '{manifest.name}': provenance.source.spec: expected a registered "
                f"{kind} model name, found {spec[:80]!r}"
            )
        recorded_w = src.get("weights")
        if recorded_w and weights is None:
            raise ModelSourceError(
                f"bundle '{manifest.name}' was exported with weights from a file ({str(recorded_w)[:80]}); edgecv "
                "does not load files a bundle names: pass --weights with that file to rebuild the live reference"
            )
        if weights is not None:
            _check_recorded_file(str(weights), src.get("weights_sha256") if recorded_w else None, "weights file")
        torch = lazy_import("torch")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            if kind == "torchvision":
                loaded = _load_torchvision(name, dict(kwargs))
            elif kind == "timm":
                loaded = _load_timm(name, dict(kwargs))
            elif kind == "ultralytics":
                if not name.endswith((".yaml", ".yml")):
                    raise ModelSourceError(
                        f"bundle '{manifest.name}': provenance.source.spec: expected an "
                        f"Ultralytics model yaml name, found {spec[:80]!r}"
                    )
                loaded = load_model(ULTRALYTICS_PREFIX + name, model_kwargs=kwargs or None)
            else:
                loaded = _load_zoo(name, dict(kwargs))
        if weights is not None:
            wpath = _existing_file(weights, "weights file")
            _load_weights_into(loaded.module, wpath, what=loaded.name)
        loaded.module.eval()
    decode = manifest.contract.decode or {}
    if manifest.contract.task == "detect" and decode.get("nms") in ("graph", "host", "none"):
        # the bundle holds the detector with its post-processing wrapper: rebuild the same wrapper
        from edgecv.export.detection import prepare_detection_export

        loaded = prepare_detection_export(
            loaded,
            nms=decode["nms"],
            score_threshold=float(decode.get("score_threshold", 0.001)),
            iou_threshold=float(decode.get("iou_threshold", 0.5)),
            max_det=int(decode.get("max_det", 100)),
            class_names=list(manifest.contract.class_names) or None,
            decode_spec=decode.get("declarative") or None,
        )
    rewrite = manifest.provenance.get("rewrite") or {}
    names = rewrite.get("passes") or [] if isinstance(rewrite, dict) else []
    if not isinstance(names, list) or not all(isinstance(p, str) for p in names):
        raise ModelSourceError(f"bundle '{manifest.name}': provenance.rewrite.passes: expected a list of pass names")
    if names:
        # the bundle holds the rewritten model: re-apply the same passes (seeded, so lossy ones that draw new
        # weights draw the same ones) so the eager reference is the model that was exported
        if passes is None:
            raise ModelSourceError(
                f"bundle '{manifest.name}' was exported from a rewritten model (passes {', '.join(names)}): "
                "expected a pass runner (passes=edgecv.rewrite.apply_passes) to rebuild it, found none"
            )
        torch = lazy_import("torch")
        shape = [1, *manifest.contract.input_shape[1:]]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            sample = torch.randn(*shape)
            module, _ = passes(loaded.module, list(names), sample)
        return module.eval()
    return loaded.module


def _plain_value(v: Any, depth: int = 0) -> bool:
    """A model kwarg a manifest may carry: JSON scalars of sane size (a bundle must not ask for a 1e12-wide layer)."""
    if v is None or isinstance(v, bool):
        return True
    if isinstance(v, (int, float)):
        return abs(v) <= 1e6
    if isinstance(v, str):
        return len(v) <= 256
    if isinstance(v, list) and depth < 2:
        return len(v) <= 64 and all(_plain_value(x, depth + 1) for x in v)
    return False


def parse_input_shape(text: str) -> tuple[int, int, int, int]:
    """``"1x3x224x224"`` (or ``"3x224x224"``, batch 1) → ``(1, 3, 224, 224)``; raises :class:`ConfigError`."""
    parts = re.split(r"[x,× ]+", text.strip().lower())
    try:
        dims = [int(p) for p in parts if p]
    except ValueError:
        dims = []
    if len(dims) == 3:
        dims = [1, *dims]
    if len(dims) != 4 or any(d <= 0 for d in dims):
        raise ConfigError(f"input-shape: expected NxCxHxW with positive integers like 1x3x224x224, got '{text}'")
    return dims[0], dims[1], dims[2], dims[3]


# --------------------------------------------------------------------------------------------- spec forms
def _is_file_factory(spec: str) -> bool:
    path, sep, fn = spec.rpartition(":")
    return bool(sep) and path.endswith(".py") and bool(fn)


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.lower().endswith(CHECKPOINT_SUFFIXES)


def _existing_file(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelSourceError(
            f"{what} '{path}' does not exist"
            if not p.exists()
            else f"{what}: expected a file, found a folder at '{path}'"
        )
    return p.resolve()


def _check_recorded_file(path: str, digest: str | None, what: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise ModelSourceError(
            f"the {what} recorded in the bundle, '{path}', no longer exists (moved or deleted); "
            "restore it there or re-export the bundle"
        )
    if digest and sha256_file(p) != digest:
        raise ModelSourceError(
            f"the {what} '{path}' changed since the bundle was exported (sha256 differs); "
            "the live PyTorch model would not be the exported one — re-export the bundle"
        )


def _check_shape(shape: tuple[int, ...] | list[int] | None) -> tuple[int, ...] | None:
    if shape is None:
        return None
    dims = tuple(int(d) for d in shape)
    if len(dims) != 4 or any(d <= 0 for d in dims):
        raise ConfigError(f"input-shape: expected 4 positive dims (N, C, H, W), got {list(shape)}")
    return dims


def _one_line(exc: BaseException) -> str:
    return one_line(exc, 400)


# --------------------------------------------------------------------------------------------- zoo
def _zoo_loaded() -> bool:
    try:
        from edgecv.zoo.catalog import load_families

        load_families()
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("edgecv.zoo"):
            return False
        raise
    return True


def _load_zoo(name: str, kwargs: dict[str, Any]) -> LoadedModel:
    from edgecv.zoo.catalog import create_model, model_cfg
    from edgecv.zoo.registry import MODELS

    has_zoo = _zoo_loaded()
    if not has_zoo or name not in MODELS:
        choices = ", ".join(MODELS.names()) if has_zoo and len(MODELS) else "(the zoo has no models)"
        raise UnknownNameError(f"unknown model '{name}': expected {SPEC_FORMS}; zoo models: {choices}")
    cfg = model_cfg(name)
    try:
        module = create_model(name, **kwargs)
    except EdgecvError:
        raise
    except TypeError as exc:
        raise ModelSourceError(f"zoo model '{name}' does not accept {sorted(kwargs)}: {_one_line(exc)}") from exc
    _require_module(module, f"zoo model '{name}'")
    c, h, w = (int(d) for d in cfg.get("input_size", (3, 224, 224)))
    num_classes = int(kwargs.get("num_classes", cfg.get("num_classes", 0)) or 0)
    task = cfg.get("task", "classify")
    contract = Contract(
        task=task,
        input_shape=[1, c, h, w],
        mean=list(cfg.get("mean", Contract().mean)),
        std=list(cfg.get("std", Contract().std)),
        resize=cfg.get("resize", "stretch"),
        class_names=list(cfg.get("class_names", [])),
        decode=dict(cfg.get("decode") or default_decode(task)),
        **({"color": cfg["color"]} if "color" in cfg else {}),
    )
    if contract.class_names and num_classes and len(contract.class_names) != num_classes:
        contract.class_names = []
    info = {"kind": "zoo", "spec": name, "kwargs": kwargs, "weights": None}
    ref = cfg.get("reference_split")  # a shipped model: reference inputs from the split its metric was measured on
    reference = None
    if isinstance(ref, dict) and kwargs.get("pretrained", True) is not False:

        def reference(n: int, r: dict[str, Any] = ref) -> tuple[list[Any], str]:
            from edgecv.data.synth import val_images

            return (
                val_images(r["task"], n, size=int(r["size"]), seed=int(r.get("seed", 0))),
                f"synthetic {r['task']} val split (seed {r.get('seed', 0)}, {r['size']} px) the shipped "
                "weights were measured on",
            )

    return LoadedModel(module=module, contract=contract, source_info=info, name=name, reference=reference)


def default_decode(task: str) -> dict[str, Any]:
    return {"classify": {"activation": "softmax"}, "segment": {"activation": "argmax"}}.get(task, {})


# --------------------------------------------------------------------------------------------- torchvision
def _load_torchvision(name: str, kwargs: dict[str, Any]) -> LoadedModel:
    tvm = lazy_import("torchvision.models", "torch")
    available = tvm.list_models()
    if name not in available:
        import difflib

        close = difflib.get_close_matches(name, available, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownNameError(f"unknown torchvision model '{name}'{hint}; expected one of: {', '.join(available)}")
    if "weights" in kwargs:
        # get_model would download them; edgecv only loads local files
        raise ConfigError("torchvision models are built with weights=None; pass a local state dict with --weights")
    builder = tvm.get_model_builder(name)
    # what the user asked for is recorded (and rebuilt from the manifest); the offline substitutions are re-derived
    # on every build, so a rebuild on a machine with the backbone weights cached is the same call as the export
    build_kwargs, notes = _offline_kwargs(builder, kwargs, f"torchvision:{name}")
    try:
        module = builder(weights=None, **build_kwargs)
    except TypeError as exc:
        raise ModelSourceError(
            f"torchvision model '{name}' does not accept {sorted(kwargs)}: {_one_line(exc)}"
        ) from exc
    except OSError as exc:  # a download that the offline check could not foresee (URLError is an OSError)
        raise ModelSourceError(
            f"torchvision model '{name}' tried to download weights and failed ({_one_line(exc)}); "
            "pass --kwarg weights_backbone=null to build it with random weights"
        ) from exc
    _require_module(module, f"torchvision model '{name}'")
    task: Any = "classify"
    if name in tvm.list_models(module=tvm.segmentation):
        task = "segment"
        module = segmentation_out_head(module)
    elif name in tvm.list_models(module=tvm.detection):
        task = "detect"
    contract = Contract(task=task, decode=default_decode(task))
    if task == "detect":
        from edgecv.export.adapters.torchvision import default_input_hw

        h, w = default_input_hw(module)  # the size its transform does not resize (SSD: its fixed size)
        contract = contract.model_copy(update={"input_shape": [1, 3, h, w]})
    # the default weights' transforms say the input size and normalisation these models are trained with; reading
    # them downloads nothing
    try:
        tf = tvm.get_model_weights(name).DEFAULT.transforms()
        crop = getattr(tf, "crop_size", None)
        size = int(crop[0]) if crop else None
        resize_to = getattr(tf, "resize_size", None)
        upd: dict[str, Any] = {"mean": [float(v) for v in tf.mean], "std": [float(v) for v in tf.std]}
        if size and task == "classify":
            upd["input_shape"] = [1, 3, size, size]
            if resize_to and int(resize_to[0]) > size:
                upd["resize"] = "center_crop"
                upd["crop_ratio"] = size / int(resize_to[0])
        contract = contract.model_copy(update=upd)
    except Exception:  # noqa: BLE001, S110 - models without weight enums keep the ImageNet defaults
        pass
    info = {"kind": "torchvision", "spec": TORCHVISION_PREFIX + name, "kwargs": kwargs, "weights": None}
    return LoadedModel(module=module, contract=contract, source_info=info, name=name, notes=notes)


#: builder keyword arguments that name pretrained weights a builder would download (torchvision, timm-style)
_WEIGHT_KWARGS = ("weights_backbone",)


def _weights_on_disk(weights: Any) -> bool:
    """True when a torchvision ``WeightsEnum`` value's file is already in the torch hub cache (no download)."""
    url = getattr(weights, "url", None)
    if not isinstance(url, str):
        return False
    from torch.hub import get_dir

    return (Path(get_dir()) / "checkpoints" / Path(url.split("?")[0]).name).is_file()


def _offline_kwargs(builder: Any, kwargs: dict[str, Any], what: str) -> tuple[dict[str, Any], list[str]]:
    """The keyword arguments that build ``builder`` without a network: every weights argument the caller left at a
    default that names downloadable weights not on disk is set to ``None``.

    Returns:
        ``(kwargs for the call, one-line notices)``: one notice per substituted argument, for the bundle notices.
        Weights already in the torch hub cache are left alone (the builder loads them without a download).
    """
    out = dict(kwargs)
    notes: list[str] = []
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return out, notes
    for key in _WEIGHT_KWARGS:
        p = params.get(key)
        if p is None or key in out or p.default is None or p.default is inspect.Parameter.empty:
            continue
        if _weights_on_disk(p.default):
            continue
        out[key] = None
        notes.append(
            f"{what}: {key} defaults to {p.default} which is not on disk; built with random {key} "
            f"instead (edgecv downloads nothing; put the file in the torch hub cache or pass --weights)"
        )
    return out, notes


class _SegmentOutHead:
    """Mixin for torchvision segmentation models: ``forward`` returns the ``out`` head alone (``aux`` is a
    training-time head). Applied by swapping the instance's class, so the state dict keeps torchvision's keys."""

    def forward(self, x: Any) -> Any:
        return super().forward(x)["out"]  # type: ignore[misc]


_OUT_HEAD_CLASSES: dict[type, type] = {}


def segmentation_out_head(module: Any) -> Any:
    """A torchvision segmentation model (dict outputs ``out`` / ``aux``) whose forward returns ``out`` only."""
    cls = type(module)
    if isinstance(module, _SegmentOutHead):
        return module
    sub = _OUT_HEAD_CLASSES.get(cls)
    if sub is None:
        sub = _OUT_HEAD_CLASSES[cls] = type(cls.__name__, (_SegmentOutHead, cls), {"__module__": cls.__module__})
    module.__class__ = sub
    return module


# --------------------------------------------------------------------------------------------- timm
#: create_model arguments that would download weights or read a file: edgecv takes weights only from --weights
_TIMM_REFUSED = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")


def _load_timm(name: str, kwargs: dict[str, Any]) -> LoadedModel:
    """``timm:<name>``: ``timm.create_model(name, pretrained=False, **kwargs)`` (never a hub download; weights
    come from ``--weights``), its contract from the model's ``pretrained_cfg`` (:func:`timm_contract`)."""
    timm = lazy_import("timm", extra="timm")
    available = timm.list_models()
    if name not in available:
        import difflib

        close = difflib.get_close_matches(name, available, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownNameError(
            f"unknown timm model '{name}'{hint}; expected a name from timm.list_models() ({len(available)} models)"
        )
    refused = [k for k in _TIMM_REFUSED if k in kwargs]
    if refused:
        raise ConfigError(
            f"timm model kwargs: expected none of {', '.join(refused)} (edgecv builds timm models "
            "with pretrained=False and never downloads); pass a local state dict with --weights"
        )
    try:
        module = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        raise ModelSourceError(f"timm model '{name}' does not accept {sorted(kwargs)}: {_one_line(exc)}") from exc
    _require_module(module, f"timm model '{name}'")
    contract, notes = timm_contract(module)
    info = {"kind": "timm", "spec": TIMM_PREFIX + name, "kwargs": kwargs, "weights": None}
    return LoadedModel(
        module=module,
        contract=contract,
        source_info=info,
        name=name,
        guess_task=contract.task == "generic",
        notes=notes,
    )


def timm_contract(module: Any) -> tuple[Contract, list[str]]:
    """The contract of a timm model from its ``pretrained_cfg``, as timm's eval transform
    (``create_transform(**resolve_data_config(model=m))``) feeds it: input size, ``crop_pct`` (short side resized
    to ``floor(size / crop_pct)``, then a centre crop), interpolation (Pillow's, antialiased), mean/std, and the
    ImageNet class names timm ships when the head has that many classes. Reads nothing from the network.

    Returns:
        the contract and notices (what could not be expressed exactly).
    """
    import math

    from timm.data import resolve_data_config

    cfg = resolve_data_config(model=module)
    notes: list[str] = []
    c, h, w = (int(d) for d in cfg["input_size"])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    crop_mode = cfg.get("crop_mode") or "center"
    interp = str(cfg.get("interpolation") or "bilinear")
    if interp not in ("bilinear", "bicubic", "nearest", "lanczos"):
        notes.append(f"timm interpolation '{interp}' has no exact equivalent here; bicubic is used")
        interp = "bicubic"
    num_classes = int(getattr(module, "num_classes", 0) or 0)
    task = "classify" if num_classes > 0 else "generic"
    upd: dict[str, Any] = {
        "task": task,
        "input_shape": [1, c, h, w],
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "interpolation": interp,
        "antialias": True,
        "color": "GRAY" if c == 1 else "RGB",
        "decode": default_decode(task),
    }
    if c == 1:
        upd["mean"], upd["std"] = upd["mean"][:1], upd["std"][:1]
    # timm resizes the short side to floor(size / crop_pct) (one size for a square input): crop_ratio is chosen
    # so that size / crop_ratio is that integer, and edgecv's center_crop then resizes and crops exactly as timm
    scale = math.floor(min(h, w) / crop_pct)
    if crop_mode != "center" or h != w:
        notes.append(
            f"timm crop_mode '{crop_mode}' with input {h}x{w}: approximated by a centre crop of the short "
            "side resized to size / crop_pct"
        )
    if scale > min(h, w):
        upd["resize"] = "center_crop"
        upd["crop_ratio"] = min(h, w) / scale
    else:
        upd["resize"] = "stretch"  # crop_pct >= 1: the whole image, squashed to the input size
    names = _timm_class_names(module, num_classes)
    if names:
        upd["class_names"] = names
    return Contract(**upd), notes


def _timm_class_names(module: Any, num_classes: int) -> list[str]:
    """The class names timm ships for the model's label set (e.g. ImageNet-1k's WordNet lemmas, first lemma of
    each), when the head has exactly that many classes; else none."""
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(module)
        if not subset:
            return []
        info = ImageNetInfo(subset)
        if info.num_classes() != num_classes:
            return []
        return [str(info.index_to_description(i)).split(",")[0].strip()[:64] for i in range(num_classes)]
    except Exception:  # noqa: BLE001 - a timm without the label files: no names, the model still exports
        return []


# --------------------------------------------------------------------------------------------- file.py:factory
def _functions_in_file(path: Path) -> list[str]:
    """Top-level function names in a Python file, read with ``ast`` (no code runs)."""
    import ast

    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _import_file(path: Path) -> Any:
    digest = sha256_file(path)[:12]
    mod_name = f"edgecv_user_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    mod_spec = importlib.util.spec_from_file_location(mod_name, path)
    if mod_spec is None or mod_spec.loader is None:
        raise ModelSourceError(f"cannot import '{path}' as a Python module")
    module = importlib.util.module_from_spec(mod_spec)
    # registered before exec so dataclasses/typing inside the file can find their module; the file's folder goes on
    # sys.path so that it can import its sibling modules, as it would when run as a script
    sys.modules[mod_name] = module
    parent = str(path.parent)
    added = parent not in sys.path
    if added:
        sys.path.insert(0, parent)
    try:
        mod_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(mod_name, None)
        raise ModelSourceError(f"importing '{path}' failed: {_one_line(exc)}") from exc
    finally:
        if added and parent in sys.path:
            sys.path.remove(parent)
    return module


def _load_file_factory(spec: str, kwargs: dict[str, Any]) -> LoadedModel:
    path_str, _, fn_name = spec.rpartition(":")
    path = Path(path_str).expanduser()
    if not path.is_file():
        raise ModelSourceError(
            f"model file '{path_str}' does not exist (from '{spec}'; expected path/to/file.py:factory)"
        )
    path = path.resolve()
    module = _import_file(path)
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        found = [
            n
            for n, o in vars(module).items()
            if inspect.isfunction(o) and getattr(o, "__module__", None) == module.__name__
        ]
        raise ModelSourceError(f"'{path}' has no function '{fn_name}'; functions found: {', '.join(found) or '(none)'}")
    try:
        model = fn(**kwargs)
    except EdgecvError:
        raise
    except Exception as exc:
        raise ModelSourceError(f"{path.name}:{fn_name}({_fmt_kwargs(kwargs)}) raised {_one_line(exc)}") from exc
    _require_module(model, f"{path.name}:{fn_name}()")
    info = {
        "kind": "file",
        "spec": f"{path}:{fn_name}",
        "kwargs": kwargs,
        "weights": None,
        "source_sha256": sha256_file(path),
    }
    return LoadedModel(module=model, contract=Contract(task="generic"), source_info=info, name=fn_name, guess_task=True)


def _fmt_kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _require_module(obj: Any, what: str) -> None:
    from torch import nn

    if not isinstance(obj, nn.Module):
        raise ModelSourceError(
            f"{what}: expected a torch.nn.Module, got {type(obj).__module__}.{type(obj).__qualname__}"
        )


# --------------------------------------------------------------------------------------------- checkpoints
def archive_kind(path: Path) -> str:
    """What a model file is, from its zip member names only (no pickle is loaded).

    Returns:
        ``"torchscript"`` (``code/`` and ``constants.pkl``), ``"torch_export"`` (``archive_format`` of a ``.pt2``),
        ``"torch_save"`` (a ``torch.save`` zip with ``data.pkl``) or ``"legacy"`` (not a zip: old torch.save / raw
        pickle).
    """
    if not zipfile.is_zipfile(path):
        return "legacy"
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    tails = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if "archive_format" in tails or any(t.startswith("models/") and t.endswith(".json") for t in tails):
        return "torch_export"
    if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
        return "torchscript"
    if "data.pkl" in tails:
        return "torch_save"
    raise ModelSourceError(
        f"'{path}' is a zip archive but not a torch checkpoint, TorchScript archive or .pt2 "
        f"program (members: {', '.join(sorted(names)[:6])}…)"
    )


def _refusal(path: Path, exc: BaseException) -> ModelSourceError:
    text = str(exc)
    m = re.search(r"GLOBAL ([\w.]+)", text)
    found = f"it references the Python object {m.group(1)}" if m else "it is not a plain tensor/dict pickle"
    return ModelSourceError(
        f"refused to load '{path.name}': {found}, and loading it would run code from the file (edgecv loads "
        "checkpoints with torch.load(weights_only=True)); save model.state_dict() and pass --arch NAME, or export "
        "TorchScript (torch.jit.save) or a torch.export .pt2 program"
    )


def _safe_torch_load(path: Path | Any, label: Path) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refusal(label, exc) from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ModelSourceError(f"cannot read checkpoint '{label}': {_one_line(exc)}") from exc


def _load_checkpoint_file(
    path: Path,
    *,
    shape: tuple[int, ...] | None,
    kwargs: dict[str, Any],
    arch: str | None,
    weights: str | Path | None,
    trust: bool = False,
    passes: PassRunner | None = None,
) -> LoadedModel:
    kind = archive_kind(path)
    if kind in ("torch_save", "legacy"):
        from edgecv.export.adapters.ultralytics import is_ultralytics_checkpoint, load_checkpoint

        if is_ultralytics_checkpoint(path):
            if weights is not None or arch is not None or kwargs:
                raise ConfigError(
                    f"--weights / --arch / model kwargs do not apply to the Ultralytics checkpoint "
                    f"'{path.name}', which holds its own model"
                )
            loaded = load_checkpoint(path, trust_checkpoint=trust)
            if shape is not None:
                loaded.contract = loaded.contract.model_copy(update={"input_shape": list(shape)})
            return loaded
    if trust:
        raise ConfigError(
            f"--trust-checkpoint: only used with an Ultralytics checkpoint, but '{path.name}' is not "
            "one (other checkpoints load with weights_only=True)"
        )
    if weights is not None:
        raise ConfigError(
            f"--weights: the source '{path.name}' is itself a model file; pass the architecture as the "
            "source and this file as --weights, or the file as the source with --arch"
        )
    if kind in ("torchscript", "torch_export"):
        if arch is not None or kwargs:
            raise ConfigError(
                f"--arch / model kwargs do not apply to a {kind} archive ('{path.name}'), which holds its own graph"
            )
        loaded = _load_torchscript(path) if kind == "torchscript" else _load_pt2(path)
        if shape is not None:
            loaded.contract = loaded.contract.model_copy(update={"input_shape": list(shape)})
        return loaded

    obj = _safe_torch_load(path, path)
    if isinstance(obj, dict) and str(obj.get("format", "")).startswith("edgecv.rewrite/"):
        # written by `edgecv rewrite -o`: the structure comes from re-running the passes on the arch
        base = load_model(str(obj["arch"]), input_shape=shape, model_kwargs=obj.get("model_kwargs") or None)
        base.module = load_rewritten(path, passes)
        base.source_info.update(
            {
                "kind": "checkpoint",
                "spec": str(path),
                "weights": None,
                "source_sha256": sha256_file(path),
                "rewrite_file": True,
            }
        )
        return base
    state, ck_arch = _extract_state_dict(obj, path)
    arch = arch or ck_arch
    if arch is None:
        raise ModelSourceError(
            f"'{path.name}' holds a state dict ({len(state)} tensors) but no architecture; pass "
            "--arch NAME (a zoo name, torchvision:<name> or file.py:factory)"
        )
    base = load_model(arch, input_shape=shape, model_kwargs=kwargs)
    _apply_state_dict(base.module, state, path, what=base.name)
    base.source_info["weights"] = str(path)
    base.source_info["weights_sha256"] = sha256_file(path)
    return base


def split_file_arch(arch: str) -> tuple[str, str] | None:
    """``dir/model.py:build`` → (``dir/model.py``, ``build``); None for a zoo / torchvision / timm name."""
    file, sep, factory = arch.rpartition(":")
    return (file, factory) if sep and file.endswith(".py") else None


def _arch_from(arch: str, folder: Path) -> str:
    """A ``file.py:factory`` arch stored relative to the folder of the file that names it, made usable from here
    (files written before paths were stored that way named them relative to the working directory, tried
    second); other archs unchanged."""
    parts = split_file_arch(arch)
    if parts is None or Path(parts[0]).is_absolute():
        return arch
    beside = (folder / parts[0]).resolve()
    return f"{beside}:{parts[1]}" if beside.exists() or not Path(parts[0]).exists() else arch


def load_rewritten(path: str | Path, passes: PassRunner | None) -> nn.Module:
    """Rebuild a model written by ``edgecv rewrite -o`` (:data:`REWRITE_FORMAT`): load its ``arch``, re-run its
    passes with ``passes`` for their structure (on seeded noise), then load the saved weights (strict)."""
    import torch

    blob = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != REWRITE_FORMAT:
        raise ModelSourceError(
            f"'{path}': expected a file written by 'edgecv rewrite -o' (format {REWRITE_FORMAT}), "
            f"found {blob.get('format') if isinstance(blob, dict) else type(blob).__name__}"
        )
    rw = blob["rewrite"]
    if passes is None:
        raise ModelSourceError(
            f"'{Path(path).name}' was written by 'edgecv rewrite -o' (passes {', '.join(rw['passes'])}): expected "
            "a pass runner (passes=edgecv.rewrite.apply_passes) to rebuild it, found none"
        )
    arch = _arch_from(blob["arch"], Path(path).parent)
    module = load_model(arch, model_kwargs=blob.get("model_kwargs") or None).module.eval()
    sample = torch.randn(*rw["input_shape"], generator=torch.Generator().manual_seed(0))
    rebuilt, _ = passes(module, rw["passes"], sample, inplace=True, options=rw.get("options") or None)
    missing, unexpected = rebuilt.load_state_dict(blob["state_dict"], strict=False)
    if missing or unexpected:
        raise ModelSourceError(
            f"'{path}': rebuilt structure does not match the saved weights (missing "
            f"{missing[:3]}, unexpected {unexpected[:3]})"
        )
    return rebuilt.eval()  # type: ignore[no-any-return]


def _extract_state_dict(obj: Any, path: Path) -> tuple[dict[str, Any], str | None]:
    import torch

    def is_state(d: Any) -> bool:
        return isinstance(d, dict) and bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())

    arch = None
    if isinstance(obj, dict):
        for k in _ARCH_KEYS:
            if isinstance(obj.get(k), str):
                arch = obj[k]
                break
    if is_state(obj):
        return dict(obj), arch
    if isinstance(obj, dict):
        for k in _NESTED_STATE_KEYS:
            if is_state(obj.get(k)):
                return dict(obj[k]), arch
    found = type(obj).__name__ if not isinstance(obj, dict) else f"a dict with keys {sorted(map(str, obj))[:8]}"
    raise ModelSourceError(
        f"'{path.name}': expected a state dict (name → tensor, possibly under one of "
        f"{', '.join(_NESTED_STATE_KEYS)}), found {found}"
    )


def _strip_prefix(state: dict[str, Any], module_keys: set[str]) -> dict[str, Any]:
    """Drop a wrapper prefix (DDP ``module.``, Lightning ``model.``) when the keys only match without it."""
    if set(state) & module_keys:
        return state
    for prefix in ("module.", "model.", "_orig_mod."):
        if all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            if set(stripped) & module_keys:
                return stripped
    return state


def _load_weights_into(module: nn.Module, path: Path, what: str) -> None:
    obj = _safe_torch_load(path, path)
    state, _ = _extract_state_dict(obj, path)
    _apply_state_dict(module, state, path, what)


def _apply_state_dict(module: nn.Module, state: dict[str, Any], path: Path, what: str) -> None:
    state = _strip_prefix(state, set(module.state_dict()))
    own = module.state_dict()
    bad_shapes = [
        f"{k} {list(v.shape)} vs model {list(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if bad_shapes:
        raise ModelSourceError(
            f"weights '{path.name}' do not fit {what}: {len(bad_shapes)} shape mismatches "
            f"({'; '.join(bad_shapes[:3])}{'…' if len(bad_shapes) > 3 else ''}); "
            "check --num-classes / model kwargs"
        )
    result = module.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:

        def few(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + ("…" if len(keys) > 4 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({few(unexpected)})")
        raise ModelSourceError(f"weights '{path.name}' do not fit {what}: {'; '.join(parts)}")


def _load_torchscript(path: Path) -> LoadedModel:
    import torch

    try:
        # TorchScript archives are read by the C++ unpickler, which cannot call arbitrary Python objects
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelSourceError(f"cannot load TorchScript archive '{path}': {_one_line(exc)}") from exc
    info: dict[str, Any] = {
        "kind": "torchscript",
        "spec": str(path),
        "kwargs": {},
        "weights": None,
        "source_sha256": sha256_file(path),
    }
    return LoadedModel(
        module=module.eval(), contract=Contract(task="generic"), source_info=info, name=path.stem, guess_task=True
    )


def _scan_pt2(path: Path) -> None:
    """Refuse a ``.pt2`` whose loading would unpickle with code execution.

    ``torch.export.load`` unpickles with ``weights_only=False`` for payloads marked ``use_pickle``, for opaque
    constants and for legacy weight files, and retries sample inputs without ``weights_only`` when the safe load
    fails; any of those could run code, so they are checked here first.
    """
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        for name in names:
            tail = name.split("/", 1)[1] if "/" in name else name
            if tail.endswith(("_config.json",)) and tail.startswith("data/"):
                try:
                    cfg = json.loads(zf.read(name))
                except ValueError as exc:
                    raise ModelSourceError(f"'{path.name}': corrupt {tail}: {exc}") from exc
                for fqn, meta in (cfg.get("config") or {}).items():
                    pname = str(meta.get("path_name", ""))
                    if meta.get("use_pickle") or pname.startswith(("custom_obj", "opaque_obj")):
                        raise ModelSourceError(
                            f"refused to load '{path.name}': its entry '{fqn}' is stored as a Python pickle, "
                            "which would run code on load; re-save it with plain tensors"
                        )
            elif tail.startswith(("data/weights/", "data/constants/")) and tail.endswith(".pt"):
                raise ModelSourceError(
                    f"refused to load '{path.name}': legacy pickled weights ({tail}) would be "
                    "loaded without weights_only; re-save it with a current torch.export.save"
                )
            elif tail.startswith("data/sample_inputs/") and tail.endswith(".pt"):
                import io

                _safe_torch_load(io.BytesIO(zf.read(name)), path)


def _load_pt2(path: Path) -> LoadedModel:
    import torch

    _scan_pt2(path)
    try:
        ep = torch.export.load(str(path))
    except Exception as exc:
        raise ModelSourceError(f"cannot load torch.export program '{path}': {_one_line(exc)}") from exc
    contract = Contract(task="generic")
    try:
        args = ep.example_inputs[0] if ep.example_inputs else ()
        if args and getattr(args[0], "ndim", 0) == 4:
            contract = contract.model_copy(update={"input_shape": [int(d) for d in args[0].shape]})
    except Exception:  # noqa: BLE001, S110 - example inputs are optional in a .pt2
        pass
    info: dict[str, Any] = {
        "kind": "torch_export",
        "spec": str(path),
        "kwargs": {},
        "weights": None,
        "source_sha256": sha256_file(path),
    }
    # ExportedProgram.module() is a GraphModule already in inference form; it refuses .eval()
    return LoadedModel(module=ep.module(), contract=contract, source_info=info, name=path.stem, guess_task=True)
