"""TensorRT build plans without TensorRT: features by hasattr, precision switches per version, DLA rules,
portability options, and the emitted script per target (run against a fake trtexec for each version)."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgecv.backends.base import BuildConfig
from edgecv.backends.tensorrt_plan import (
    LEGACY,
    TARGETS,
    TYPED,
    TYPED_ONLY,
    TYPED_ONLY_DLA,
    TrtFeatures,
    make_plan,
    trtexec_args,
)
from edgecv.bundle import Bundle, Contract
from edgecv.errors import ConfigError

CONTRACT = Contract(
    task="classify", input_shape=[1, 3, 32, 32], class_names=["a", "b"], output_names=["output"], batch_range=[1, 2, 8]
)


def _fake_trt(
    *, flags: tuple[str, ...], creation: tuple[str, ...], dla: bool = True, hw: bool = True
) -> SimpleNamespace:
    return SimpleNamespace(
        BuilderFlag=SimpleNamespace(**{f: object() for f in flags}),
        NetworkDefinitionCreationFlag=SimpleNamespace(**{f: object() for f in creation}),
        DeviceType=SimpleNamespace(GPU=0, **({"DLA": 1} if dla else {})),
        HardwareCompatibilityLevel=SimpleNamespace(NONE=0, **({"AMPERE_PLUS": 1} if hw else {})),
    )


TRT86 = _fake_trt(flags=("FP16", "INT8", "GPU_FALLBACK", "VERSION_COMPATIBLE"), creation=("EXPLICIT_BATCH",))
TRT10 = _fake_trt(
    flags=("FP16", "INT8", "BF16", "GPU_FALLBACK", "VERSION_COMPATIBLE"), creation=("EXPLICIT_BATCH", "STRONGLY_TYPED")
)
TRT11 = _fake_trt(flags=("GPU_FALLBACK", "VERSION_COMPATIBLE"), creation=("STRONGLY_TYPED",), dla=False)


def test_features_detected_by_attribute_not_version() -> None:
    f86, f10, f11 = (TrtFeatures.from_module(m, dla_cores=2) for m in (TRT86, TRT10, TRT11))
    assert (f86.strongly_typed, f86.precision_flags, f86.bf16_flag, f86.dla) == (False, True, False, True)
    assert (f10.strongly_typed, f10.precision_flags, f10.bf16_flag, f10.dla) == (True, True, True, True)
    assert (f11.strongly_typed, f11.precision_flags, f11.bf16_flag, f11.dla) == (True, False, False, False)
    assert TrtFeatures.from_module(TRT10, dla_cores=0).dla is False  # x86: DeviceType.DLA exists, no cores
    assert TrtFeatures.from_module(SimpleNamespace(__version__="99.0")).strongly_typed is False  # no guessing
    # the presets the script uses agree with detection (labels aside)
    for preset, mod in ((LEGACY, TRT86), (TYPED, TRT10)):
        got = TrtFeatures.from_module(mod, dla_cores=2)
        assert (got.strongly_typed, got.precision_flags, got.bf16_flag) == (
            preset.strongly_typed,
            preset.precision_flags,
            preset.bf16_flag,
        )


@pytest.mark.parametrize(
    "features,precision,kind,typed,flags",
    [
        (LEGACY, "fp16", "float", False, ["fp16"]),
        (TYPED, "fp16", "float", False, ["fp16"]),
        (TYPED_ONLY, "fp16", "fp16", True, []),
        (LEGACY, "int8", "qdq", False, ["int8"]),
        (TYPED, "int8", "qdq", True, []),
        (TYPED_ONLY, "int8", "qdq", True, []),
        (TYPED, "bf16", "float", False, ["bf16"]),
        (LEGACY, "fp32", "float", False, []),
        (TYPED_ONLY, "fp32", "float", True, []),
    ],
)
def test_precision_switches_per_version(
    features: TrtFeatures, precision: str, kind: str, typed: bool, flags: list[str]
) -> None:
    plan = make_plan(CONTRACT, precision, features)
    assert (plan.onnx_kind, plan.strongly_typed, plan.flags) == (kind, typed, flags)
    args = trtexec_args(plan, "m.onnx", "e.engine", "t.cache")
    # TensorRT 11's trtexec types every network: "--stronglyTyped is no longer needed" (NVIDIA migration page)
    assert ("--stronglyTyped" in args) == (typed and features.precision_flags)
    assert plan.always_typed == (not features.precision_flags)
    assert [a[2:] for a in args if a in ("--fp16", "--int8", "--bf16")] == flags


def test_bf16_refused_where_absent() -> None:
    with pytest.raises(ConfigError, match="BuilderFlag.BF16"):
        make_plan(CONTRACT, "bf16", LEGACY)
    with pytest.raises(ConfigError, match="strongly typed only"):
        make_plan(CONTRACT, "bf16", TYPED_ONLY)


def test_keep_float_goes_where_each_version_honours_it() -> None:
    weak = make_plan(CONTRACT, "fp16", TYPED, keep_float=["/0/Conv"])
    assert weak.keep_float == ["/0/Conv"] and weak.fp16_keep == []
    assert "--precisionConstraints=obey" in trtexec_args(weak, "m", "e", "t")
    typed = make_plan(CONTRACT, "fp16", TYPED_ONLY, keep_float=["/0/Conv"])
    assert typed.keep_float == [] and typed.fp16_keep == ["/0/Conv"]  # node block list of the fp16 conversion
    assert "--precisionConstraints=obey" not in trtexec_args(typed, "m", "e", "t")
    assert make_plan(CONTRACT, "int8", TYPED, keep_float=["/0/Conv"]).keep_float == []  # the QDQ graph says it


# ---------------------------------------------------------------------- DLA rules
def test_dla_forces_static_shapes_and_gpu_fallback() -> None:
    plan = make_plan(CONTRACT, "fp16", TYPED, target=TARGETS["agx-orin"], dla_core=1)
    assert plan.shapes["input"] == ((2, 3, 32, 32), (2, 3, 32, 32), (2, 3, 32, 32))  # min = opt = max
    assert plan.notes and "static" in plan.notes[0]
    assert plan.gpu_fallback and plan.dla_core == 1
    args = trtexec_args(plan, "m", "e", "t")
    assert "--useDLACore=1" in args and "--allowGPUFallback" in args
    assert "--minShapes=input:2x3x32x32" in args and "--maxShapes=input:2x3x32x32" in args


def test_dla_int8_on_tensorrt10_is_weakly_typed_with_fp16() -> None:
    plan = make_plan(CONTRACT, "int8", TYPED, target=TARGETS["orin-nx"], dla_core=0)
    assert (plan.onnx_kind, plan.strongly_typed, plan.flags) == ("qdq", False, ["int8", "fp16"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"precision": "fp32", "target": "agx-orin", "dla_core": 0}, "expected --precision fp16 or int8"),
        ({"precision": "bf16", "target": "agx-orin", "dla_core": 0}, "expected --precision fp16 or int8"),
        ({"precision": "fp16", "target": "orin-nano", "dla_core": 0}, "which has none"),
        ({"precision": "fp16", "target": "thor", "dla_core": 0}, "which has none"),
        ({"precision": "fp16", "target": "x86", "dla_core": 0}, "which has none"),
        ({"precision": "fp16", "target": "agx-orin", "dla_core": 2}, "expected a core below 2"),
        ({"precision": "fp16", "target": "agx-orin", "dla_core": 0, "features": TYPED_ONLY}, "no DLA support"),
        ({"precision": "fp16", "target": "agx-orin", "dla_core": 0, "hardware_compat": "ampere+"}, "expected a GPU"),
        ({"precision": "fp16", "target": "agx-orin", "dla_core": 0, "version_compatible": True}, "expected a GPU"),
    ],
)
def test_dla_refusals(kwargs: dict, match: str) -> None:
    feats = kwargs.pop("features", TYPED)
    target = TARGETS[kwargs.pop("target")]
    with pytest.raises(ConfigError, match=match):
        make_plan(CONTRACT, kwargs.pop("precision"), feats, target=target, **kwargs)


def test_portability_options_map_or_refuse() -> None:
    plan = make_plan(CONTRACT, "fp16", TYPED, hardware_compat="ampere+", version_compatible=True)
    args = trtexec_args(plan, "m", "e", "t")
    assert "--hardwareCompatibilityLevel=ampere+" in args and "--versionCompatible" in args
    with pytest.raises(ConfigError, match="discrete GPU target.*found agx-orin"):
        make_plan(CONTRACT, "fp16", TYPED, target=TARGETS["agx-orin"], hardware_compat="ampere+")
    with pytest.raises(ConfigError, match="expected ampere\\+"):
        make_plan(CONTRACT, "fp16", TYPED, hardware_compat="hopper+")
    old = TrtFeatures(False, True, False, False, hardware_compat=False, version_compat=False, label="TensorRT 8.5")
    with pytest.raises(ConfigError, match="8.6 or newer"):
        make_plan(CONTRACT, "fp16", old, version_compatible=True)


def test_target_workspace_defaults() -> None:
    assert make_plan(CONTRACT, "fp16", TYPED, target=TARGETS["orin-nano"]).workspace_mb == 1024
    assert make_plan(CONTRACT, "fp16", TYPED, target=TARGETS["thor"]).workspace_mb == 1024
    assert make_plan(CONTRACT, "fp16", TYPED, target=TARGETS["x86"]).workspace_mb == 4096
    assert make_plan(CONTRACT, "fp16", TYPED, target=TARGETS["x86"], workspace_mb=256).workspace_mb == 256


# ---------------------------------------------------------------------- the script, per target and TensorRT
_HELP = {  # the options each trtexec lists in --help that the script probes
    "trt86": "  --fp16  --int8  --useDLACore=N  --allowGPUFallback",
    "trt10": "  --fp16  --int8  --bf16  --stronglyTyped  --useDLACore=N  --allowGPUFallback",
    "trt11": "  --saveEngine  --allowGPUFallback",  # no precision flags; --stronglyTyped not listed (always on)
    "trt11dla": "  --saveEngine  --useDLACore=N  --allowGPUFallback",  # 11.4.1 on AGX Orin, JetPack 7.2.2+
}


def _fake_trtexec(tmp: Path, kind: str) -> tuple[Path, Path]:
    log = tmp / f"{kind}.args"
    exe = tmp / f"trtexec-{kind}"
    exe.write_text(
        f"#!/bin/sh\nif [ \"$1\" = --help ]; then echo '{_HELP[kind]}'; exit 0; fi\nprintf '%s\\n' \"$@\" > '{log}'\n"
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe, log


def _run_script(script: Path, exe: Path, log: Path) -> tuple[int, list[str], str]:
    # a python3 that has edgecv and TensorRT, as on JetPack 6: records the sidecar call instead of probing a GPU
    bin_dir = exe.parent / "bin"
    bin_dir.mkdir(exist_ok=True)
    py = bin_dir / "python3"
    py.write_text(f"#!/bin/sh\n[ \"$1\" = -c ] && exit 0\nprintf '%s\\n' \"$@\" > '{log}.python'\n")
    py.chmod(py.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, TRTEXEC=str(exe), PATH=f"{bin_dir}:{os.environ['PATH']}")
    proc = subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env, timeout=60)
    args = log.read_text().splitlines() if log.is_file() else []
    if log.is_file():
        log.unlink()
    return proc.returncode, args, proc.stderr


def _recorded(log: Path) -> list[str]:
    p = Path(f"{log}.python")
    out = p.read_text().splitlines() if p.is_file() else []
    if p.is_file():
        p.unlink()
    return out


@pytest.mark.parametrize("target", list(TARGETS))
def test_script_per_target_runs_the_variant_for_each_trtexec(bundle_dir: Path, tmp_path: Path, target: str) -> None:
    from edgecv.backends.tensorrt import plan_for, write_trtexec_script

    b = Bundle.open(bundle_dir)
    device = "dla:0" if TARGETS[target].dla_cores else "cuda:0"
    cfg = BuildConfig(precision="fp16", device=device, target=target, workspace_mb=TARGETS[target].workspace_mb)
    script = write_trtexec_script(b, cfg)
    for kind, feats in (("trt86", LEGACY), ("trt10", TYPED), ("trt11", TYPED_ONLY), ("trt11dla", TYPED_ONLY_DLA)):
        exe, log = _fake_trtexec(tmp_path, kind)
        rc, args, err = _run_script(script, exe, log)
        try:
            plan = plan_for(b, cfg, feats)
        except ConfigError as exc:  # the builder refuses there: the script refuses with the same line
            assert rc == 2 and args == [] and str(exc) in err and _recorded(log) == []
            continue
        assert rc == 0, err
        # then the provenance sidecar is recorded with the very plan it built
        rec = _recorded(log)
        assert rec[:4] == ["-m", "edgecv.backends.tensorrt_guard", "record", "tensorrt/fp16/model.engine"]
        assert json.loads(rec[4]) == json.loads(json.dumps(plan.to_dict())) and rec[6] == target
        # the script ran exactly what the builder's plan says, for every option
        onnx = "tensorrt/fp16/model.fp16.onnx" if plan.onnx_kind == "fp16" else "model.onnx"
        want = trtexec_args(
            plan, onnx, "tensorrt/fp16/model.engine", "tensorrt/timing.cache", layer_info="tensorrt/fp16/layers.json"
        )[1:]
        assert args == want
        assert f"--memPoolSize=workspace:{TARGETS[target].workspace_mb}M" in args
        assert ("--useDLACore=0" in args) == (device == "dla:0")
        assert ("--stronglyTyped" in args) == (kind == "trt10" and plan.strongly_typed)
        assert "--fp16" not in args if kind.startswith("trt11") else "--fp16" in args
    history = [h for h in Bundle.open(bundle_dir).manifest.history if h.get("event") == "trtexec_script"]
    assert history[-1]["target"] == target and len(history[-1]["commands"]) == 4


def test_cli_compile_target_and_refusals(cli, bundle_dir: Path) -> None:
    proc = cli(
        "compile",
        str(bundle_dir),
        "-b",
        "tensorrt",
        "-p",
        "fp16",
        "--emit-trtexec",
        "--target",
        "orin-nx",
        "--device",
        "dla:1",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    text = (bundle_dir / "tensorrt/fp16/trtexec.sh").read_text()
    assert "--useDLACore=1 --allowGPUFallback" in text and "workspace:1024M" in text
    for argv, needle in (
        (["--target", "nano"], "expected one of orin-nano"),
        (["--device", "dla:0", "-p", "fp32"], "expected --precision fp16 or int8"),
        (["--target", "agx-orin", "--hardware-compat", "ampere+"], "discrete GPU target"),
    ):
        args = ["compile", str(bundle_dir), "-b", "tensorrt", "--emit-trtexec", *argv]
        if "-p" not in argv:
            args += ["-p", "fp16"]
        proc = cli(*args)
        assert proc.returncode == 2, proc.stdout
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], lines
    proc = cli("compile", str(bundle_dir), "-b", "openvino", "--target", "x86")
    assert proc.returncode == 2 and "only for --backend tensorrt" in proc.stderr


def test_plan_roundtrips_to_json() -> None:
    plan = make_plan(CONTRACT, "int8", TYPED, target=TARGETS["agx-orin"], dla_core=0)
    d = json.loads(json.dumps(plan.to_dict()))
    assert d["shapes"]["input"] == [[2, 3, 32, 32]] * 3 and d["flags"] == ["int8", "fp16"]
    assert shlex.join(trtexec_args(plan, "q.onnx", "e", "t"))  # renders


# ---------------------------------------------------------------------- the builder applies what trtexec is told
class _Enum:
    def __init__(self, *names: str) -> None:
        for i, n in enumerate(names):
            setattr(self, n, f"{type(self).__name__}.{n}#{i}")


def _fake_tensorrt_module(features: TrtFeatures, dla_cores: int, calls: dict) -> object:
    """A stand-in ``tensorrt`` module with the attributes of one TensorRT generation that records what the
    builder does to it (only the names edgecv's builder uses)."""
    import types

    trt = types.ModuleType("tensorrt")
    trt.__file__ = "fake"  # type: ignore[attr-defined]
    trt.__version__ = "fake"  # type: ignore[attr-defined]
    flag_names = (
        ["GPU_FALLBACK", "VERSION_COMPATIBLE"]
        + (["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"] if features.precision_flags else [])
        + (["BF16"] if features.bf16_flag else [])
    )
    trt.BuilderFlag = SimpleNamespace(**{n: n for n in flag_names})  # type: ignore[attr-defined]
    creation = {"EXPLICIT_BATCH": 0} if not features.strongly_typed or features.precision_flags else {}
    if features.strongly_typed:
        creation["STRONGLY_TYPED"] = 1
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(**creation)  # type: ignore[attr-defined]
    trt.DeviceType = SimpleNamespace(GPU="GPU", **({"DLA": "DLA"} if features.dla else {}))  # type: ignore
    trt.HardwareCompatibilityLevel = SimpleNamespace(NONE="NONE", AMPERE_PLUS="AMPERE_PLUS")  # type: ignore
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")  # type: ignore[attr-defined]
    trt.ProfilingVerbosity = SimpleNamespace(DETAILED="DETAILED")  # type: ignore[attr-defined]
    trt.DataType = SimpleNamespace(FLOAT="FLOAT")  # type: ignore[attr-defined]
    trt.Dims = lambda dims: tuple(dims)  # type: ignore[attr-defined]

    class ILogger:
        class Severity:
            ERROR, WARNING, INFO, VERBOSE = 1, 2, 3, 4

        def __init__(self) -> None:
            pass

    trt.ILogger = ILogger  # type: ignore[attr-defined]

    class Layer:
        def __init__(self, name: str) -> None:
            self.name, self.num_outputs, self.precision = name, 1, None

        def set_output_type(self, j: int, t: str) -> None:
            calls.setdefault("output_types", []).append((self.name, t))

    class Network:
        num_inputs, num_layers = 1, 3

        def __init__(self) -> None:
            self.layers = [Layer("/0/Conv"), Layer("/1/Relu"), Layer("/8/Gemm")]

        def get_input(self, i: int) -> SimpleNamespace:
            return SimpleNamespace(name="input", shape=(-1, 3, 32, 32))

        def get_layer(self, i: int) -> Layer:
            return self.layers[i]

    class Config:
        def __init__(self) -> None:
            calls["flags"] = []

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            calls["workspace"] = (pool, size)

        def set_flag(self, flag: str) -> None:
            calls["flags"].append(flag)

        def __setattr__(self, key: str, value: object) -> None:
            calls[key] = value

        def add_optimization_profile(self, p: object) -> None:
            calls["profiles"] = calls.get("profiles", 0) + 1

        def create_timing_cache(self, data: bytes) -> str:
            return "cache"

        def set_timing_cache(self, cache: str, ignore_mismatch: bool) -> None:
            calls["timing_cache"] = True

        def can_run_on_DLA(self, layer: Layer) -> bool:
            return layer.name != "/8/Gemm"

        def get_timing_cache(self) -> SimpleNamespace:
            return SimpleNamespace(serialize=lambda: b"cache")

    class Profile:
        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            calls["shapes"] = {name: (lo, opt, hi)}

    class Builder:
        num_DLA_cores = dla_cores

        def __init__(self, logger: object) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> Network:
            calls["network_flags"] = flags
            calls["network"] = net = Network()
            return net

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            for line in calls.get("log_lines", []):  # what TensorRT logs at INFO after a DLA build
                self.logger.log(ILogger.Severity.INFO, line)  # type: ignore[attr-defined]
            return b"plan"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, logger: object) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            calls["parsed"] = path
            return True

    class Engine:
        def create_engine_inspector(self) -> SimpleNamespace:
            # what DETAILED verbosity reports for a DLA build: one ForeignNode per DLA subgraph, GPU layers by name
            info = {
                "Layers": [
                    {"Name": "{ForeignNode[/0/Conv.../1/Relu]}", "LayerType": "DLA"},
                    {"Name": "Reformatting CopyNode for Input Tensor 0 to /8/Gemm", "LayerType": "Reformat"},
                    {"Name": "/8/Gemm", "LayerType": "CaskGemmConvolution"},
                ]
            }
            return SimpleNamespace(get_engine_information=lambda fmt: json.dumps(info))

    class Runtime:
        num_DLA_cores = dla_cores

        def __init__(self, logger: object) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine:
            return Engine()

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime  # type: ignore[attr-defined]
    trt.LayerInformationFormat = SimpleNamespace(JSON="JSON")  # type: ignore[attr-defined]
    return trt


def _builder_as_trtexec(calls: dict, plan) -> list[str]:
    """What the fake builder was made to do, spelled as the trtexec options that mean the same."""
    out = []
    flags = calls["flags"]
    if calls["network_flags"] & (1 << 1) and not plan.always_typed:
        out.append("--stronglyTyped")
    out += [f"--{f.lower()}" for f in flags if f in ("FP16", "INT8", "BF16")]
    if calls.get("default_device_type") == "DLA":
        out.append(f"--useDLACore={calls['DLA_core']}")
        if "GPU_FALLBACK" in flags:
            out.append("--allowGPUFallback")
    if "shapes" in calls:
        for name, (lo, opt, hi) in calls["shapes"].items():
            out += [
                f"--minShapes={name}:{'x'.join(map(str, lo))}",
                f"--optShapes={name}:{'x'.join(map(str, opt))}",
                f"--maxShapes={name}:{'x'.join(map(str, hi))}",
            ]
    if calls.get("timing_cache"):
        out.append("--timingCacheFile=t.cache")
    out.append(f"--memPoolSize=workspace:{calls['workspace'][1] >> 20}M")
    if "OBEY_PRECISION_CONSTRAINTS" in flags:
        kept = sorted({n for n, _ in calls.get("output_types", [])})
        out += [
            "--precisionConstraints=obey",
            "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in kept),
            "--layerOutputTypes=" + ",".join(f"{n}:fp32" for n in kept),
        ]
    if calls.get("hardware_compatibility_level") == "AMPERE_PLUS":
        out.append("--hardwareCompatibilityLevel=ampere+")
    if "VERSION_COMPATIBLE" in flags:
        out.append("--versionCompatible")
    if calls.get("profiling_verbosity") == "DETAILED":
        out.append("--profilingVerbosity=detailed")
    return out


@pytest.mark.parametrize(
    "features", [LEGACY, TYPED, TYPED_ONLY, TYPED_ONLY_DLA], ids=["trt86", "trt10", "trt11", "trt11-dla"]
)
@pytest.mark.parametrize(
    "case",
    [
        {"precision": "fp32"},
        {"precision": "fp16"},
        {"precision": "int8"},
        {"precision": "bf16"},
        {"precision": "fp16", "keep_float": ["/0/Conv"]},
        {"precision": "fp16", "device": "dla:1", "target": "agx-orin"},
        {"precision": "int8", "device": "dla:0", "target": "orin-nx", "workspace_mb": 512},
        {"precision": "fp16", "hardware_compat": "ampere+", "version_compatible": True, "batch_range": (2, 4, 16)},
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_builder_applies_exactly_what_trtexec_is_told(
    bundle_dir: Path, monkeypatch, features: TrtFeatures, case: dict
) -> None:
    import sys

    from edgecv.backends import tensorrt as backend

    b = Bundle.open(bundle_dir)
    cfg = BuildConfig(**{"device": "cuda:0", **case})  # type: ignore[arg-type]
    try:
        plan = backend.plan_for(b, cfg, features)
    except ConfigError:
        return  # refused in one line for this TensorRT: the script variant refuses too (test above)
    calls: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt_module(features, 2, calls))
    monkeypatch.setattr(backend, "is_qdq", lambda path: True)
    res = backend.build_serialized_engine(bundle_dir / "model.onnx", b.contract, cfg, plan=plan)
    assert res.engine == b"plan"
    want = [a for a in trtexec_args(plan, "m.onnx", "e", "t.cache")[3:]]
    assert _builder_as_trtexec(calls, plan) == want
    if plan.dla_core is not None:
        assert res.dla_unsupported == ["/8/Gemm"]  # asked with can_run_on_DLA before the build
    creation = calls["network_flags"]
    assert bool(creation & (1 << 1)) == (plan.strongly_typed and features.strongly_typed)
    assert bool(creation & 1) == (not features.strongly_typed)  # EXPLICIT_BATCH only where 8.6's parser needs it


_FAKE_CUDART = SimpleNamespace(
    cudaRuntimeGetVersion=lambda: (0, 12060),
    cudaDriverGetVersion=lambda: (0, 12060),
    cudaGetDeviceProperties=lambda i: (0, SimpleNamespace(name=b"Orin", major=8, minor=7)),
)


def test_builder_dla_engine_sidecar_and_fallbacks(bundle_dir: Path, monkeypatch, cli) -> None:
    import sys

    from edgecv.backends import tensorrt as backend
    from edgecv.backends.tensorrt_guard import DeviceInfo, check_engine, read_sidecar
    from edgecv.bundle import Bundle as B

    calls: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt_module(TYPED, 2, calls))
    monkeypatch.setattr(backend, "_cudart", lambda: _FAKE_CUDART)
    b = B.open(bundle_dir)
    art = backend.TensorRTBuilder().build(
        b, BuildConfig(precision="fp16", device="dla:1", target="agx-orin", workspace_mb=1024)
    )
    assert art.device == "dla:1" and art.path == "tensorrt/fp16/model.engine"
    assert art.extra["dla_layers"] == ["{ForeignNode[/0/Conv.../1/Relu]}"]
    assert art.extra["dla_gpu_fallback_layers"] == ["/8/Gemm"]  # the reformat layer is not a fallback
    assert art.extra["dla_unsupported_layers"] == ["/8/Gemm"]
    assert any("static shapes" in n for n in art.extra["notes"])
    b = B.open(bundle_dir)  # every file hash-checked, the sidecar included
    assert b.manifest.files["tensorrt/fp16/model.engine.json"]
    assert (bundle_dir / "tensorrt/fp16/model.engine").read_bytes() == b"plan"  # raw plan, nothing prepended
    side = read_sidecar(bundle_dir / "tensorrt/fp16/model.engine")
    assert side is not None
    assert side["dla_core"] == 1 and side["precision"] == "fp16" and side["target"] == "agx-orin"
    assert side["device"]["gpu"] == "Orin" and side["device"]["compute_capability"] == "8.7"
    assert side["device"]["cuda_runtime"] == "12.6" and side["device"]["dla_cores"] == 2
    assert side["profiles"] == {"input": [[1, 3, 32, 32]] * 3}
    assert side["builder_flags"]["dla_core"] == 1 and side["builder_flags"]["workspace_mb"] == 1024
    from edgecv._io import sha256_path

    assert side["onnx"] == "model.onnx" and side["onnx_sha256"] == sha256_path(bundle_dir / "model.onnx")
    assert side["dla_gpu_fallback_layers"] == ["/8/Gemm"]
    here = DeviceInfo(**side["device"])
    assert check_engine(side, here) == []
    r = backend.TensorRTRunner.from_bundle(b, "fp16")
    assert r.device == "dla:1" and r.dla_core == 1  # runs on the core it was built for
    # the sidecar gates loading, so it is hash-checked like the engine
    sc = bundle_dir / "tensorrt/fp16/model.engine.json"
    sc.write_text(sc.read_text().replace('"8.7"', '"8.9"'))
    from edgecv.errors import BundleError

    with pytest.raises(BundleError, match="model.engine.json was changed"):
        backend.TensorRTRunner.from_bundle(B.open(bundle_dir, verify=False), "fp16")


def test_builder_fp16_on_tensorrt11_converts_the_graph(bundle_dir: Path, monkeypatch) -> None:
    import sys

    import onnx

    from edgecv.backends import tensorrt as backend
    from edgecv.backends.tensorrt_guard import read_sidecar
    from edgecv.bundle import Bundle as B

    calls: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt_module(TYPED_ONLY, 0, calls))
    monkeypatch.setattr(backend, "_cudart", lambda: _FAKE_CUDART)
    art = backend.TensorRTBuilder().build(
        B.open(bundle_dir), BuildConfig(precision="fp16", device="cuda:0", keep_float=["/0/Conv"])
    )
    assert calls["flags"] == []  # no FP16 flag exists on 11: the graph's types say fp16
    fp16 = bundle_dir / "tensorrt/fp16/model.fp16.onnx"
    assert calls["parsed"].endswith("model.fp16.onnx")
    m = onnx.load(str(fp16))
    types = {i.name: i.data_type for i in m.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types.values()
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    conv = next(n for n in m.graph.node if n.name == "/0/Conv")
    assert types[conv.input[1]] == onnx.TensorProto.FLOAT  # the kept-float node stays fp32
    side = read_sidecar(bundle_dir / art.path)
    assert side is not None and side["onnx"] == "tensorrt/fp16/model.fp16.onnx"
    assert side["plan"]["onnx_kind"] == "fp16" and side["builder_flags"]["fp16_conversion"]["node_block_list"] == [
        "/0/Conv"
    ]


def test_builder_on_a_jetson_takes_its_preset_and_refuses_what_it_cannot(bundle_dir: Path, monkeypatch) -> None:
    """No --target: the device's own preset (1 GiB workspace on Orin); ampere+ refused on a Jetson or pre-Ampere."""
    import sys

    from edgecv.backends import tensorrt as backend
    from edgecv.bundle import Bundle as B

    fixtures = Path(__file__).resolve().parent / "fixtures" / "jetson"
    monkeypatch.setattr("edgecv.jetson.NV_TEGRA_RELEASE", fixtures / "nv_tegra_release_r36.4.0.txt")
    calls: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt_module(TYPED, 2, calls))
    monkeypatch.setattr(backend, "_cudart", lambda: _FAKE_CUDART)
    art = backend.TensorRTBuilder().build(B.open(bundle_dir), BuildConfig(precision="fp16", device="cuda:0"))
    assert calls["workspace"] == ("WORKSPACE", 1024 << 20)
    side = json.loads((bundle_dir / (art.path + ".json")).read_text())
    assert side["target"] == "agx-orin" and side["device"]["l4t"] == "36.4.0" and side["device"]["jetpack"] == "6.1"
    with pytest.raises(ConfigError, match="expected a discrete GPU, found a Jetson"):
        backend.TensorRTBuilder().build(
            B.open(bundle_dir), BuildConfig(precision="fp16", target="x86", hardware_compat="ampere+")
        )
    monkeypatch.setattr("edgecv.jetson.NV_TEGRA_RELEASE", fixtures / "no_such_file")
    t4 = SimpleNamespace(
        cudaRuntimeGetVersion=lambda: (0, 12060),
        cudaDriverGetVersion=lambda: (0, 12060),
        cudaGetDeviceProperties=lambda i: (0, SimpleNamespace(name=b"Tesla T4", major=7, minor=5)),
    )
    monkeypatch.setattr(backend, "_cudart", lambda: t4)
    with pytest.raises(ConfigError, match="expected an Ampere or newer GPU \\(sm_80\\+\\), found sm_75"):
        backend.TensorRTBuilder().build(B.open(bundle_dir), BuildConfig(precision="fp16", hardware_compat="ampere+"))


def test_dla_placement_from_the_builder_log_and_the_inspector() -> None:
    from edgecv.backends.tensorrt import layer_placement, placement_from_log

    # the format of TensorRT's INFO report, as a public trtexec --useDLACore log shows it
    log = [
        "---------- Layers Running on DLA ----------",
        "[DlaLayer] {ForeignNode[conv1_1...pool5]}",
        "[DlaLayer] {ForeignNode[relu6...fc8]}",
        "---------- Layers Running on GPU ----------",
        "[GpuLayer] SHUFFLE: shuffle_between_pool5_and_fc6",
        "[GpuLayer] CONVOLUTION: fc6",
    ]
    assert placement_from_log(log) == {
        "dla": ["{ForeignNode[conv1_1...pool5]}", "{ForeignNode[relu6...fc8]}"],
        "gpu": ["shuffle_between_pool5_and_fc6", "fc6"],
    }
    assert placement_from_log(["Some other INFO line"]) is None
    # inspector: a Myelin region is also a ForeignNode, but it runs on the GPU
    info = {
        "Layers": [
            {"Name": "{ForeignNode[/a.../b]}", "LayerType": "Myelin"},
            {"Name": "{ForeignNode[/c.../d]}", "LayerType": "ForeignNode"},
            {"Name": "Reformatting CopyNode for Input Tensor 0 to /e", "LayerType": "Reformat"},
            {"Name": "/e", "LayerType": "CaskConvolution"},
        ]
    }
    assert layer_placement(json.dumps(info)) == {
        "dla": ["{ForeignNode[/c.../d]}"],
        "gpu": ["{ForeignNode[/a.../b]}", "/e"],
    }
    assert layer_placement({"Layers": ["{ForeignNode[/x]}", "/y"]}) == {"dla": ["{ForeignNode[/x]}"], "gpu": ["/y"]}


def test_builder_dla_prefers_the_log_report(bundle_dir: Path, monkeypatch) -> None:
    import sys

    from edgecv.backends import tensorrt as backend
    from edgecv.bundle import Bundle as B

    calls: dict = {
        "log_lines": [
            "[DlaLayer] {ForeignNode[/0/Conv.../1/Relu]}",
            "[GpuLayer] MATRIX_MULTIPLY: /8/Gemm",
            "[GpuLayer] SOFTMAX: /9/Softmax",
        ]
    }
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt_module(TYPED, 2, calls))
    monkeypatch.setattr(backend, "_cudart", lambda: _FAKE_CUDART)
    monkeypatch.setattr(backend, "is_qdq", lambda path: True)  # the Q/DQ check itself is tested above
    art = backend.TensorRTBuilder().build(
        B.open(bundle_dir),
        BuildConfig(precision="int8", device="dla:0", target="orin-nx", onnx_path=bundle_dir / "model.onnx"),
    )
    assert art.build_flags["dla_placement_source"] == "builder log"
    assert art.extra["dla_gpu_fallback_layers"] == ["/8/Gemm", "/9/Softmax"]
    assert calls["flags"][:2] == ["INT8", "FP16"] and "GPU_FALLBACK" in calls["flags"]
