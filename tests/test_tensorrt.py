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
from helpers import make_tiny_bundle  # noqa: E402

from edgecv._io import sha256_path  # noqa: E402
from edgecv.backends.base import BuildConfig  # noqa: E402
from edgecv.bundle import Bundle  # noqa: E402


# pristine / bundle_dir fixtures: tests/conftest.py


def _args(cmd: str) -> dict[str, str]:
    parts = shlex.split(cmd)
    assert parts[0] == "trtexec"
    return dict(p[2:].split("=", 1) if "=" in p else (p[2:], "") for p in parts[1:])


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
    assert (a["minShapes"], a["optShapes"], a["maxShapes"]) == ("input:1x3x32x32", "input:1x3x32x32",
                                                                "input:8x3x32x32")
    assert a["precisionConstraints"] == "obey"
    assert a["layerPrecisions"] == "/0/Conv:fp32,/8/Gemm:fp32"


def test_trtexec_int8_is_strongly_typed_fp32_has_no_flag(bundle_dir: Path) -> None:
    from edgecv.backends.tensorrt import trtexec_command

    b = Bundle.open(bundle_dir)
    a8 = _args(trtexec_command(b, BuildConfig(precision="int8")))
    assert "stronglyTyped" in a8 and "int8" not in a8 and "fp16" not in a8
    a32 = _args(trtexec_command(b, BuildConfig(precision="fp32")))
    assert not {"fp16", "int8", "bf16", "stronglyTyped"} & set(a32)


def test_trtexec_static_batch_has_no_shapes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from edgecv.backends.tensorrt import trtexec_command

    b = make_tiny_bundle(tmp_path / "static", size=32, dynamic_batch=False)
    a = _args(trtexec_command(b, BuildConfig(precision="fp16")))
    assert not {"minShapes", "optShapes", "maxShapes"} & set(a)


def test_cli_emit_trtexec_writes_script(cli, bundle_dir: Path) -> None:
    proc = cli("compile", str(bundle_dir), "--backend", "tensorrt", "--precision", "fp16", "--emit-trtexec",
               "--workspace-mb", "1024", "--json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    script = bundle_dir / "tensorrt/fp16/trtexec.sh"
    assert row["file"] == str(script)
    assert script.is_file() and os.stat(script).st_mode & stat.S_IXUSR
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert 'cd "$(dirname "$0")/../.."' in text
    cmd_line = text.strip().splitlines()[-1]
    a = _args(cmd_line)
    assert a["onnx"] == "model.onnx" and "fp16" in a and a["memPoolSize"] == "workspace:1024M"
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


def test_trtexec_int8_keep_float_is_in_the_graph(bundle_dir: Path) -> None:
    """A QDQ build is strongly typed: kept-float layers are the ones without Q/DQ, no --layerPrecisions."""
    from edgecv.backends.tensorrt import trtexec_command

    a = _args(trtexec_command(Bundle.open(bundle_dir), BuildConfig(precision="int8", keep_float=["/8/Gemm"])))
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
    proc = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--no-incremental", str(bad)],
                          capture_output=True, text=True, env=env, cwd=src.parents[2])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "execute_async_v2" in proc.stdout and "attr-defined" in proc.stdout
