"""``edgecv compile``: artifacts land in the bundle atomically, with manifest entries and hashes, and they run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import openvino_precision_ran

from edgecv._io import sha256_path
from edgecv.backends import open_runner
from edgecv.backends.base import BuildConfig
from edgecv.bundle import Bundle

# pristine / bundle_dir fixtures: tests/conftest.py


@pytest.mark.openvino
@pytest.mark.parametrize("precision,rel_tol", [("fp32", 1e-4), ("fp16", 1e-2)])
def test_compile_openvino_records_and_runs(cli, bundle_dir: Path, precision: str, rel_tol: float) -> None:
    proc = cli("compile", str(bundle_dir), "--backend", "openvino", "--precision", precision, "--json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["artifacts"]
    assert row["backend"] == "openvino" and row["precision"] == precision and row["device"] == "CPU"
    assert row["size_mb"] > 0

    b = Bundle.open(bundle_dir)  # verifies every hash in the manifest
    art = b.artifact("openvino", precision)
    assert art is not None
    assert art.path == f"openvino/{precision}/model.xml"
    assert (bundle_dir / art.path).is_file() and (bundle_dir / art.path).with_suffix(".bin").is_file()
    assert art.sha256 == sha256_path(bundle_dir / art.path) == row["sha256"]
    assert b.manifest.files[f"openvino/{precision}"] == sha256_path(bundle_dir / f"openvino/{precision}")
    assert art.versions["openvino"] and art.versions["edgecv"]
    assert art.build_flags["compress_to_fp16"] is (precision == "fp16")
    assert art.created
    assert any(h["key"] == f"openvino:{precision}" for h in b.manifest.history)
    assert not [p for p in bundle_dir.iterdir() if p.name.startswith(".")], "temporary files left behind"

    ref = b.load_reference()
    x, y = ref["inputs"]["input"], ref["outputs"]["output"]
    with open_runner(b, "openvino", precision, threads=1) as r:
        assert r.model_path == bundle_dir / art.path  # the IR, not the ONNX
        assert r.precision == openvino_precision_ran(precision)  # what this CPU really runs, asked of it
        out = r.infer({"input": x})["output"]
    err = float(np.abs(out - y).max())
    assert err <= rel_tol * float(np.abs(y).max())


@pytest.mark.openvino
def test_fp16_ir_stores_half_weights(bundle_dir: Path) -> None:
    from edgecv.backends.openvino import OpenVINOBuilder

    b = Bundle.open(bundle_dir)
    OpenVINOBuilder().build(b, BuildConfig(precision="fp32"))
    OpenVINOBuilder().build(b, BuildConfig(precision="fp16"))
    size32 = (bundle_dir / "openvino/fp32/model.bin").stat().st_size
    size16 = (bundle_dir / "openvino/fp16/model.bin").stat().st_size
    # weights are most of the .bin: compression roughly halves it
    assert size16 < 0.6 * size32


@pytest.mark.openvino
def test_interrupted_compile_leaves_nothing(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import openvino as ov

    from edgecv.backends.openvino import OpenVINOBuilder

    real_save = ov.save_model

    def save_then_die(model, path, *a, **kw):
        real_save(model, path, *a, **kw)  # the files are fully written…
        Path(path).with_suffix(".bin").write_bytes(b"half")  # …and one is then half-overwritten
        raise KeyboardInterrupt("simulated interruption mid-write")

    monkeypatch.setattr(ov, "save_model", save_then_die)
    b = Bundle.open(bundle_dir)
    before = json.loads((bundle_dir / "manifest.json").read_text())
    with pytest.raises(KeyboardInterrupt):
        OpenVINOBuilder().build(b, BuildConfig(precision="fp16"))
    after = json.loads((bundle_dir / "manifest.json").read_text())
    assert after == before
    assert "openvino:fp16" not in Bundle.open(bundle_dir).manifest.artifacts
    assert not (bundle_dir / "openvino").exists()
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["manifest.json", "model.onnx", "reference.npz"]


@pytest.mark.onnxruntime
def test_compile_onnxruntime_fp16(cli, bundle_dir: Path) -> None:
    proc = cli("compile", str(bundle_dir), "--backend", "onnxruntime", "--precision", "fp16")
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime" in proc.stdout and "fp16" in proc.stdout  # the table
    b = Bundle.open(bundle_dir)
    art = b.artifact("onnxruntime", "fp16")
    assert art is not None and art.path == "onnxruntime/fp16/model.onnx"
    import onnx

    m = onnx.load(str(bundle_dir / art.path))
    assert {i.data_type for i in m.graph.initializer} == {onnx.TensorProto.FLOAT16}
    # float32 in and out, so callers feed the same arrays
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(p.key == "edgecv.contract" for p in m.metadata_props)


@pytest.mark.onnxruntime
def test_onnxruntime_missing_precision_names_the_command(bundle_dir: Path) -> None:
    from edgecv.errors import BackendError

    with pytest.raises(BackendError, match="edgecv compile .* --backend onnxruntime --precision fp16"):
        open_runner(Bundle.open(bundle_dir), "onnxruntime", "fp16")


def test_cli_missing_bundle_exits_2(cli, tmp_path: Path) -> None:
    proc = cli("compile", str(tmp_path / "nope"), "--backend", "openvino")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "expected a bundle folder" in lines[0]


def test_cli_unknown_backend_exits_2(cli, bundle_dir: Path) -> None:
    proc = cli("compile", str(bundle_dir), "--backend", "tflite")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tflite" in lines[0] and "openvino" in lines[0]


def test_cli_bad_precision_exits_2(cli, bundle_dir: Path) -> None:
    proc = cli("compile", str(bundle_dir), "--backend", "openvino", "--precision", "fp8")
    assert proc.returncode == 2
    assert "fp32, fp16, bf16, int8" in proc.stderr and "fp8" in proc.stderr


def test_cli_int8_without_calib_is_an_error(cli, bundle_dir: Path) -> None:
    proc = cli("compile", str(bundle_dir), "--backend", "openvino", "--precision", "int8")
    assert proc.returncode == 2
    assert "--calib" in proc.stderr
    assert json.loads((bundle_dir / "manifest.json").read_text())["artifacts"] == {}


def test_compile_and_quantize_take_the_same_int8_options() -> None:
    """One set of INT8 options: same names, same types and help, same defaults in both commands."""
    import inspect
    import typing

    from edgecv.cli import compile as compile_mod
    from edgecv.cli import quantize as quantize_mod

    shared = ("calib", "method", "val", "max_drop", "calib_limit", "quantize_head")
    c_hints = typing.get_type_hints(compile_mod.compile_cmd, include_extras=True)
    q_hints = typing.get_type_hints(quantize_mod.quantize, include_extras=True)
    c_sig = inspect.signature(compile_mod.compile_cmd).parameters
    q_sig = inspect.signature(quantize_mod.quantize).parameters
    for name in shared:
        assert c_hints[name] == q_hints[name], name  # the same Annotated alias from cli/options.py
        assert c_sig[name].default == q_sig[name].default, name
    assert c_sig["method"].default == "auto"
