"""A corrupt ONNX file in a bundle: every command that loads it says so in one line and exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecv._io import sha256_path

pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime, pytest.mark.openvino]


@pytest.fixture(scope="module")
def corrupt_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import make_tiny_bundle

    b = make_tiny_bundle(tmp_path_factory.mktemp("corrupt") / "b")
    (b.root / "model.onnx").write_bytes(b"\x08\x07not an onnx model" * 8)
    # the hash is updated too, so it is the file's content (not the manifest check) that must be caught
    m = json.loads((b.root / "manifest.json").read_text())
    m["files"]["model.onnx"] = sha256_path(b.root / "model.onnx")
    (b.root / "manifest.json").write_text(json.dumps(m))
    return b.root


@pytest.mark.parametrize(
    "args,expect",
    [
        (["bench", "-b", "onnxruntime", "--iters", "2"], "INVALID_PROTOBUF"),
        (["bench", "-b", "openvino", "--iters", "2"], "not a valid ONNX model"),
        (["validate", "-b", "onnxruntime"], "could not load"),
        (["validate", "-b", "openvino"], "not a valid ONNX model"),
        (["compile", "-b", "openvino", "-p", "fp32"], "not a valid ONNX model"),
    ],
)
def test_corrupt_onnx_is_one_line_exit_2(corrupt_bundle: Path, cli, args: list[str], expect: str) -> None:
    proc = cli(args[0], str(corrupt_bundle), *args[1:])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    manifest = json.loads((corrupt_bundle / "manifest.json").read_text())
    assert manifest["artifacts"] == {}  # nothing half-built was recorded
