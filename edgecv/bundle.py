"""The deployable artifact: a folder with ``model.onnx``, backend artifacts, ``manifest.json``, ``reference.npz``.

The :class:`Contract` says how to feed the model (preprocessing) and how to read its outputs. It is stored in
``manifest.json`` and embedded in the ONNX ``metadata_props`` under the key ``edgecv.contract``, so a device
preprocesses exactly as the model was trained. The manifest also carries provenance and a hash for every file;
:meth:`Bundle.open` refuses a folder without a manifest (an interrupted export leaves none) or whose files no
longer match their hashes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgecv._io import atomic_path, check_output_dir, clean_stale, sha256_path, write_json
from edgecv.errors import BundleError

MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
REFERENCE_FILE = "reference.npz"
CONTRACT_KEY = "edgecv.contract"
LOCK_FILE = "manifest.lock"
FORMAT_VERSION = 1

# Limits on what a manifest may ask for: a bundle is untrusted input, and a contract of 1x3x100000x100000 would
# make run/bench allocate tens of GB for one frame. Generous for real vision models, checked at open.
MAX_BATCH = 1024
MAX_CHANNELS = 64
MAX_SIDE = 16384
MAX_INPUT_ELEMENTS = 1 << 28  # per batch row (C*H*W): 268M values, 1 GiB in float32
MAX_CLASSES = 100_000
MAX_OUTPUTS = 256
MAX_NAME_LEN = 256
MAX_DECODE_JSON = 64 * 1024
MAX_FILES = 100_000
MAX_MANIFEST_BYTES = 64 * 1024 * 1024

Task = Literal["classify", "segment", "detect", "generic"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Contract(_Strict):
    """How a model must be fed and how its outputs are read.

    Preprocessing, in order: decode to ``color`` order (RGB/BGR), resize to the input H×W by ``resize``
    (``stretch``, ``letterbox`` keeping aspect with ``pad_value``, or ``center_crop`` after resizing the
    short side to ``crop_ratio`` larger, as torchvision's ``Resize(int)`` + ``CenterCrop``), scale by ``scale``
    (1/255), subtract ``mean``, divide by ``std``, lay out as ``layout``, cast to ``dtype``.

    Resizing uses ``interpolation``; with ``antialias`` it is Pillow's resampling (a filter widened by the
    downscale factor, bit-exact to ``PIL.Image.resize``, what timm's and torchvision's eval transforms run on
    PIL images), without it OpenCV's (``cv2.resize``, no antialiasing; faster on camera frames).
    """

    task: Task = "classify"
    input_name: str = "input"
    input_shape: list[int] = Field(default_factory=lambda: [1, 3, 224, 224])
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "float16", "uint8"] = "float32"
    color: Literal["RGB", "BGR", "GRAY"] = "RGB"
    resize: Literal["stretch", "letterbox", "center_crop"] = "stretch"
    crop_ratio: float = 0.875
    interpolation: Literal["bilinear", "bicubic", "nearest", "lanczos"] = "bilinear"
    antialias: bool = False
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
        if v[2] > MAX_BATCH:
            raise ValueError(f"expected a largest batch of at most {MAX_BATCH}, got {v[2]}")
        return v

    @field_validator("input_name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v)

    @field_validator("class_names")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        if len(v) > MAX_CLASSES:
            raise ValueError(f"expected at most {MAX_CLASSES} class names, got {len(v)}")
        return [_check_name(c, allow_empty=True) for c in v]

    @field_validator("output_names")
    @classmethod
    def _outputs(cls, v: list[str]) -> list[str]:
        if len(v) > MAX_OUTPUTS:
            raise ValueError(f"expected at most {MAX_OUTPUTS} outputs, got {len(v)}")
        return [_check_name(n) for n in v]

    @field_validator("scale", "crop_ratio")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"expected a finite positive number, got {v}")
        return v

    @field_validator("pad_value")
    @classmethod
    def _pad(cls, v: int) -> int:
        if not 0 <= v <= 255:
            raise ValueError(f"expected 0..255, got {v}")
        return v

    @field_validator("mean", "std")
    @classmethod
    def _per_channel(cls, v: list[float]) -> list[float]:
        if not 1 <= len(v) <= MAX_CHANNELS or not all(math.isfinite(x) for x in v):
            raise ValueError(f"expected 1 to {MAX_CHANNELS} finite numbers, got {v[:8]}")
        return v

    @field_validator("decode")
    @classmethod
    def _decode(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(json.dumps(v, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"expected plain JSON values ({exc})") from exc
        if size > MAX_DECODE_JSON:
            raise ValueError(f"expected at most {MAX_DECODE_JSON} bytes of settings, got {size}")
        return v

    @model_validator(mode="after")
    def _sizes(self) -> Contract:
        s = self.input_shape
        c = self.channels
        h, w = self.hw
        if s[0] > MAX_BATCH:
            raise ValueError(f"input_shape: expected a batch of at most {MAX_BATCH}, got {s[0]}")
        if c > MAX_CHANNELS:
            raise ValueError(f"input_shape: expected at most {MAX_CHANNELS} channels, got {c}")
        if h > MAX_SIDE or w > MAX_SIDE or c * h * w > MAX_INPUT_ELEMENTS:
            raise ValueError(
                f"input_shape: expected sides of at most {MAX_SIDE} and at most {MAX_INPUT_ELEMENTS} "
                f"values per image, got {s}"
            )
        if len(self.std) not in (1, c) or len(self.mean) not in (1, c):
            raise ValueError(
                f"mean/std: expected 1 or {c} values (one per channel), got {len(self.mean)} and {len(self.std)}"
            )
        if any(x == 0 for x in self.std):
            raise ValueError("std: expected non-zero values, got 0")
        return self

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

    @field_validator("backend", "precision")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_rel_path(v)

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

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v)

    @field_validator("files")
    @classmethod
    def _files(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > MAX_FILES:
            raise ValueError(f"expected at most {MAX_FILES} files, got {len(v)}")
        for rel in v:
            check_rel_path(rel)
        return v


def _check_name(v: str, allow_empty: bool = False) -> str:
    if (not v and not allow_empty) or len(v) > MAX_NAME_LEN or any(ord(ch) < 32 for ch in v):
        raise ValueError(f"expected a name of 1 to {MAX_NAME_LEN} printable characters, got {v[:40]!r}")
    return v


def check_rel_path(rel: str) -> str:
    """A manifest path must be relative, inside the bundle and plain: no absolute path, no ``..``, no backslash."""
    p = PurePosixPath(rel)
    if (
        not rel
        or len(rel) > 1024
        or rel.startswith(("/", "~"))
        or "\\" in rel
        or ":" in rel
        or any(part in ("..", ".") for part in p.parts)
        or any(ord(ch) < 32 for ch in rel)
        or p.is_absolute()
    ):
        raise ValueError(f"expected a relative path inside the bundle, got {rel[:80]!r}")
    return rel


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    # a key from the file may hold anything (newlines, control characters): shown quoted, so the error stays one line
    loc = ".".join(str(p) if str(p).isprintable() else repr(str(p)) for p in err["loc"])[:120]
    msg = " ".join(str(err["msg"]).split())  # one line, whatever the validator wrote
    if len(msg) > 300:
        msg = msg[:300] + "…"
    return f"{loc}: {msg}" if loc else msg


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def host_info() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "system": platform.system(),
        "node": platform.node(),
    }


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def is_bundle_dir(path: Path) -> bool:
    """A folder that holds a bundle (has ``manifest.json``): what ``--force`` may replace."""
    return path.is_dir() and (path / MANIFEST).is_file()


class Bundle:
    """A bundle folder. Open an existing one with :meth:`open`; exports create one with :meth:`create`.

    A bundle is untrusted data (DESIGN rule 15): every path its manifest names is resolved and must stay inside the
    folder (no absolute paths, no ``..``, no symlink leading out), every file is hash-checked before use, manifest
    updates take a file lock (:meth:`update`), and writers never follow a symlink out of the folder.
    """

    def __init__(self, root: str | Path, manifest: Manifest) -> None:
        self.root = Path(root)
        self.manifest = manifest

    # ---------------------------------------------------------------- paths
    @property
    def contract(self) -> Contract:
        return self.manifest.contract

    @property
    def onnx_path(self) -> Path:
        return self.path(ONNX_FILE)

    @property
    def reference_path(self) -> Path:
        return self.path(REFERENCE_FILE)

    def path(self, rel: str) -> Path:
        """``root/rel`` for reading, confined: refuses an absolute path, ``..`` or a symlink that leads out."""
        try:
            check_rel_path(rel)
        except ValueError as exc:
            raise BundleError(f"bundle '{self.root}': {exc}") from exc
        p = self.root / rel
        real_root = self.root.resolve()
        if not _is_within(p.resolve(), real_root):
            raise BundleError(
                f"bundle '{self.root}': expected {rel} inside the bundle, found a symlink leading to {p.resolve()}"
            )
        return p

    def file(self, rel: str, check: bool = True) -> Path:
        """A file the bundle records, for use: confined, and listed in ``files`` (itself or the folder holding it),
        so it was hash-checked when the bundle was opened. An artifact path nobody hashed is refused."""
        p = self.path(rel)
        parts = PurePosixPath(rel).parts
        covered = [("/".join(parts[:i])) for i in range(len(parts), 0, -1)]
        listed = next((c for c in covered if c in self.manifest.files), None)
        if listed is None:
            raise BundleError(
                f"bundle '{self.root}': {rel} is not among the files its manifest hashes; refusing to "
                "load a file nobody checked (re-compile it)"
            )
        if check:
            self.verify([listed])
        return p

    def write_path(self, rel: str) -> Path:
        """``root/rel`` for writing: confined, and no component inside the bundle may be a symlink (a writer
        never follows one, even one that points back inside)."""
        try:
            check_rel_path(rel)
        except ValueError as exc:
            raise BundleError(f"bundle '{self.root}': {exc}") from exc
        cur = self.root
        for part in PurePosixPath(rel).parts:
            cur = cur / part
            if cur.is_symlink():
                raise BundleError(
                    f"bundle '{self.root}': expected a plain folder or file at {cur.relative_to(self.root)}, "
                    f"found a symlink (to {os.readlink(cur)}); edgecv does not write through symlinks"
                )
        return cur

    # ---------------------------------------------------------------- open / verify
    @classmethod
    def open(cls, root: str | Path, verify: bool = True) -> Bundle:
        """Open a complete bundle; raise :class:`BundleError` if it is missing, incomplete, altered or malformed."""
        root = Path(root)
        if not root.exists():
            raise BundleError(f"expected a bundle folder, found nothing at '{root}'")
        if not root.is_dir():
            raise BundleError(f"expected a bundle folder, found a file at '{root}'")
        bundle = cls(root, cls._read_manifest(root))
        if verify:
            bundle.verify()
        return bundle

    @staticmethod
    def _read_manifest(root: Path) -> Manifest:
        mpath = root / MANIFEST
        if mpath.is_symlink() or not mpath.is_file():
            if mpath.is_symlink():
                raise BundleError(f"'{root}': expected {MANIFEST} to be a plain file, found a symlink")
            raise BundleError(
                f"'{root}' is not a complete bundle: expected {MANIFEST} (an interrupted export leaves none); "
                "run 'edgecv export' again"
            )
        try:
            size = mpath.stat().st_size
            if size > MAX_MANIFEST_BYTES:
                raise BundleError(f"{mpath}: expected at most {MAX_MANIFEST_BYTES >> 20} MiB, found {size >> 20} MiB")
            return Manifest.model_validate_json(mpath.read_bytes())
        except ValidationError as exc:
            raise BundleError(f"corrupt {mpath}: {_first_error(exc)}") from exc
        except (OSError, ValueError, RecursionError) as exc:
            raise BundleError(f"cannot read {mpath}: {' '.join(str(exc).split())[:200]}") from exc

    def verify(self, paths: list[str] | None = None) -> None:
        """Check that the listed files (default: all) are inside the bundle, exist and match their hashes."""
        for rel, digest in self.manifest.files.items():
            if paths is not None and rel not in paths:
                continue
            p = self.path(rel)
            if not p.exists():
                raise BundleError(f"bundle '{self.root}' is missing {rel}, which its manifest lists")
            if p.is_dir() and any(q.is_symlink() for q in p.rglob("*")):
                raise BundleError(f"bundle '{self.root}': expected plain files in {rel}, found a symlink")
            actual = sha256_path(p)
            if not digest or actual != digest:
                raise BundleError(
                    f"bundle file {p} was changed after it was written (sha256 {actual[:12]}…, "
                    f"manifest says {digest[:12] or 'nothing'}…); re-export or re-compile it"
                )
        for art in self.manifest.artifacts.values():
            if paths is None:
                self.file(art.path, check=False)  # confined and covered; its hash was checked just above

    # ---------------------------------------------------------------- create / update
    @classmethod
    def create(cls, root: str | Path, manifest: Manifest, files: dict[str, Path], force: bool = False) -> Bundle:
        """Write a new bundle atomically: every file goes into a temporary folder, manifest last, then a rename.

        Args:
            root: final folder.
            manifest: manifest without file hashes (they are filled in here).
            files: relative name → existing file or folder to move into the bundle.
            force: replace an existing bundle at ``root`` (only a bundle or an empty folder; never other files).
        """
        root = Path(root)
        check_output_dir(
            root, force, is_bundle_dir, "bundle", "a bundle (a folder with manifest.json)", error=BundleError
        )
        with atomic_path(root) as tmp:
            tmp.mkdir(parents=True)
            for rel, src in files.items():
                check_rel_path(rel)
                dst = tmp / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(src), dst)
                manifest.files[rel] = sha256_path(dst)
            manifest.provenance.setdefault("created", now_iso())
            write_json(tmp / MANIFEST, json.loads(manifest.model_dump_json()))
        return cls(root, manifest)

    @contextlib.contextmanager
    def update(self) -> Iterator[Manifest]:
        """Locked read-modify-write of ``manifest.json``: the manifest is re-read under the lock (so a concurrent
        compile's artifact is kept), the caller changes it, and it is saved before the lock is released."""
        from filelock import FileLock, Timeout

        lock_path = self.root / LOCK_FILE
        if lock_path.is_symlink() or (
            lock_path.exists() and (not lock_path.is_file() or lock_path.stat().st_nlink > 1)
        ):
            # FileLock opens (and truncates) its file: never through a link to a file outside the bundle
            raise BundleError(
                f"bundle '{self.root}': expected {LOCK_FILE} to be a plain file, found a link or a folder; remove it"
            )
        lock = FileLock(str(lock_path), timeout=600, is_singleton=True)
        try:
            with lock:
                if lock.lock_counter == 1:  # outermost: take the manifest as it is on disk now
                    self.manifest = self._read_manifest(self.root)
                    clean_stale(self.root)
                yield self.manifest
                self.save()
        except Timeout as exc:
            raise BundleError(
                f"bundle '{self.root}' is locked by another edgecv process for over 10 minutes "
                f"({self.root / LOCK_FILE})"
            ) from exc

    def scratch(self) -> contextlib.AbstractContextManager[str]:
        """A temporary build folder inside the bundle, named after this process so the next run can tell a stale
        one (its process is gone) from a concurrent one, and remove it."""
        import tempfile

        clean_stale(self.root)
        return tempfile.TemporaryDirectory(dir=self.root, prefix=f".build-{os.getpid()}-")

    def add_file(self, rel: str, src: Path) -> Path:
        """Move ``src`` into the bundle as ``rel`` atomically and record its hash (locked; manifest saved)."""
        with self.update():
            dst = self.write_path(rel)
            dst.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dst) as tmp:
                shutil.move(str(src), tmp)
            self.manifest.files[rel] = sha256_path(dst)
        return dst

    def add_artifact(self, artifact: Artifact, files: dict[str, Path]) -> Artifact:
        """Add a backend artifact's files and record it; replaces an earlier artifact with the same key."""
        with self.update():
            for rel, src in files.items():
                self.add_file(rel, src)
            artifact.sha256 = sha256_path(self.path(artifact.path))
            artifact.created = artifact.created or now_iso()
            self.manifest.artifacts[artifact.key] = artifact
            self.manifest.history.append({"event": "artifact", "key": artifact.key, "time": artifact.created})
        return artifact

    def artifact(self, backend: str, precision: str) -> Artifact | None:
        return self.manifest.artifacts.get(artifact_key(backend, precision))

    def save(self) -> None:
        write_json(self.write_path(MANIFEST), json.loads(self.manifest.model_dump_json()))

    def load_reference(self) -> dict[str, Any]:
        """Inputs and PyTorch outputs saved at export: ``{"inputs": {name: arr}, "outputs": {name: arr},
        "images": [BGR uint8 source image per input sample]}`` (``images`` empty when the inputs were noise).

        Read as data only (``allow_pickle=False``); anything but an .npz of numeric arrays is one line naming the
        file."""
        import numpy as np

        path = self.file(REFERENCE_FILE) if REFERENCE_FILE in self.manifest.files else self.reference_path
        if not path.exists():
            raise BundleError(f"bundle '{self.root}' has no {REFERENCE_FILE}; re-export it")
        inputs: dict[str, Any] = {}
        outputs: dict[str, Any] = {}
        images: dict[int, Any] = {}
        try:
            with np.load(path, allow_pickle=False) as data:
                for k in data.files:
                    arr = data[k]
                    if arr.dtype.kind not in "biuf":
                        raise ValueError(f"array '{k[:60]}' has dtype {arr.dtype}, expected numbers")
                    if k.startswith("input/"):
                        inputs[k[len("input/") :]] = arr
                    elif k.startswith("output/"):
                        outputs[k[len("output/") :]] = arr
                    elif k.startswith("image/") and k[len("image/") :].isdigit() and arr.dtype == np.uint8:
                        images[int(k[len("image/") :])] = arr
        except (ValueError, OSError, AttributeError, TypeError, EOFError, KeyError) as exc:
            raise BundleError(
                f"{path}: expected an .npz of numeric arrays (input/<name>, output/<name>), found "
                f"something else ({' '.join(str(exc).split())[:160]})"
            ) from exc
        if not inputs:
            raise BundleError(f"{path}: expected input/<name> arrays, found none")
        return {"inputs": inputs, "outputs": outputs, "images": [images[i] for i in sorted(images)]}


def save_reference(
    path: Path, inputs: dict[str, Any], outputs: dict[str, Any], images: list[Any] | None = None
) -> None:
    """Write ``reference.npz`` (``input/<name>`` and ``output/<name>`` arrays, and ``image/<i>``: the BGR uint8
    images the inputs were preprocessed from, when they came from images)."""
    import numpy as np

    arrays = {f"input/{k}": np.asarray(v) for k, v in inputs.items()}
    arrays.update({f"output/{k}": np.asarray(v) for k, v in outputs.items()})
    arrays.update({f"image/{i}": np.asarray(im, dtype=np.uint8) for i, im in enumerate(images or [])})
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
