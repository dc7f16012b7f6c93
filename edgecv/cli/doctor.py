"""``edgecv doctor``: which frameworks are installed, at which versions, and which devices each backend sees."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import platform
from typing import Any

import typer

from edgecv.cli.options import JsonOpt

# what doctor reports: label → importable module
_PACKAGES = {
    "numpy": "numpy",
    "torch": "torch",
    "torchvision": "torchvision",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "nncf": "nncf",
    "tensorrt": "tensorrt",
    "cuda-python": "cuda.bindings",
    "opencv": "cv2",
}


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_cmd)


def doctor_cmd(json_out: JsonOpt = False) -> None:
    """Print framework versions and the devices each backend can use."""
    from edgecv.jetson import clock_warning, jetson_state

    versions, devices, jetson = collect_versions(), collect_devices(), jetson_state()
    if json_out:
        from edgecv.cli._output import emit_json

        emit_json("doctor", {"versions": versions, "devices": devices, "jetson": jetson}, passed=True)
        return
    from edgecv.cli._output import emit_json, print_table

    print_table("versions", ["package", "version"], [[k, v or "not installed"] for k, v in versions.items()])
    rows = [[d["backend"], d["device"], d.get("name", ""), ", ".join(d.get("capabilities", []))] for d in devices]
    print_table("devices", ["backend", "device", "name", "capabilities"], rows)
    if jetson is not None:
        print_table("jetson", ["item", "value"], jetson_rows(jetson))
        warning = clock_warning(jetson)
        if warning:
            typer.echo(f"warning: {warning}", err=True)


def jetson_rows(state: dict[str, Any]) -> list[list[str]]:
    """``edgecv doctor``'s Jetson table: L4T/JetPack, power mode, clock lock, one tegrastats sample."""
    rel = state.get("release") or {}
    pm = state.get("power_mode") or {}
    clocks = state.get("clocks") or {}
    ts = state.get("tegrastats") or {}
    gpu = (clocks.get("clocks") or {}).get("GPU") or {}
    rows = [
        ["L4T", str(rel.get("l4t") or "unknown")],
        ["JetPack", str(rel.get("jetpack") or "unknown")],
        ["power mode (nvpmodel -q)", f"{pm.get('mode', 'unknown')} (id {pm.get('id')})" if pm else "unknown"],
        [
            "clocks (jetson_clocks --show)",
            ("locked" if state.get("clocks_locked") else "not locked")
            + (f", GPU {gpu.get('cur', 0) / 1e6:.0f} MHz (max {gpu.get('max', 0) / 1e6:.0f})" if gpu else ""),
        ],
    ]
    if ts:
        power = ", ".join(f"{k} {v} mW" for k, v in (ts.get("power_mw") or {}).items())
        rows.append(
            [
                "tegrastats",
                f"RAM {ts.get('ram_used_mb')}/{ts.get('ram_total_mb')} MB, GPU "
                f"{ts.get('gpu_load', '?')}%" + (f", {power}" if power else ""),
            ]
        )
    rows += [["note", w] for w in state.get("warnings", [])]
    return rows


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _version(label: str, module: str) -> str | None:
    if label == "tensorrt":
        return _tensorrt_version()
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return None
    try:
        mod: Any = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken install is worth reporting, not crashing on
        return f"broken ({type(exc).__name__}: {' '.join(str(exc).split())[:80]})"
    version = getattr(mod, "__version__", None)
    if version is None and label == "cuda-python":
        version = _dist_version("cuda-python") or _dist_version("cuda-bindings")
    return str(version or "unknown")


def _tensorrt_version() -> str | None:
    """The TensorRT version, or ``stubs only`` when only tensorrt-stubs provides the name."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        import tensorrt

        if hasattr(tensorrt, "Builder"):
            return str(getattr(tensorrt, "__version__", "unknown"))
    except Exception as exc:  # noqa: BLE001
        return f"broken ({type(exc).__name__}: {' '.join(str(exc).split())[:80]})"
    stubs = _dist_version("tensorrt-stubs")
    return f"stubs only (tensorrt-stubs {stubs})" if stubs else "stubs only"


def collect_versions() -> dict[str, str | None]:
    """Versions of python, edgecv and every optional framework (None when not installed)."""
    from edgecv import __version__

    versions: dict[str, str | None] = {"python": platform.python_version(), "edgecv": __version__}
    for label, module in _PACKAGES.items():
        versions[label] = _version(label, module)
    return versions


def _safe(fn: Any) -> list[dict[str, Any]]:
    try:
        result: list[dict[str, Any]] = fn()
        return result
    except Exception as exc:  # noqa: BLE001 - one backend failing to enumerate must not hide the others
        return [
            {
                "backend": fn.__name__.removeprefix("_devices_"),
                "device": "error",
                "name": " ".join(str(exc).split())[:120],
            }
        ]


def _devices_onnxruntime() -> list[dict[str, Any]]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime as ort

    return [{"backend": "onnxruntime", "device": p, "name": ort.get_device()} for p in ort.get_available_providers()]


def _devices_openvino() -> list[dict[str, Any]]:
    if importlib.util.find_spec("openvino") is None:
        return []
    import openvino as ov

    core = ov.Core()
    out = []
    for dev in core.available_devices:
        entry: dict[str, Any] = {"backend": "openvino", "device": dev}
        try:
            entry["name"] = str(core.get_property(dev, "FULL_DEVICE_NAME"))
            entry["capabilities"] = [str(c) for c in core.get_property(dev, "OPTIMIZATION_CAPABILITIES")]
        except Exception as exc:  # noqa: BLE001 - some plugins do not report every property
            entry["name"] = f"(properties unavailable: {' '.join(str(exc).split())[:80]})"
        out.append(entry)
    return out


def _devices_torch() -> list[dict[str, Any]]:
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    out = [
        {
            "backend": "torch",
            "device": "cpu",
            "name": platform.processor() or platform.machine(),
            "capabilities": [f"threads={torch.get_num_threads()}"],
        }
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            out.append(
                {
                    "backend": "torch",
                    "device": f"cuda:{i}",
                    "name": torch.cuda.get_device_name(i),
                    "capabilities": [f"sm_{major}{minor}"],
                }
            )
    return out


def _devices_tensorrt() -> list[dict[str, Any]]:
    """CUDA devices as cuda-python sees them (what the TensorRT runner uses)."""
    try:
        from edgecv.backends.tensorrt import _cudart

        cudart = _cudart()
    except Exception:  # noqa: BLE001 - no cuda-python: nothing to list
        return []
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0:
        return [{"backend": "tensorrt", "device": "none", "name": f"no usable CUDA ({getattr(err, 'name', err)})"}]
    out = []
    for i in range(int(count)):
        err, prop = cudart.cudaGetDeviceProperties(i)
        name = prop.name.decode() if int(err) == 0 and isinstance(prop.name, bytes) else str(getattr(prop, "name", ""))
        caps = [f"sm_{prop.major}{prop.minor}"] if int(err) == 0 else []
        out.append({"backend": "tensorrt", "device": f"cuda:{i}", "name": name, "capabilities": caps + _trt_features()})
    return out


def _trt_features() -> list[str]:
    """What the installed TensorRT can do, by feature (strongly typed, precision flags, DLA cores)."""
    try:
        import tensorrt as trt

        from edgecv.backends.tensorrt_plan import TrtFeatures

        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        cores = int(getattr(builder, "num_DLA_cores", 0) or 0)  # DLA APIs may be absent (TensorRT 11.0–11.3)
        f = TrtFeatures.from_module(trt, cores)
    except Exception:  # noqa: BLE001 - stubs only, or no GPU: nothing to add
        return []
    return [
        name
        for name, on in (
            ("strongly-typed", f.strongly_typed),
            ("fp16/int8 flags", f.precision_flags),
            (f"DLA x{cores}", f.dla),
            ("ampere+", f.hardware_compat),
            ("version-compatible", f.version_compat),
        )
        if on
    ]


def collect_devices() -> list[dict[str, Any]]:
    """Devices each backend sees: ORT providers, OpenVINO devices, torch CPU/CUDA, CUDA for TensorRT."""
    devices: list[dict[str, Any]] = []
    for fn in (_devices_onnxruntime, _devices_openvino, _devices_torch, _devices_tensorrt):
        devices.extend(_safe(fn))
    return devices
