"""A battery of hostile inputs across every command (issue 12).

Each case prepares a bundle ``B`` (a copy of a tiny one), a folder of the user's beside it that nothing may touch,
and a command line, as a hostile bundle author or a careless user would. Every case must end in a clean success
(exit 0) or one ``error:`` line with exit 2 — never a traceback — and after it the user's folder is byte-identical,
no code from the bundle has run, and no user file is lost.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecv._io import sha256_path

pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime, pytest.mark.openvino, pytest.mark.stream]

EVIL = (
    'from pathlib import Path\nPath(__file__).with_name("PWNED").write_text("ran")\ndef build(**kw):\n    '
    "import torch\n    return torch.nn.Identity()\n"
)


@dataclass
class Ctx:
    B: Path  # the hostile bundle
    user: Path  # the user's own files, which must survive unchanged
    tmp: Path
    video: Path

    def manifest(self, fn: Callable[[dict[str, Any]], None]) -> None:
        m = json.loads((self.B / "manifest.json").read_text())
        fn(m)
        (self.B / "manifest.json").write_text(json.dumps(m))

    def rehash(self, rel: str) -> None:
        self.manifest(lambda m: m["files"].__setitem__(rel, sha256_path(self.B / rel)))

    def contract(self, **kv: Any) -> None:
        self.manifest(lambda m: m["contract"].update(kv))

    def source(self, **kv: Any) -> None:
        self.manifest(lambda m: m["provenance"].__setitem__("source", kv))


def _npz(ctx: Ctx, kind: str) -> None:
    p = ctx.B / "reference.npz"
    if kind == "object":
        np.savez(p, **{"input/input": np.array([{"a": 1}], dtype=object)})
    elif kind == "pickle":
        p.write_bytes(pickle.dumps({"input/input": [1]}))
    elif kind == "npy":
        with open(p, "wb") as f:
            np.save(f, np.zeros((1, 3, 32, 32), np.float32))
    elif kind == "strings":
        np.savez(p, **{"input/input": np.array(["a", "b"])})
    elif kind == "empty":
        np.savez(p, other=np.zeros(3))
    ctx.rehash("reference.npz")


def _evil(ctx: Ctx, kind: str) -> None:
    (ctx.B / "evil.py").write_text(EVIL)
    ctx.source(kind=kind, spec=f"{ctx.B / 'evil.py'}:build")


def _symlink_out(ctx: Ctx, rel: str) -> None:
    p = ctx.B / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.symlink_to(ctx.user, target_is_directory=True)


def _file_in_user(ctx: Ctx, name: str) -> Path:
    return ctx.user / name


RECIPES = Path(__file__).resolve().parents[1] / "recipes"
B = "{B}"
U = "{U}"
V = "{V}"
T = "{T}"

# (id, setup, argv with {B} bundle, {U} user folder, {V} a video, {T} a scratch folder; allowed exit codes)
CASES: list[tuple[str, Callable[[Ctx], None], list[str], tuple[int, ...]]] = [
    ("no-manifest", lambda c: (c.B / "manifest.json").unlink(), ["validate", B, "-b", "onnxruntime"], (2,)),
    (
        "manifest-symlink-out",
        lambda c: ((c.B / "manifest.json").unlink(), (c.B / "manifest.json").symlink_to(c.user / "keep.txt")),
        ["validate", B, "-b", "onnxruntime"],
        (2,),
    ),
    (
        "manifest-not-json",
        lambda c: (c.B / "manifest.json").write_text("{not json"),
        ["bench", B, "-b", "onnxruntime"],
        (2,),
    ),
    (
        "manifest-deep-nesting",
        lambda c: (c.B / "manifest.json").write_text("[" * 100000 + "]" * 100000),
        ["validate", B],
        (2,),
    ),
    (
        "manifest-not-utf8",
        lambda c: (c.B / "manifest.json").write_bytes(b'{"name": "\xff\xfe"}'),
        ["validate", B],
        (2,),
    ),
    ("manifest-array", lambda c: (c.B / "manifest.json").write_text("[1, 2]"), ["run", B, "-s", V], (2,)),
    (
        "files-absolute",
        lambda c: c.manifest(lambda m: m["files"].__setitem__("/etc/shadow", "0" * 64)),
        ["compile", B, "-b", "openvino"],
        (2,),
    ),
    (
        "files-dotdot",
        lambda c: c.manifest(lambda m: m["files"].__setitem__("../user/keep.txt", "0" * 64)),
        ["run", B, "-s", V, "-q"],
        (2,),
    ),
    (
        "files-empty-hash",
        lambda c: c.manifest(lambda m: m["files"].__setitem__("model.onnx", "")),
        ["validate", B],
        (2,),
    ),
    (
        "artifact-absolute",
        lambda c: c.manifest(
            lambda m: m["artifacts"].__setitem__(
                "openvino:fp32", {"backend": "openvino", "precision": "fp32", "path": str(c.user / "model.xml")}
            )
        ),
        ["validate", B, "-b", "openvino"],
        (2,),
    ),
    (
        "artifact-dotdot",
        lambda c: c.manifest(
            lambda m: m["artifacts"].__setitem__(
                "openvino:fp32", {"backend": "openvino", "precision": "fp32", "path": "../user/model.xml"}
            )
        ),
        ["bench", B, "-b", "openvino", "--iters", "1"],
        (2,),
    ),
    (
        "artifact-nul",
        lambda c: c.manifest(
            lambda m: m["artifacts"].__setitem__(
                "openvino:fp32", {"backend": "openvino", "precision": "fp32", "path": "openvino/fp32/model\u0000.xml"}
            )
        ),
        ["validate", B, "-b", "openvino"],
        (2,),
    ),
    (
        "artifact-not-hashed",
        lambda c: (
            shutil.copy(c.B / "model.onnx", c.B / "extra.onnx"),
            c.manifest(
                lambda m: m["artifacts"].__setitem__(
                    "onnxruntime:fp16", {"backend": "onnxruntime", "precision": "fp16", "path": "extra.onnx"}
                )
            ),
        ),
        ["validate", B, "-b", "onnxruntime:fp16"],
        (2,),
    ),
    (
        "model-changed",
        lambda c: (c.B / "model.onnx").write_bytes(b"\x08\x07garbage"),
        ["validate", B, "-b", "onnxruntime"],
        (2,),
    ),
    (
        "model-garbage-rehashed",
        lambda c: ((c.B / "model.onnx").write_bytes(b"\x08\x07garbage"), c.rehash("model.onnx")),
        ["validate", B, "-b", "onnxruntime"],
        (2,),
    ),
    (
        "model-symlink-out",
        lambda c: (
            (c.B / "model.onnx").unlink(),
            (c.B / "model.onnx").symlink_to(c.user / "keep.txt"),
            c.rehash("model.onnx"),
        ),
        ["bench", B, "-b", "onnxruntime"],
        (2,),
    ),
    ("npz-object", lambda c: _npz(c, "object"), ["validate", B, "-b", "onnxruntime"], (2,)),
    ("npz-pickle", lambda c: _npz(c, "pickle"), ["validate", B, "-b", "onnxruntime"], (2,)),
    ("npz-plain-npy", lambda c: _npz(c, "npy"), ["validate", B, "-b", "onnxruntime"], (2,)),
    ("npz-strings", lambda c: _npz(c, "strings"), ["validate", B, "-b", "onnxruntime"], (2,)),
    ("npz-no-inputs", lambda c: _npz(c, "empty"), ["validate", B, "-b", "onnxruntime"], (2,)),
    ("source-file-evil", lambda c: _evil(c, "file"), ["validate", B, "-b", "onnxruntime"], (0,)),
    ("source-zoo-evil", lambda c: _evil(c, "zoo"), ["bench", B, "-b", "torch", "--iters", "1"], (2,)),
    ("source-checkpoint-evil", lambda c: _evil(c, "checkpoint"), ["validate", B, "-b", "torch"], (0, 1, 2)),
    (
        "source-huge-kwargs",
        lambda c: c.source(kind="zoo", spec="resnet_tiny", kwargs={"num_classes": 10**12}),
        ["bench", B, "-b", "torch", "--iters", "1"],
        (2,),
    ),
    (
        "source-unknown-zoo",
        lambda c: c.source(kind="zoo", spec="no_such_model"),
        ["bench", B, "-b", "torch", "--iters", "1"],
        (2,),
    ),
    (
        "rewrite-unknown-pass",
        lambda c: (
            c.source(kind="zoo", spec="resnet_tiny"),
            c.manifest(lambda m: m["provenance"].__setitem__("rewrite", {"passes": ["os.system"]})),
        ),
        ["bench", B, "-b", "torch", "--iters", "1"],
        (2,),
    ),
    ("contract-huge-input", lambda c: c.contract(input_shape=[1, 3, 100000, 100000]), ["run", B, "-s", V, "-q"], (2,)),
    ("contract-huge-batch", lambda c: c.contract(batch_range=[1, 1, 10**6]), ["bench", B, "-b", "onnxruntime"], (2,)),
    ("contract-mean-mismatch", lambda c: c.contract(mean=[0.5, 0.5]), ["validate", B], (2,)),
    ("contract-std-zero", lambda c: c.contract(std=[0.0, 1.0, 1.0]), ["run", B, "-s", V, "-q"], (2,)),
    (
        "contract-many-classes",
        lambda c: c.contract(class_names=[f"c{i}" for i in range(200_001)]),
        ["validate", B],
        (2,),
    ),
    ("contract-name-newline", lambda c: c.contract(input_name="in\nput"), ["validate", B], (2,)),
    ("contract-nan-scale", lambda c: c.contract(scale=float("nan")), ["validate", B], (2,)),
    ("compile-symlink-dir", lambda c: _symlink_out(c, "openvino"), ["compile", B, "-b", "openvino"], (2,)),
    (
        "compile-symlink-deep",
        lambda c: _symlink_out(c, "openvino/fp16"),
        ["compile", B, "-b", "openvino", "-p", "fp16"],
        (2,),
    ),
    (
        "lock-symlink-out",
        lambda c: (c.B / "manifest.lock").symlink_to(c.user / "keep.txt"),
        ["compile", B, "-b", "onnxruntime", "-p", "fp16"],
        (2,),
    ),
    (
        "lock-hardlink-out",
        lambda c: (c.B / "manifest.lock").hardlink_to(c.user / "keep.txt"),
        ["compile", B, "-b", "onnxruntime", "-p", "fp16"],
        (2,),
    ),
    (
        "stale-build-folder",
        lambda c: (c.B / ".build-999999-x").mkdir(),
        ["compile", B, "-b", "onnxruntime", "-p", "fp16"],
        (0,),
    ),
    ("bundle-is-a-file", lambda c: (shutil.rmtree(c.B), c.B.write_text("x")), ["validate", B], (2,)),
    ("run-jsonl-is-source", lambda c: None, ["run", B, "-s", V, "--jsonl", V, "-q"], (2,)),
    ("run-save-is-source", lambda c: None, ["run", B, "-s", V, "--save", V, "-q"], (2,)),
    ("run-save-over-user-file", lambda c: None, ["run", B, "-s", V, "--save", f"{U}/clip.mp4", "-q"], (2,)),
    ("run-json-over-user-file", lambda c: None, ["run", B, "-s", V, "--summary", f"{U}/keep.txt", "-q"], (2,)),
    (
        "run-save-is-folder",
        lambda c: (c.tmp / "d.mp4").mkdir(),
        ["run", B, "-s", V, "--save", f"{T}/d.mp4", "-q"],
        (2,),
    ),
    ("run-serve-anywhere", lambda c: None, ["run", B, "-s", V, "--serve", "0.0.0.0:0", "-q"], (2,)),
    ("export-force-user-folder", lambda c: None, ["export", "mobilenet_v2_tiny", "-o", U, "--force"], (2,)),
    ("export-onto-a-file", lambda c: None, ["export", "mobilenet_v2_tiny", "-o", f"{U}/keep.txt"], (2,)),
    ("quantize-onto-user-folder", lambda c: None, ["quantize", B, "-o", U, "--calib", U, "--force"], (2,)),
    (
        "synth-force-user-folder",
        lambda c: None,
        ["data", "synth", "--task", "classify", "-o", U, "--force", "--n-train", "1", "--n-val", "1", "--size", "16"],
        (2,),
    ),
    ("calib-sample-user-folder", lambda c: None, ["calib", "sample", V, "-o", U, "-n", "2", "--force"], (2,)),
    (
        "rewrite-over-its-weights",
        lambda c: (c.user / "w.pt").write_bytes(b"PK not really"),
        ["rewrite", "resnet_tiny", "--pass", "fold_bn", "--weights", f"{U}/w.pt", "-o", f"{U}/w.pt", "--force"],
        (2,),
    ),
    (
        "rewrite-over-user-file",
        lambda c: (c.user / "m.pt").write_bytes(b"mine"),
        ["rewrite", "resnet_tiny", "--pass", "fold_bn", "-o", f"{U}/m.pt"],
        (2,),
    ),
    ("pipeline-into-user-folder", lambda c: None, ["pipeline", str(RECIPES / "classifier.yaml"), "-o", U], (2,)),
    ("train-into-user-folder", lambda c: None, ["train", str(RECIPES / "classifier.yaml"), "-o", U, "--force"], (2,)),
]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path_factory.mktemp("vid") / "clip.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25, (96, 64))
    for i in range(12):
        w.write(np.full((64, 96, 3), i * 20, np.uint8))
    w.release()
    return path


def test_battery_has_at_least_40_cases() -> None:
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("setup", "argv", "codes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_case(
    cli,
    pristine: Path,
    video: Path,
    tmp_path: Path,
    setup: Callable[[Ctx], None],
    argv: list[str],
    codes: tuple[int, ...],
) -> None:
    b = tmp_path / "B"
    shutil.copytree(pristine, b)
    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("the user's notes\n")
    (user / "model.xml").write_text("<net/>\n")
    shutil.copy(video, user / "clip.mp4")
    vid = tmp_path / "v.mp4"
    shutil.copy(video, vid)
    ctx = Ctx(B=b, user=user, tmp=tmp_path, video=vid)
    setup(ctx)
    before = {p.name: sha256_path(p) for p in sorted(user.iterdir())}
    vid_digest = sha256_path(vid)
    args = [a.replace(B, str(b)).replace(U, str(user)).replace(V, str(vid)).replace(T, str(tmp_path)) for a in argv]
    proc = cli(*args, env={"EDGECV_TOKEN": ""}, timeout=300)
    assert proc.returncode in codes, (proc.returncode, proc.stdout[-1500:], proc.stderr[-1500:])
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr, proc.stderr
    if proc.returncode == 2:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert {p.name: sha256_path(p) for p in sorted(user.iterdir())} == before, "a user file changed or vanished"
    assert sha256_path(vid) == vid_digest, "the source video changed"
    assert not list(tmp_path.rglob("PWNED")), "code named by the bundle ran"
    if proc.returncode == 0 and b.is_dir():
        assert not list(b.glob(".build-*")), "temporary build folders left in the bundle"
