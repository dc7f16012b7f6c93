"""Engine provenance: a sidecar JSON beside each TensorRT engine, and the guard that reads it before loading.

The engine file stays a raw TensorRT plan, so trtexec, Triton and DeepStream load it as is (Ultralytics'
metadata-prefixed engines broke those: ultralytics#15025, #19423). What the plan was built with sits beside it in
``model.engine.json``: TensorRT, CUDA and driver versions, GPU name and compute capability, JetPack/L4T, precision,
DLA core, optimization profiles, builder flags and the ONNX file's sha256.

A plan only deserializes on the TensorRT version and GPU it was built for; otherwise
``deserialize_cuda_engine`` returns None after logging "Version tag does not match" (TensorRT#2195,
ultralytics#18730, #20427). :func:`check_engine` compares the sidecar with this device *before* deserializing, so
the user gets one line saying what differs and the exact command that rebuilds it.

No TensorRT or CUDA import at module level: :func:`probe_device` takes the modules as arguments, so the guard is
tested here with fakes.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FORMAT = "edgecv-engine-provenance/1"
SIDECAR_SUFFIX = ".json"
# TensorRT's support matrix: a version-compatible plan loads on a newer runtime of the same major, and across
# majors only 8 → 10 and 10 → 11.
_CROSS_MAJOR = {(8, 10), (10, 11)}

# set by the CLI's --rebuild: rebuild a mismatched engine from the bundle's ONNX instead of refusing it
REBUILD: contextvars.ContextVar[bool] = contextvars.ContextVar("edgecv_tensorrt_rebuild", default=False)


@contextlib.contextmanager
def rebuild_mismatched(enabled: bool = True) -> Iterator[None]:
    """Within the block, a TensorRT runner whose engine does not match this device rebuilds it."""
    token = REBUILD.set(enabled)
    try:
        yield
    finally:
        REBUILD.reset(token)


@dataclass
class DeviceInfo:
    """What an engine's compatibility depends on, read from this machine (or from a sidecar)."""

    tensorrt: str | None = None
    cuda_runtime: str | None = None
    cuda_driver: str | None = None
    nvidia_driver: str | None = None
    gpu: str | None = None
    compute_capability: str | None = None
    l4t: str | None = None
    jetpack: str | None = None
    dla_cores: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sidecar_path(engine_path: str | Path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def _cuda_version(v: int) -> str:
    """cudart's integer version (12060) → ``12.6``."""
    return f"{v // 1000}.{(v % 1000) // 10}"


def nvidia_driver_version(proc_file: Path = Path("/proc/driver/nvidia/version")) -> str | None:
    """The kernel driver version from ``/proc/driver/nvidia/version`` (absent on Jetson's nvgpu)."""
    try:
        text = proc_file.read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


def probe_device(
    trt: Any, cudart: Any, device_index: int = 0, dla_cores: int | None = None, release: dict[str, Any] | None = None
) -> DeviceInfo:
    """This device as the guard compares it, from an imported ``tensorrt`` and cuda-python runtime module.

    Args:
        trt: the ``tensorrt`` module.
        cudart: cuda-python's runtime module (``cuda.bindings.runtime`` or ``cuda.cudart``).
        device_index: the CUDA device.
        dla_cores: DLA cores (``Runtime.num_DLA_cores``), when the caller has a runtime or builder.
        release: :func:`edgecv.jetson.parse_nv_tegra_release` of this machine; read from /etc when None.
    """
    from edgecv.jetson import NV_TEGRA_RELEASE, parse_nv_tegra_release

    def call(name: str, *args: Any) -> Any:
        fn = getattr(cudart, name, None)
        if fn is None:
            return None
        res = fn(*args)
        err, *rest = res if isinstance(res, tuple) else (res,)
        if int(err) != 0 or not rest:
            return None
        return rest[0]

    rt = call("cudaRuntimeGetVersion")
    drv = call("cudaDriverGetVersion")
    props = call("cudaGetDeviceProperties", device_index)
    name = getattr(props, "name", None)
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    cc = f"{props.major}.{props.minor}" if props is not None and hasattr(props, "major") else None
    if release is None:
        try:
            release = parse_nv_tegra_release(NV_TEGRA_RELEASE.read_text(errors="replace"))
        except OSError:
            release = None
    return DeviceInfo(
        tensorrt=str(getattr(trt, "__version__", "")) or None,
        cuda_runtime=_cuda_version(int(rt)) if rt is not None else None,
        cuda_driver=_cuda_version(int(drv)) if drv is not None else None,
        nvidia_driver=nvidia_driver_version(),
        gpu=str(name) if name else None,
        compute_capability=cc,
        l4t=(release or {}).get("l4t"),
        jetpack=(release or {}).get("jetpack"),
        dla_cores=int(dla_cores or 0),
    )


# ====================================================================== sidecar
def make_sidecar(
    device: DeviceInfo,
    *,
    precision: str,
    dla_core: int | None,
    profiles: dict[str, Any],
    builder_flags: dict[str, Any],
    onnx_rel: str,
    onnx_sha256: str,
    target: str,
    hardware_compat: str | None,
    version_compatible: bool,
    plan: dict[str, Any],
    dla_fallback: list[str] | None = None,
    edgecv_version: str = "",
) -> dict[str, Any]:
    """The provenance record written beside an engine."""
    return {
        "format": FORMAT,
        "edgecv": edgecv_version,
        "device": device.to_dict(),
        "precision": precision,
        "dla_core": dla_core,
        "profiles": profiles,
        "builder_flags": builder_flags,
        "onnx": onnx_rel,
        "onnx_sha256": onnx_sha256,
        "target": target,
        "hardware_compat": hardware_compat,
        "version_compatible": version_compatible,
        "plan": plan,
        "dla_gpu_fallback_layers": dla_fallback or [],
    }


def read_sidecar(engine_path: str | Path) -> dict[str, Any] | None:
    """The sidecar of ``engine_path``, or None when there is none (an engine built by the trtexec script)."""
    p = sidecar_path(engine_path)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


# ====================================================================== guard
def _vtuple(v: str | None, n: int = 4) -> tuple[int, ...]:
    nums = [int(x) for x in re.findall(r"\d+", v or "")][:n]
    return tuple(nums)


def _mm(v: str | None) -> str:
    """``10.3.0.30`` → ``10.3``."""
    t = _vtuple(v, 2)
    return ".".join(str(x) for x in t) if t else "unknown"


def _trt_compatible(built: str | None, here: str | None, version_compatible: bool) -> bool:
    if built == here:
        return True
    b, h = _vtuple(built), _vtuple(here)
    if not b or not h:
        return False
    if not version_compatible:
        return b == h
    if b[0] == h[0]:
        return h >= b
    return (b[0], h[0]) in _CROSS_MAJOR


def check_engine(sidecar: dict[str, Any], here: DeviceInfo) -> list[str]:
    """The fields in which this device differs from the one the engine was built for (empty: it matches).

    Fields: ``tensorrt`` (exact, or newer within what a version-compatible plan allows), ``cuda`` (major),
    ``compute_capability`` and ``gpu`` (unless built ``ampere+`` and this GPU is Ampere or newer, discrete),
    ``l4t`` (Jetson release, major.minor) and ``dla_core`` (this device has that core).
    """
    built = sidecar.get("device") or {}
    out: list[str] = []
    if not _trt_compatible(built.get("tensorrt"), here.tensorrt, bool(sidecar.get("version_compatible"))):
        out.append("tensorrt")
    if _vtuple(built.get("cuda_runtime"), 1) != _vtuple(here.cuda_runtime, 1):
        out.append("cuda")
    hw = sidecar.get("hardware_compat") == "ampere+"
    here_cc = _vtuple(here.compute_capability, 2)
    if hw:
        if not here_cc or here_cc < (8, 0) or here.l4t:
            out.append("compute_capability")
    else:
        if built.get("compute_capability") != here.compute_capability:
            out.append("compute_capability")
        if (built.get("gpu") or "") != (here.gpu or ""):
            out.append("gpu")
    if _vtuple(built.get("l4t"), 2) != _vtuple(here.l4t, 2):
        out.append("l4t")
    core = sidecar.get("dla_core")
    if core is not None and here.dla_cores <= int(core):
        out.append("dla_core")
    return out


def _describe(d: dict[str, Any], dla_core: int | None = None) -> str:
    cc = d.get("compute_capability")
    parts = [f"sm_{cc.replace('.', '')}" if cc else "an unknown GPU", f"with TensorRT {_mm(d.get('tensorrt'))}"]
    if d.get("cuda_runtime"):
        parts.append(f"CUDA {d['cuda_runtime']}")
    if d.get("l4t"):
        jp = d.get("jetpack")
        parts.append(f"on JetPack {jp}" if jp else f"on L4T {d['l4t']}")
    if d.get("gpu"):
        parts.append(f"({d['gpu']})")
    if dla_core is not None:
        parts.append(f"DLA core {dla_core}")
    return " ".join(parts)


def target_for(here: DeviceInfo, built_target: str | None = None) -> str:
    """The ``--target`` that builds for this device."""
    cc = _vtuple(here.compute_capability, 2)
    if here.l4t:
        if cc == (8, 7):
            return built_target if built_target in ("orin-nano", "orin-nx", "agx-orin") else "agx-orin"
        return "thor"
    return "x86"


def rebuild_command(bundle_root: str | Path, sidecar: dict[str, Any], here: DeviceInfo) -> str:
    """The ``edgecv compile`` command that rebuilds this engine on this device."""
    import shlex

    args = [
        "edgecv",
        "compile",
        str(bundle_root),
        "--backend",
        "tensorrt",
        "--precision",
        str(sidecar.get("precision", "fp32")),
        "--target",
        target_for(here, sidecar.get("target")),
    ]
    core = sidecar.get("dla_core")
    if core is not None and here.dla_cores > int(core):
        args += ["--device", f"dla:{core}"]
    if sidecar.get("precision") == "int8":
        args += ["--calib", "CALIB"]
    return " ".join(shlex.quote(a) for a in args)


def mismatch_message(sidecar: dict[str, Any], here: DeviceInfo, fields: list[str], bundle_root: str | Path) -> str:
    """One line: what the engine was built for, what this device is, and how to rebuild."""
    names = {
        "tensorrt": "TensorRT",
        "cuda": "CUDA",
        "compute_capability": "compute capability",
        "gpu": "GPU",
        "l4t": "JetPack/L4T",
        "dla_core": "DLA core",
    }
    built = dict(sidecar.get("device") or {})
    here_d = here.to_dict()
    here_s = _describe(here_d) + (f" with {here.dla_cores} DLA core(s)" if "dla_core" in fields else "")
    return (
        f"engine built for {_describe(built, sidecar.get('dla_core'))}; this device is {here_s} "
        f"(differs: {', '.join(names[f] for f in fields)}): rebuild with "
        f"'{rebuild_command(bundle_root, sidecar, here)}', or pass --rebuild"
    )


def rebuild_config(bundle: Any, sidecar: dict[str, Any], here: DeviceInfo, device_index: int = 0) -> Any:
    """The :class:`~edgecv.backends.base.BuildConfig` that rebuilds a sidecar's engine for this device."""
    from edgecv.backends.base import BuildConfig

    plan = sidecar.get("plan") or {}
    flags = sidecar.get("builder_flags") or {}
    onnx_rel = str(sidecar.get("onnx") or "model.onnx")
    # fp16 on TensorRT 11 is converted again from model.onnx; int8 builds from the recorded QDQ file
    onnx_path = bundle.file(onnx_rel) if plan.get("onnx_kind") == "qdq" else None  # confined, hash-checked
    core = sidecar.get("dla_core")
    device = f"dla:{core}" if core is not None and here.dla_cores > int(core) else f"cuda:{device_index}"
    return BuildConfig(
        precision=str(sidecar.get("precision", "fp32")),  # type: ignore[arg-type]
        device=device,
        workspace_mb=int(flags.get("workspace_mb", 1024)),
        onnx_path=onnx_path,
        keep_float=[] if plan.get("onnx_kind") == "qdq" else list(flags.get("keep_float", [])),
        target=target_for(here, sidecar.get("target")),
        version_compatible=bool(sidecar.get("version_compatible")) and core is None,
    )


def record_sidecar(
    engine_path: str | Path, plan: dict[str, Any], onnx_rel: str, target: str, trt: Any, cudart: Any
) -> Path:
    """Write the sidecar of an engine that ``trtexec.sh`` just built (the script calls :func:`main`).

    The bundle root is the engine's ``../..``; the ONNX file is hashed there. Written atomically.
    """
    from edgecv._io import sha256_path, write_bytes

    engine = Path(engine_path)
    root = engine.parent.parent.parent
    dla_cores = 0
    try:
        dla_cores = int(trt.Runtime(trt.Logger(trt.Logger.ERROR)).num_DLA_cores)
    except Exception:  # noqa: BLE001, S110 - a runtime that cannot start still lets the rest be recorded
        pass
    device = probe_device(trt, cudart, 0, dla_cores=dla_cores)
    onnx_file = root / onnx_rel
    side = make_sidecar(
        device,
        precision=str(plan.get("precision")),
        dla_core=plan.get("dla_core"),
        profiles={k: v for k, v in (plan.get("shapes") or {}).items()},
        builder_flags={
            "built_by": "trtexec.sh",
            "workspace_mb": plan.get("workspace_mb"),
            "flags": plan.get("flags"),
            "strongly_typed": plan.get("strongly_typed"),
        },
        onnx_rel=onnx_rel,
        onnx_sha256=sha256_path(onnx_file) if onnx_file.is_file() else "",
        target=target,
        hardware_compat=plan.get("hardware_compat"),
        version_compatible=bool(plan.get("version_compatible")),
        plan=plan,
    )
    layers = engine.parent / "layers.json"  # trtexec --exportLayerInfo
    if plan.get("dla_core") is not None and layers.is_file():
        try:
            placement = layer_placement(layers.read_text())
            side["dla_layers"], side["dla_gpu_fallback_layers"] = placement["dla"], placement["gpu"]
        except ValueError:
            pass  # an unreadable layer report leaves the fallback list empty, not the sidecar unwritten
    out = sidecar_path(engine)
    write_bytes(out, (json.dumps(side, indent=2) + "\n").encode())
    return out


def cudart_module() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime`` in cuda-python ≥ 12.6, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart

        return cudart
    except ImportError as exc:
        from edgecv.errors import MissingDependencyError

        raise MissingDependencyError(
            f"the TensorRT runner needs cuda-python, which is not installed ({exc}); "
            "install it with: pip install 'edgecv[tensorrt]'"
        ) from exc


def layer_placement(info: Any) -> dict[str, list[str]]:
    """Split the engine inspector's layers (``get_engine_information(JSON)`` or trtexec ``--exportLayerInfo``) into
    the ones that run on the DLA and the ones on the GPU.

    TensorRT compiles each DLA subgraph into one layer named ``{ForeignNode[first...last]}``; every other compute
    layer runs on the GPU. Myelin also names its fused GPU regions ``{ForeignNode[...]}`` (TensorRT 8.6 gives them
    ``LayerType: Myelin``), so those count as GPU; this is why the builder's own log report
    (:func:`placement_from_log`) is preferred where it exists. Reformatting layers TensorRT inserts at DLA/GPU
    boundaries are not fallbacks and are left out.
    """
    data = json.loads(info) if isinstance(info, (str, bytes)) else info
    layers = data.get("Layers", []) if isinstance(data, dict) else []
    dla: list[str] = []
    gpu: list[str] = []
    for layer in layers:
        name = layer if isinstance(layer, str) else str(layer.get("Name", ""))
        kind = "" if isinstance(layer, str) else str(layer.get("LayerType", ""))
        if kind.upper() == "DLA" or (name.startswith("{ForeignNode") and kind.lower() != "myelin"):
            dla.append(name)
        elif (
            kind.lower() in ("reformat", "nooplayer")
            or "reformatter" in name.lower()
            or name.lower().startswith("reformatting")
        ):
            continue
        else:
            gpu.append(name)
    return {"dla": dla, "gpu": gpu}


def main(argv: list[str] | None = None) -> int:
    """``python -m edgecv.backends.tensorrt_guard record ENGINE PLAN_JSON ONNX TARGET`` (used by trtexec.sh)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 5 or args[0] != "record":
        print("usage: python -m edgecv.backends.tensorrt_guard record ENGINE PLAN_JSON ONNX TARGET", file=sys.stderr)
        return 2
    import tensorrt as trt

    path = record_sidecar(args[1], json.loads(args[2]), args[3], args[4], trt, cudart_module())
    print(f"edgecv: provenance written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
