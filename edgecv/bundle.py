"""The deployable artifact: a folder with ``model.onnx``, backend artifacts, ``manifest.json``, ``reference.npz``.

The :class:`Contract` says how to feed the model (preprocessing) and how to read its outputs. It is stored in
``manifest.json`` and embedded in the ONNX ``metadata_props`` under the key ``edgecv.contract``, so a device
preprocesses exactly as the model was trained. The manifest also carries provenance and a hash for every file;
:meth:`Bundle.open` refuses a folder without a manifest (an interrupted export leaves none) or whose files no
longer match their hashes.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgecv import __version__
from edgecv._io import atomic_path, sha256_path, write_json
from edgecv.errors import BundleError

MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
REFERENCE_FILE = "reference.npz"
CONTRACT_KEY = "edgecv.contract"
FORMAT_VERSION = 1

Task = Literal["classify", "segment", "detect", "generic"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Contract(_Strict):
    """How a model must be fed and how its outputs are read.

    Preprocessing, in order: decode to ``color`` order (RGB/BGR), resize to the input H×W by ``resize``
    (``stretch``, ``letterbox`` keeping aspect with ``pad_value``, or ``center_crop`` after resizing the
    short side to ``crop_ratio`` larger), scale by ``scale`` (1/255), subtract ``mean``, divide by ``std``,
    lay out as ``layout``, cast to ``dtype``.
    """

    task: Task = "classify"
    input_name: str = "input"
    input_shape: list[int] = Field(default_factory=lambda: [1, 3, 224, 224])
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "float16", "uint8"] = "float32"
    color: Literal["RGB", "BGR", "GRAY"] = "RGB"
    resize: Literal["stretch", "letterbox", "center_crop"] = "stretch"
    crop_ratio: float = 0.875
    pad_value: int = 114
    scale: float = 1.0 / 255.0
    mean: list[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = Field(default_factory=lambda: [0.229, 0.224, 0.225])
    class_names: list[str] = Field(default_factory=list)
    output_names: list[str] = Field(default_factory=lambda: ["output"])
    # how outputs are decoded, per task: classify {"activation": "softmax"|"none"}; segment {"activation": ...};
    # detect {"format": ..., "nms": "graph"|"host", "score_threshold": ..., "iou_threshold": ..., "max_det": ...}
    decode: dict[str, Any] = Field(default_factory=dict)
    # batch range for dynamic-batch exports: min/opt/max (TensorRT profiles read it)
    batch_range: list[int] = Field(default_factory=lambda: [1, 1, 1])

    @field_validator("input_shape")
    @classmethod
    def _shape4(cls, v: list[int]) -> list[int]:
        if len(v) != 4 or any(int(d) <= 0 for d in v):
            raise ValueError(f"expected 4 positive dims (N,C,H,W or N,H,W,C), got {v}")
        return [int(d) for d in v]

    @field_validator("batch_range")
    @classmethod
    def _br(cls, v: list[int]) -> list[int]:
        if len(v) != 3 or not (1 <= v[0] <= v[1] <= v[2]):
            raise ValueError(f"expected [min, opt, max] with 1 <= min <= opt <= max, got {v}")
        return v

    @property
    def channels(self) -> int:
        return self.input_shape[1] if self.layout == "NCHW" else self.input_shape[3]

    @property
    def hw(self) -> tuple[int, int]:
        s = self.input_shape
        return (s[2], s[3]) if self.layout == "NCHW" else (s[1], s[2])

    @property
    def dynamic_batch(self) -> bool:
        return self.batch_range[2] > 1 or self.batch_range[0] != self.batch_range[2]

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> Contract:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise BundleError(f"invalid contract: {_first_error(exc)}") from exc


class Artifact(_Strict):
    """One built file (or folder) in a bundle, e.g. an OpenVINO IR or a TensorRT engine."""

    backend: str
    precision: str
    path: str
    sha256: str = ""
    device: str = ""
    build_flags: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str | None] = Field(default_factory=dict)
    created: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return artifact_key(self.backend, self.precision)


def artifact_key(backend: str, precision: str) -> str:
    return f"{backend}:{precision}"


class Manifest(_Strict):
    format_version: int = FORMAT_VERSION
    name: str = "model"
    contract: Contract = Field(default_factory=Contract)
    provenance: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)  # relative path -> sha256
    artifacts: dict[str, Artifact] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(default_factory=list)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def host_info() -> dict[str, str]:
    return {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system(),
            "node": platform.node()}


class Bundle:
    """A bundle folder. Open an existing one with :meth:`open`; exports create one with :meth:`create`."""

    def __init__(self, root: str | Path, manifest: Manifest) -> None:
        self.root = Path(root)
        self.manifest = manifest

    # ---------------------------------------------------------------- paths
    @property
    def contract(self) -> Contract:
        return self.manifest.contract

    @property
    def onnx_path(self) -> Path:
        return self.root / ONNX_FILE

    @property
    def reference_path(self) -> Path:
        return self.root / REFERENCE_FILE

    def path(self, rel: str) -> Path:
        return self.root / rel

    # ---------------------------------------------------------------- open / verify
    @classmethod
    def open(cls, root: str | Path, verify: bool = True) -> Bundle:
        """Open a complete bundle; raise :class:`BundleError` if it is missing, incomplete or altered."""
        root = Path(root)
        if not root.exists():
            raise BundleError(f"expected a bundle folder, found nothing at '{root}'")
        if not root.is_dir():
            raise BundleError(f"expected a bundle folder, found a file at '{root}'")
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise BundleError(
                f"'{root}' is not a complete bundle: expected {MANIFEST} (an interrupted export leaves none); "
                "run 'edgecv export' again"
            )
        try:
            manifest = Manifest.model_validate_json(mpath.read_text())
        except ValidationError as exc:
            raise BundleError(f"corrupt {mpath}: {_first_error(exc)}") from exc
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read {mpath}: {exc}") from exc
        bundle = cls(root, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self, paths: list[str] | None = None) -> None:
        """Check that the listed files (default: all) exist and match the hashes in the manifest."""
        for rel, digest in self.manifest.files.items():
            if paths is not None and rel not in paths:
                continue
            p = self.root / rel
            if not p.exists():
                raise BundleError(f"bundle '{self.root}' is missing {rel}, which its manifest lists")
            actual = sha256_path(p)
            if digest and actual != digest:
                raise BundleError(
                    f"bundle file {p} was changed after it was written (sha256 {actual[:12]}…, "
                    f"manifest says {digest[:12]}…); re-export or re-compile it"
                )

    # ---------------------------------------------------------------- create / update
    @classmethod
    def create(cls, root: str | Path, manifest: Manifest, files: dict[str, Path], force: bool = False) -> Bundle:
        """Write a new bundle atomically: every file goes into a temporary folder, manifest last, then a rename.

        Args:
            root: final folder.
            manifest: manifest without file hashes (they are filled in here).
            files: relative name → existing file or folder to move into the bundle.
            force: replace an existing bundle at ``root``.
        """
        root = Path(root)
        if root.exists() and not force and any(root.iterdir()):
            if (root / MANIFEST).exists():
                raise BundleError(f"'{root}' already holds a bundle; pass --force to replace it")
            raise BundleError(f"expected an empty or new folder for the bundle, found files in '{root}'")
        with atomic_path(root) as tmp:
            tmp.mkdir(parents=True)
            for rel, src in files.items():
                dst = tmp / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(src), dst)
                manifest.files[rel] = sha256_path(dst)
            manifest.provenance.setdefault("created", now_iso())
            write_json(tmp / MANIFEST, json.loads(manifest.model_dump_json()))
        return cls(root, manifest)

    def add_file(self, rel: str, src: Path) -> Path:
        """Move ``src`` into the bundle as ``rel`` atomically and record its hash (manifest saved by caller)."""
        dst = self.root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst) as tmp:
            shutil.move(str(src), tmp)
        self.manifest.files[rel] = sha256_path(dst)
        return dst

    def add_artifact(self, artifact: Artifact, files: dict[str, Path]) -> Artifact:
        """Add a backend artifact's files and record it; replaces an earlier artifact with the same key."""
        for rel, src in files.items():
            self.add_file(rel, src)
        artifact.sha256 = sha256_path(self.root / artifact.path)
        artifact.created = artifact.created or now_iso()
        self.manifest.artifacts[artifact.key] = artifact
        self.manifest.history.append({"event": "artifact", "key": artifact.key, "time": artifact.created})
        self.save()
        return artifact

    def artifact(self, backend: str, precision: str) -> Artifact | None:
        return self.manifest.artifacts.get(artifact_key(backend, precision))

    def save(self) -> None:
        write_json(self.root / MANIFEST, json.loads(self.manifest.model_dump_json()))

    def load_reference(self) -> dict[str, Any]:
        """Inputs and PyTorch outputs saved at export: ``{"inputs": {name: arr}, "outputs": {name: arr}}``."""
        import numpy as np

        if not self.reference_path.exists():
            raise BundleError(f"bundle '{self.root}' has no {REFERENCE_FILE}; re-export it")
        data = np.load(self.reference_path)
        inputs = {k[len("input/"):]: data[k] for k in data.files if k.startswith("input/")}
        outputs = {k[len("output/"):]: data[k] for k in data.files if k.startswith("output/")}
        return {"inputs": inputs, "outputs": outputs}


def save_reference(path: Path, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Write ``reference.npz`` (``input/<name>`` and ``output/<name>`` arrays)."""
    import numpy as np

    arrays = {f"input/{k}": np.asarray(v) for k, v in inputs.items()}
    arrays.update({f"output/{k}": np.asarray(v) for k, v in outputs.items()})
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


def read_onnx_contract(onnx_path: str | Path) -> Contract | None:
    """The contract embedded in an ONNX file's ``metadata_props`` (None when absent)."""
    from edgecv._lazy import lazy_import

    onnx = lazy_import("onnx")
    model = onnx.load(str(onnx_path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == CONTRACT_KEY:
            return Contract.from_json(prop.value)
    return None
