"""``edgecv doctor``: versions and devices, as people and machines read them."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json

import pytest


def test_doctor_json(cli) -> None:
    proc = cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    v = report["versions"]
    import platform

    import numpy

    import edgecv

    assert v["python"] == platform.python_version()
    assert v["edgecv"] == edgecv.__version__
    assert v["numpy"] == numpy.__version__
    for name in ("torch", "torchvision", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt", "opencv"):
        assert name in v
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime

        assert v["onnxruntime"] == onnxruntime.__version__
        providers = {d["device"] for d in report["devices"] if d["backend"] == "onnxruntime"}
        assert "CPUExecutionProvider" in providers


def test_doctor_tensorrt_stubs_only(cli) -> None:
    pytest.importorskip("tensorrt_stubs")

    try:
        import tensorrt
    except ImportError:
        pytest.skip("no tensorrt namespace")
    if hasattr(tensorrt, "Builder"):
        pytest.skip("real TensorRT installed")
    proc = cli("doctor", "--json")
    v = json.loads(proc.stdout)["versions"]["tensorrt"]
    assert v.startswith("stubs only")
    assert importlib.metadata.version("tensorrt-stubs") in v


@pytest.mark.openvino
def test_doctor_lists_openvino_devices(cli) -> None:
    import openvino as ov

    core = ov.Core()
    proc = cli("doctor", "--json")
    devs = {d["device"]: d for d in json.loads(proc.stdout)["devices"] if d["backend"] == "openvino"}
    assert set(devs) == set(core.available_devices)
    cpu = devs["CPU"]
    assert cpu["name"] == core.get_property("CPU", "FULL_DEVICE_NAME")
    assert "FP32" in cpu["capabilities"]


def test_doctor_table(cli) -> None:
    proc = cli("doctor")
    assert proc.returncode == 0, proc.stderr
    assert "versions" in proc.stdout and "devices" in proc.stdout and "edgecv" in proc.stdout
