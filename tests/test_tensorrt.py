"""TensorRT: the trtexec command line (no TensorRT needed) and, on a GPU machine, engine build and run."""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import make_tiny_bundle

from edgecv._io import sha256_path
from edgecv.backends.base import BuildConfig
from edgecv.bundle import Bundle

# pristine / bundle_dir fixtures: tests/conftest.py


def _args(cmd: str) -> dict[str, str]:
    parts = shlex.split(cmd)
    assert parts[0] == "trtexec"
    return dict(p[2:].split("=", 1) if "=" in p else (p[2:], "") for p in parts[1:])


def script_commands(text: str) -> list[dict[str, str]]:
    """Every trtexec command in an emitted script (one per TensorRT variant it handles)."""
    return [_args(line.strip()) for line in text.splitlines() if line.strip().startswith("trtexec ")]


@pytest.fixture(scope="module")
def qdq_bundle(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle after 'compile -b tensorrt -p int8 --emit-trtexec --calib': it holds a QDQ model."""
    from conftest import run_cli

    root = tmp_path_factory.mktemp("qdq") / "tiny"
    import shutil

    shutil.copytree(pristine, root)
    calib = root.parent / "calib.npz"
    np.savez(calib, input=np.random.default_rng(5).standard_normal((40, 3, 32, 32)).astype(np.float32))
    proc = run_cli(
        "compile", str(root), "-b", "tensorrt", "-p", "int8", "--emit-trtexec", "--calib", str(calib), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    return root


def test_trtexec_fp16_dynamic_batch(bundle_dir: Path) -> None:
    from edgecv.backends.tensorrt import trtexec_command

    b = Bundle.open(bundle_dir)
    cmd = trtexec_command(b, BuildConfig(precision="fp16", batch_range=(1, 4, 8), workspace_mb=512))
    a = _args(cmd)
    root = bundle_dir.resolve()
    assert a["onnx"] == str(root / "model.onnx")
    assert a["saveEngine"] == str(root / "tensorrt/fp16/model.engine")
    assert "fp16" in a and "int8" not in a and "stronglyTyped" not in a
    assert a["minShapes"] == "input:1x3x32x32"
    assert a["optShapes"] == "input:4x3x32x32"
    assert a["maxShapes"] == "input:8x3x32x32"
    assert a["timingCacheFile"] == str(root / "tensorrt/timing.cache")
    assert a["memPoolSize"] == "workspace:512M"
    assert "layerPrecisions" not in a


def test_trtexec_takes_bundle_batch_range_and_keep_float(bundle_dir: Path) -> None:
    from edgecv.backends.tensorrt import trtexec_command

    b = Bundle.open(bundle_dir)  # make_tiny_bundle: batch_range [1, 1, 8]
    a = _args(trtexec_command(b, BuildConfig(precision="fp16", keep_float=["/0/Conv", "/8/Gemm"]), relative=True))
    assert a["onnx"] == "model.onnx" and a["saveEngine"] == "tensorrt/fp16/model.engine"
    assert (a["minShapes"], a["optShapes"], a["maxShapes"]) == ("input:1x3x32x32", "input:1x3x32x32", "input:8x3x32x32")
    assert a["precisionConstraints"] == "obey"
    assert a["layerPrecisions"] == "/0/Conv:fp32,/8/Gemm:fp32"


def test_trtexec_int8_refuses_float_graph_fp32_has_no_flag(bundle_dir: Path) -> None:
    from edgecv.backends.tensorrt import trtexec_command
    from edgecv.errors import ConfigError

    b = Bundle.open(bundle_dir)
    with pytest.raises(ConfigError, match="expected a QDQ ONNX model.*found no Q/DQ nodes"):
        trtexec_command(b, BuildConfig(precision="int8"))
    a32 = _args(trtexec_command(b, BuildConfig(precision="fp32")))
    assert not {"fp16", "int8", "bf16", "stronglyTyped"} & set(a32)


def _qdq_ops(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node} & {"QuantizeLinear", "DequantizeLinear"}


def test_cli_int8_emit_script_builds_from_qdq(qdq_bundle: Path) -> None:
    """The bug: the int8 script named the float model.onnx and ignored --calib."""
    script = qdq_bundle / "tensorrt/int8/trtexec.sh"
    commands = script_commands(script.read_text())
    assert len(commands) == 4  # TensorRT 11 with DLA, 11, 10 and 8.6 variants
    for a in commands:
        onnx_file = qdq_bundle / a["onnx"]
        assert a["onnx"] == "onnxruntime/int8/model.qdq.onnx"
        assert _qdq_ops(onnx_file) == {"QuantizeLinear", "DequantizeLinear"}
        assert a["saveEngine"] == "tensorrt/int8/model.engine"
    typed11dla, typed11, typed10, legacy = commands
    assert typed11dla == typed11  # a GPU build: the DLA-capable TensorRT 11 runs the same command
    assert "stronglyTyped" not in typed11 and "int8" not in typed11  # always strongly typed on TensorRT 11
    assert "stronglyTyped" in typed10 and "int8" not in typed10
    assert "int8" in legacy and "stronglyTyped" not in legacy  # TensorRT 8.6: Q/DQ honoured with --int8
    b = Bundle.open(qdq_bundle)
    assert b.artifact("onnxruntime", "int8") is not None  # --calib was used, not ignored


def test_cli_int8_emit_reuses_qdq_or_refuses(qdq_bundle: Path, bundle_dir: Path, cli, tmp_path: Path) -> None:
    import shutil

    reuse = tmp_path / "reuse"
    shutil.copytree(qdq_bundle, reuse)
    (reuse / "tensorrt/int8/trtexec.sh").unlink()
    b = Bundle.open(reuse, verify=False)
    b.manifest.files.pop("tensorrt/int8/trtexec.sh", None)
    b.save()
    proc = cli("compile", str(reuse), "-b", "tensorrt", "-p", "int8", "--emit-trtexec", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["artifacts"][0]["qdq_onnx"] == "onnxruntime/int8/model.qdq.onnx"
    for a in script_commands((reuse / "tensorrt/int8/trtexec.sh").read_text()):
        assert _qdq_ops(reuse / a["onnx"])
    proc = cli("compile", str(bundle_dir), "-b", "tensorrt", "-p", "int8", "--emit-trtexec")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "expected a QDQ model" in lines[0] and "--calib" in lines[0]
    assert not (bundle_dir / "tensorrt").exists()


def test_trtexec_static_batch_has_no_shapes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from edgecv.backends.tensorrt import trtexec_command

    b = make_tiny_bundle(tmp_path / "static", size=32, dynamic_batch=False)
    a = _args(trtexec_command(b, BuildConfig(precision="fp16")))
    assert not {"minShapes", "optShapes", "maxShapes"} & set(a)


def test_cli_emit_trtexec_writes_script(cli, bundle_dir: Path) -> None:
    proc = cli(
        "compile",
        str(bundle_dir),
        "--backend",
        "tensorrt",
        "--precision",
        "fp16",
        "--emit-trtexec",
        "--workspace-mb",
        "1024",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["artifacts"]
    script = bundle_dir / "tensorrt/fp16/trtexec.sh"
    assert row["file"] == str(script)
    assert script.is_file() and os.stat(script).st_mode & stat.S_IXUSR
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert 'cd "$(dirname "$0")/../.."' in text
    t11dla, t11, t10, t86 = script_commands(text)
    assert t11dla == t11
    a = t10
    assert a["onnx"] == "model.onnx" and "fp16" in a and a["memPoolSize"] == "workspace:1024M"
    assert t86 == t10  # TensorRT 8.6 and 10 both take --fp16 over the float graph
    # TensorRT 11 has no --fp16: a strongly typed build of the fp16 graph the script carries
    assert t11["onnx"] == "tensorrt/fp16/model.fp16.onnx" and "fp16" not in t11
    assert (bundle_dir / t11["onnx"]).is_file()
    assert a["maxShapes"] == "input:8x3x32x32"
    b = Bundle.open(bundle_dir)  # hash verified
    assert b.manifest.files["tensorrt/fp16/trtexec.sh"] == sha256_path(script)
    assert any(h.get("event") == "trtexec_script" for h in b.manifest.history)
    assert "tensorrt:fp16" not in b.manifest.artifacts  # a script is not an engine


def test_cli_tensorrt_missing_says_so_in_one_line(cli, bundle_dir: Path) -> None:
    from edgecv._lazy import is_available

    if is_available("tensorrt"):
        pytest.skip("TensorRT is installed here")
    proc = cli("compile", str(bundle_dir), "--backend", "tensorrt", "--precision", "fp16")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "TensorRT is not installed" in lines[0] and "edgecv[tensorrt]" in lines[0]
    assert "--emit-trtexec" in lines[0]
    assert not (bundle_dir / "tensorrt").exists()


def test_runner_without_engine_names_the_command(bundle_dir: Path) -> None:
    from edgecv.backends import open_runner
    from edgecv.errors import BackendError

    with pytest.raises(BackendError, match="--backend tensorrt --precision fp16"):
        open_runner(Bundle.open(bundle_dir), "tensorrt", "fp16")


# ---------------------------------------------------------------------- needs TensorRT + a CUDA GPU
@pytest.mark.tensorrt
@pytest.mark.parametrize("precision,rel_tol", [("fp32", 1e-3), ("fp16", 1e-2)])
def test_build_and_run_engine(bundle_dir: Path, precision: str, rel_tol: float) -> None:
    from edgecv.backends import open_runner
    from edgecv.backends.tensorrt import TIMING_CACHE, TensorRTBuilder

    b = Bundle.open(bundle_dir)
    art = TensorRTBuilder().build(b, BuildConfig(precision=precision, device="cuda:0", workspace_mb=256))
    assert art.path == f"tensorrt/{precision}/model.engine"
    b = Bundle.open(bundle_dir)
    assert b.artifact("tensorrt", precision) is not None
    assert (bundle_dir / TIMING_CACHE).stat().st_size > 0
    ref = b.load_reference()
    x, y = ref["inputs"]["input"], ref["outputs"]["output"]
    with open_runner(b, "tensorrt", precision) as r:
        assert r.input_spec[0].shape == (None, 3, 32, 32)
        for batch in (1, 4):
            out = r.infer({"input": x[:batch]})["output"]
            assert float(np.abs(out - y[:batch]).max()) <= rel_tol * float(np.abs(y).max())
        assert r.precision in ("fp32", "fp16")


@pytest.mark.tensorrt
def test_keep_float_layers_obey(bundle_dir: Path) -> None:
    from edgecv.backends.tensorrt import TensorRTBuilder
    from edgecv.errors import ConfigError

    b = Bundle.open(bundle_dir)
    with pytest.raises(ConfigError, match="not in the TensorRT network"):
        TensorRTBuilder().build(b, BuildConfig(precision="fp16", keep_float=["no_such_layer"], workspace_mb=256))


def test_trtexec_int8_keep_float_is_in_the_graph(qdq_bundle: Path) -> None:
    """A QDQ build is strongly typed: kept-float layers are the ones without Q/DQ, no --layerPrecisions."""
    from edgecv.backends.tensorrt import trtexec_command

    qdq = qdq_bundle / "onnxruntime/int8/model.qdq.onnx"
    a = _args(
        trtexec_command(Bundle.open(qdq_bundle), BuildConfig(precision="int8", keep_float=["/8/Gemm"], onnx_path=qdq))
    )
    assert "stronglyTyped" in a and "layerPrecisions" not in a and "precisionConstraints" not in a


def _stub_dir() -> Path | None:
    d = Path(__file__).resolve().parents[1] / ".mypy_stubs"
    return d if (d / "tensorrt_bindings").is_dir() else None


@pytest.mark.skipif(_stub_dir() is None, reason="run 'make typecheck' first (it prepares .mypy_stubs)")
def test_mypy_catches_misspelt_tensorrt_api(tmp_path: Path) -> None:
    """The type check in 'make test' is only worth having if a wrong TensorRT name fails it."""
    import os
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[1] / "edgecv" / "backends" / "tensorrt.py"
    bad = tmp_path / "trt_bad.py"
    text = src.read_text()
    assert "execute_async_v3" in text
    bad.write_text(text.replace("execute_async_v3", "execute_async_v2"))
    env = dict(os.environ, MYPYPATH=str(_stub_dir()))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--no-incremental", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        cwd=src.parents[2],
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "execute_async_v2" in proc.stdout and "attr-defined" in proc.stdout


def test_int8_build_config_keeps_the_callers_options(tmp_path: Path) -> None:
    """compile -b tensorrt -p int8 --target/--device dla reach the engine build through compile_int8."""
    from edgecv.quant.tensorrt import int8_build_config

    base = BuildConfig(
        precision="int8", device="dla:1", target="agx-orin", workspace_mb=512, version_compatible=False, emit_only=True
    )
    cfg = int8_build_config(tmp_path / "m.qdq.onnx", ["/8/Gemm"], None, base)
    assert (cfg.device, cfg.target, cfg.workspace_mb, cfg.emit_only) == ("dla:1", "agx-orin", 512, False)
    assert cfg.onnx_path == tmp_path / "m.qdq.onnx" and cfg.keep_float == ["/8/Gemm"] and cfg.strongly_typed
    plain = int8_build_config(tmp_path / "m.qdq.onnx", [], "cuda:1")
    assert (plain.device, plain.target) == ("cuda:1", None)


def test_pipeline_tensorrt_int8_without_tensorrt_writes_the_qdq_script(bundle_dir: Path, tmp_path: Path) -> None:
    """A recipe's compile: [{backend: tensorrt, precision: int8}] on a machine without TensorRT."""
    from edgecv._lazy import is_available
    from edgecv.config.schema import QuantizeConfig, Recipe
    from edgecv.pipeline import _compile

    if is_available("tensorrt"):
        pytest.skip("TensorRT is installed here: the pipeline builds the engine instead")
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(7).standard_normal((24, 3, 32, 32)).astype(np.float32))
    rec = Recipe.model_validate({"model": {"name": "x"}, "quantize": QuantizeConfig(calib=str(calib), samples=16)})
    b = Bundle.open(bundle_dir)
    _compile(b, "tensorrt", "int8", rec, "classify", tmp_path, None)
    b = Bundle.open(bundle_dir)
    art = b.artifact("onnxruntime", "int8")
    assert art is not None and art.extra["samples"] == 16
    for a in script_commands((bundle_dir / "tensorrt/int8/trtexec.sh").read_text()):
        assert a["onnx"] == "onnxruntime/int8/model.qdq.onnx" and _qdq_ops(bundle_dir / a["onnx"])
