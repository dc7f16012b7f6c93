"""The engine provenance sidecar and the guard that compares it with the device before deserializing."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgecv.backends.tensorrt_guard import (
    DeviceInfo,
    check_engine,
    make_sidecar,
    mismatch_message,
    nvidia_driver_version,
    probe_device,
    read_sidecar,
    rebuild_config,
    rebuild_mismatched,
    sidecar_path,
)

ORIN = DeviceInfo(
    tensorrt="10.3.0.30",
    cuda_runtime="12.6",
    cuda_driver="12.6",
    gpu="Orin",
    compute_capability="8.7",
    l4t="36.4.0",
    jetpack="6.1",
    dla_cores=2,
)


def _sidecar(device: DeviceInfo = ORIN, **kw) -> dict:
    args = {
        "precision": "fp16",
        "dla_core": None,
        "profiles": {"input": [[1, 3, 32, 32]] * 3},
        "builder_flags": {"workspace_mb": 1024},
        "onnx_rel": "model.onnx",
        "onnx_sha256": "ab" * 32,
        "target": "agx-orin",
        "hardware_compat": None,
        "version_compatible": False,
        "plan": {"onnx_kind": "float"},
    }
    args.update(kw)
    return make_sidecar(device, **args)


def _with(**changes) -> DeviceInfo:
    d = ORIN.to_dict()
    d.update(changes)
    return DeviceInfo(**d)


def test_match_has_no_fields() -> None:
    assert check_engine(_sidecar(), ORIN) == []
    # the driver version and JetPack patch level do not make an engine unloadable
    assert check_engine(_sidecar(), _with(nvidia_driver="540.4.0", cuda_driver="12.8", l4t="36.4.3")) == []


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"tensorrt": "10.13.3.9"}, "tensorrt"),
        ({"tensorrt": "10.3.0.26"}, "tensorrt"),  # the build number counts: TensorRT matches plans exactly
        ({"cuda_runtime": "13.0"}, "cuda"),
        ({"compute_capability": "8.9"}, "compute_capability"),
        ({"gpu": "NVIDIA L4"}, "gpu"),
        ({"l4t": "36.3.0"}, "l4t"),
        ({"l4t": None}, "l4t"),  # a Jetson engine on a desktop
    ],
)
def test_each_mismatch_field(changes: dict, field: str) -> None:
    assert check_engine(_sidecar(), _with(**changes)) == [field]


def test_dla_core_mismatch() -> None:
    side = _sidecar(dla_core=1, precision="int8")
    assert check_engine(side, ORIN) == []
    assert check_engine(side, _with(dla_cores=1)) == ["dla_core"]  # Orin NX 8 GB has one DLA


def test_version_compatible_accepts_newer_runtime_only() -> None:
    side = _sidecar(version_compatible=True)
    assert check_engine(side, _with(tensorrt="10.7.0.23")) == []
    assert check_engine(side, _with(tensorrt="11.1.0.5")) == []  # 10 → 11 is supported
    assert check_engine(side, _with(tensorrt="10.2.0.1")) == ["tensorrt"]  # older runtime
    old = _sidecar(_with(tensorrt="8.6.2.3"), version_compatible=True)
    assert check_engine(old, _with(tensorrt="11.0.0.1")) == ["tensorrt"]  # 8 → 11 is not


def test_hardware_compat_accepts_any_ampere_plus_discrete_gpu() -> None:
    a100 = DeviceInfo(tensorrt="10.13.3.9", cuda_runtime="12.9", gpu="NVIDIA A100", compute_capability="8.0")
    side = _sidecar(a100, hardware_compat="ampere+")
    l4 = DeviceInfo(tensorrt="10.13.3.9", cuda_runtime="12.9", gpu="NVIDIA L4", compute_capability="8.9")
    assert check_engine(side, l4) == []
    t4 = DeviceInfo(tensorrt="10.13.3.9", cuda_runtime="12.9", gpu="Tesla T4", compute_capability="7.5")
    assert check_engine(side, t4) == ["compute_capability"]
    assert check_engine(_sidecar(a100), l4) == ["compute_capability", "gpu"]


def test_message_is_one_line_with_the_rebuild_command() -> None:
    here = DeviceInfo(tensorrt="10.13.3.9", cuda_runtime="12.9", gpu="NVIDIA L4", compute_capability="8.9")
    fields = check_engine(_sidecar(), here)
    msg = mismatch_message(_sidecar(), here, fields, "out/cls")
    assert "\n" not in msg
    assert msg.startswith(
        "engine built for sm_87 with TensorRT 10.3 CUDA 12.6 on JetPack 6.1 (Orin); "
        "this device is sm_89 with TensorRT 10.13"
    )
    assert "(differs: TensorRT, compute capability, GPU, JetPack/L4T)" in msg
    assert "'edgecv compile out/cls --backend tensorrt --precision fp16 --target x86'" in msg
    assert msg.endswith("or pass --rebuild")
    side = _sidecar(dla_core=1, precision="int8")
    msg = mismatch_message(side, _with(tensorrt="10.4.0.1"), ["tensorrt"], "b")
    assert "--target agx-orin --device dla:1 --calib CALIB" in msg and "DLA core 1" in msg


def test_sidecar_roundtrip_and_format(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    assert read_sidecar(engine) is None
    sidecar_path(engine).write_text(json.dumps(_sidecar()))
    side = read_sidecar(engine)
    assert side is not None and side["device"]["compute_capability"] == "8.7"
    assert set(side) >= {"precision", "dla_core", "profiles", "builder_flags", "onnx_sha256", "device"}
    assert set(side["device"]) >= {
        "tensorrt",
        "cuda_runtime",
        "cuda_driver",
        "nvidia_driver",
        "gpu",
        "compute_capability",
        "l4t",
        "jetpack",
    }
    assert engine.read_bytes() == b"plan"  # the engine stays a raw plan
    sidecar_path(engine).write_text(json.dumps({"format": "other"}))
    assert read_sidecar(engine) is None


def test_probe_device_from_fake_modules(tmp_path: Path) -> None:
    props = SimpleNamespace(name=b"NVIDIA L4\0\0", major=8, minor=9)
    cudart = SimpleNamespace(
        cudaRuntimeGetVersion=lambda: (0, 12060),
        cudaDriverGetVersion=lambda: (0, 12080),
        cudaGetDeviceProperties=lambda i: (0, props),
    )
    trt = SimpleNamespace(__version__="10.13.3.9")
    d = probe_device(trt, cudart, 0, dla_cores=0, release={"l4t": None})
    assert (d.gpu, d.compute_capability, d.cuda_runtime, d.cuda_driver, d.tensorrt) == (
        "NVIDIA L4",
        "8.9",
        "12.6",
        "12.8",
        "10.13.3.9",
    )
    failing = SimpleNamespace(cudaRuntimeGetVersion=lambda: (35, 0))
    assert probe_device(trt, failing, release={}).cuda_runtime is None
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build\n")
    assert nvidia_driver_version(proc) == "570.86.15"
    assert nvidia_driver_version(tmp_path / "none") is None


def test_rebuild_config_from_sidecar(tmp_path: Path) -> None:
    bundle = SimpleNamespace(path=lambda rel: tmp_path / rel, file=lambda rel: tmp_path / rel)
    side = _sidecar(
        precision="int8",
        dla_core=0,
        onnx_rel="onnxruntime/int8/model.qdq.onnx",
        plan={"onnx_kind": "qdq"},
        builder_flags={"workspace_mb": 512, "keep_float": ["/0/Conv"]},
    )
    cfg = rebuild_config(bundle, side, ORIN)
    assert (cfg.precision, cfg.device, cfg.workspace_mb, cfg.target) == ("int8", "dla:0", 512, "agx-orin")
    assert cfg.onnx_path == tmp_path / "onnxruntime/int8/model.qdq.onnx" and cfg.keep_float == []
    cfg = rebuild_config(bundle, _sidecar(), DeviceInfo(compute_capability="8.9"))
    assert (cfg.device, cfg.target, cfg.onnx_path) == ("cuda:0", "x86", None)


def test_runner_guard_refuses_or_rebuilds(tmp_path: Path, monkeypatch) -> None:
    """The runner's guard with a fake device: refuse in one line, or rebuild under --rebuild."""
    from edgecv.backends import tensorrt as trt_backend
    from edgecv.backends.tensorrt import TensorRTRunner
    from edgecv.errors import BackendError

    engine = tmp_path / "tensorrt/fp16/model.engine"
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"plan")
    sidecar_path(engine).write_text(json.dumps(_sidecar()))
    here = _with(compute_capability="8.9", gpu="NVIDIA L4", l4t=None)
    monkeypatch.setattr("edgecv.backends.tensorrt_guard.probe_device", lambda *a, **k: here)
    bundle = SimpleNamespace(root=tmp_path, path=lambda rel: tmp_path / rel, file=lambda rel: tmp_path / rel)
    runner = TensorRTRunner(engine, "fp16", bundle=bundle)  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="this device is sm_89.*or pass --rebuild"):
        runner._guard(None, None, 0)
    built: list = []

    class FakeBuilder:
        def build(self, b, config):
            built.append(config)
            sidecar_path(engine).write_text(json.dumps(_sidecar(here)))
            return SimpleNamespace(path="tensorrt/fp16/model.engine")

    monkeypatch.setattr(trt_backend, "TensorRTBuilder", FakeBuilder)
    with rebuild_mismatched():
        runner._guard(None, None, 0)
    assert runner.rebuilt and built[0].target == "x86" and built[0].precision == "fp16"
    assert runner.provenance is not None and runner.provenance["device"]["compute_capability"] == "8.9"
    assert TensorRTRunner(engine, "fp16", device="dla:1").device == "dla:1"


def test_record_sidecar_for_a_script_built_engine(tmp_path: Path) -> None:
    """What trtexec.sh calls after building, where edgecv and TensorRT's Python are on the device."""
    from edgecv._io import sha256_path
    from edgecv.backends.tensorrt_guard import main, record_sidecar

    root = tmp_path / "bundle"
    engine = root / "tensorrt/int8/model.engine"
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"plan")
    qdq = root / "onnxruntime/int8/model.qdq.onnx"
    qdq.parent.mkdir(parents=True)
    qdq.write_bytes(b"onnx")
    props = SimpleNamespace(name=b"Orin", major=8, minor=7)
    cudart = SimpleNamespace(
        cudaRuntimeGetVersion=lambda: (0, 12060),
        cudaDriverGetVersion=lambda: (0, 12060),
        cudaGetDeviceProperties=lambda i: (0, props),
    )

    class Runtime:
        num_DLA_cores = 2

        def __init__(self, logger: object) -> None:
            pass

    trt = SimpleNamespace(
        __version__="10.3.0.30",
        Runtime=Runtime,
        Logger=type("Logger", (), {"ERROR": 1, "__init__": lambda self, lvl: None}),
    )
    plan = {
        "precision": "int8",
        "dla_core": 0,
        "shapes": {"input": [[1, 3, 32, 32]] * 3},
        "workspace_mb": 1024,
        "flags": ["int8", "fp16"],
        "strongly_typed": False,
        "onnx_kind": "qdq",
    }
    (engine.parent / "layers.json").write_text(
        json.dumps(
            {
                "Layers": [
                    {"Name": "{ForeignNode[/0/Conv.../7/Relu]}", "LayerType": "ForeignNode"},
                    {"Name": "/8/Gemm", "LayerType": "CaskGemmConvolution"},
                ]
            }
        )
    )
    out = record_sidecar(engine, plan, "onnxruntime/int8/model.qdq.onnx", "agx-orin", trt, cudart)
    side = read_sidecar(engine)
    assert out == sidecar_path(engine) and side is not None
    assert side["onnx_sha256"] == sha256_path(qdq) and side["dla_core"] == 0 and side["target"] == "agx-orin"
    assert side["builder_flags"]["built_by"] == "trtexec.sh" and side["device"]["dla_cores"] == 2
    assert side["dla_gpu_fallback_layers"] == ["/8/Gemm"]
    assert side["device"]["compute_capability"] == "8.7" and side["device"]["tensorrt"] == "10.3.0.30"
    assert engine.read_bytes() == b"plan"
    assert main(["nonsense"]) == 2


def test_version_compatible_engine_runs_host_code_only_when_allowed(tmp_path: Path, monkeypatch) -> None:
    """A version-compatible plan embeds TensorRT's lean runtime (host code): a bundle's sidecar alone never turns
    engine_host_code_allowed on; the user's EDGECV_TRUST_ENGINE_CODE=1 does."""
    from edgecv.backends.tensorrt import TRUST_ENGINE_CODE_ENV, TensorRTRunner
    from edgecv.errors import BackendError

    runner = TensorRTRunner(tmp_path / "model.engine", "fp16")
    runner.provenance = {"version_compatible": False}
    assert runner.needs_host_code() is False
    runner.provenance = {"version_compatible": True}
    monkeypatch.delenv(TRUST_ENGINE_CODE_ENV, raising=False)
    with pytest.raises(BackendError, match="lean runtime as host code.*EDGECV_TRUST_ENGINE_CODE=1"):
        runner.needs_host_code()
    monkeypatch.setenv(TRUST_ENGINE_CODE_ENV, "1")
    assert runner.needs_host_code() is True
