"""``edgecv repo``: a model repository for NVIDIA Triton or OpenVINO Model Server (OVMS) from a bundle's artifacts.

Triton (``--server triton``): one model per artifact, ``<name>_<backend>_<precision>/``, each with ``config.pbtxt``
and the model file under version ``1/``:

- ``onnxruntime_onnx`` for the bundle's ``model.onnx`` (fp32) and ONNX Runtime artifacts (fp16, int8 QDQ);
- ``backend: "openvino"`` for OpenVINO IR (``model.xml`` + ``model.bin``);
- ``tensorrt_plan`` for TensorRT engines, with ``cc_model_filenames`` keyed by compute capability where the
  artifact records one (an engine only runs on the GPU generation it was built for).

Every config has the tensors' names, dims (without the batch dimension when the model batches) and data types,
``max_batch_size`` and ``dynamic_batching`` from the bundle's batch range, an ``instance_group``, and the
bundle's contract in ``parameters`` (``edgecv_contract``, JSON), which ``-b remote`` reads back.

OVMS (``--server ovms``): the same per-model folders without ``config.pbtxt`` (OVMS reads none) plus a root
``config.json`` (``model_config_list``) whose ``shape`` bounds the batch to the bundle's range; OVMS cannot load
TensorRT engines and has no per-model parameters, so the contract sits beside each model as
``edgecv_contract.json``, and OVMS does not batch requests from different clients for a single model.

The writer never destroys an input: it refuses a non-empty folder it did not write (``edgecv_repo.json`` marks
its own), refuses to write into or above the bundle, and builds the repository in a temporary sibling folder
that is renamed into place when complete. Every model file is taken through ``Bundle.file`` (confined to the
bundle, listed in its manifest, hash-checked).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from edgecv.backends.oip import contract_parameters, model_name
from edgecv.bundle import now_iso
from edgecv.errors import ConfigError
from edgecv.types import TensorSpec

if TYPE_CHECKING:
    from edgecv.bundle import Artifact, Bundle

MARKER = "edgecv_repo.json"
FORMATS = ("triton", "ovms")
#: numpy dtype name → Triton config data type
TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
}
_PLATFORM = {
    "onnxruntime": ("platform", "onnxruntime_onnx"),
    "openvino": ("backend", "openvino"),
    "tensorrt": ("platform", "tensorrt_plan"),
}


# ------------------------------------------------------------------------------------------------ specs
def io_specs(bundle: Bundle) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs of the bundle's ONNX model (every artifact keeps its I/O names, shapes and types).

    Read from the ONNX graph when ``onnx`` is installed, else from whichever engine runner opens the model.
    """
    try:
        import onnx
        from onnx import helper
    except ImportError:
        onnx = None  # type: ignore[assignment]
    if onnx is not None:
        model = onnx.load(str(bundle.onnx_path), load_external_data=False)
        inits = {i.name for i in model.graph.initializer}

        def spec(vi: Any) -> TensorSpec:
            t = vi.type.tensor_type
            dims = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim)
            return TensorSpec(vi.name, dims, str(helper.tensor_dtype_to_np_dtype(t.elem_type)))

        return ([spec(v) for v in model.graph.input if v.name not in inits], [spec(v) for v in model.graph.output])
    from edgecv.backends import open_runner

    for backend in ("openvino", "onnxruntime"):
        try:
            with open_runner(bundle, backend, threads=1) as r:
                return list(r.input_spec), list(r.output_spec)
        except Exception:  # noqa: BLE001, S112 - try the next engine
            continue
    raise ConfigError("edgecv repo: expected onnx, openvino or onnxruntime to read the model's tensors, found none")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tensor_block(specs: list[TensorSpec], batched: bool) -> list[str]:
    out = []
    for s in specs:
        dims = list(s.shape[1:] if batched else s.shape)
        dtype = TRITON_DTYPES.get(s.dtype)
        if dtype is None:
            raise ConfigError(
                f"tensor '{s.name}': expected a dtype Triton knows ({', '.join(TRITON_DTYPES)}), found '{s.dtype}'"
            )
        body = [f"    name: {_quote(s.name)}", f"    data_type: {dtype}"]
        if batched and not dims:
            # a per-sample scalar (e.g. num_dets of shape [batch]): Triton needs dims, the reshape drops them
            body += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
        else:
            body.append(f"    dims: [ {', '.join('-1' if d is None else str(d) for d in dims)} ]")
        out.append("  {\n" + "\n".join(body) + "\n  }")
    return out


def triton_config(
    name: str,
    backend: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    params: dict[str, str],
    batch_range: tuple[int, int, int],
    *,
    instances: int = 1,
    max_queue_delay_us: int = 2000,
    cc_files: dict[str, str] | None = None,
    default_file: str | None = None,
) -> str:
    """The text of one ``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``)."""
    key, value = _PLATFORM[backend]
    _lo, opt, hi = batch_range
    batched = bool(inputs) and inputs[0].shape[:1] == (None,) and hi >= 1
    lines = [f"name: {_quote(name)}", f"{key}: {_quote(value)}", f"max_batch_size: {hi if batched else 0}"]
    if default_file:
        lines.append(f"default_model_filename: {_quote(default_file)}")
    for k, v in sorted((cc_files or {}).items()):
        lines.append(f"cc_model_filenames {{ key: {_quote(k)} value: {_quote(v)} }}")
    lines.append("input [\n" + ",\n".join(_tensor_block(inputs, batched)) + "\n]")
    lines.append("output [\n" + ",\n".join(_tensor_block(outputs, batched)) + "\n]")
    if batched and hi > 1:
        preferred = sorted({b for b in (opt, hi) if 1 < b <= hi})
        pref = f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n" if preferred else ""
        lines.append(f"dynamic_batching {{\n{pref}  max_queue_delay_microseconds: {int(max_queue_delay_us)}\n}}")
    kind = "KIND_GPU" if backend == "tensorrt" else "KIND_CPU"
    lines.append(f"instance_group [\n  {{\n    count: {int(instances)}\n    kind: {kind}\n  }}\n]")
    for k, v in params.items():
        lines.append(f"parameters {{\n  key: {_quote(k)}\n  value: {{ string_value: {_quote(v)} }}\n}}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ artifacts
def _servable(bundle: Bundle) -> list[tuple[str, str, Artifact | None]]:
    """``(backend, precision, artifact)`` for everything a server can load; fp32 ONNX is always there."""
    out: list[tuple[str, str, Artifact | None]] = [("onnxruntime", "fp32", None)]
    for art in bundle.manifest.artifacts.values():
        if art.backend not in _PLATFORM or art.build_flags.get("emit_only"):
            continue
        if (art.backend, art.precision) == ("onnxruntime", "fp32"):
            continue
        out.append((art.backend, art.precision, art))
    return out


def _engine_files(art: Artifact) -> dict[str, str]:
    """compute capability ("8.6") → engine path in the bundle, where the artifact records it."""
    engines = art.extra.get("engines")
    if isinstance(engines, dict) and engines:
        return {str(k): str(v) for k, v in engines.items()}
    cc = art.extra.get("compute_capability") or art.build_flags.get("compute_capability")
    return {str(cc): art.path} if cc else {}


def _copy_model(
    bundle: Bundle, backend: str, art: Artifact | None, vdir: Path
) -> tuple[list[str], dict[str, str], str | None]:
    """Copy the model files into ``vdir``; returns (file names, cc → file, default file name or None)."""
    vdir.mkdir(parents=True)
    if art is None:
        shutil.copy2(bundle.file("model.onnx"), vdir / "model.onnx")
        return ["model.onnx"], {}, None
    if backend == "onnxruntime":
        shutil.copy2(bundle.file(art.path), vdir / "model.onnx")
        return ["model.onnx"], {}, None
    if backend == "openvino":
        shutil.copy2(bundle.file(art.path), vdir / "model.xml")
        shutil.copy2(bundle.file(str(PurePosixPath(art.path).with_suffix(".bin"))), vdir / "model.bin")
        return ["model.xml", "model.bin"], {}, "model.xml"
    per_cc = _engine_files(art)
    if not per_cc:
        shutil.copy2(bundle.file(art.path), vdir / "model.plan")
        return ["model.plan"], {}, None
    files, cc_files = [], {}
    for cc, rel in sorted(per_cc.items()):
        fname = f"model_sm{cc.replace('.', '')}.plan"
        shutil.copy2(bundle.file(rel), vdir / fname)
        files.append(fname)
        cc_files[cc] = fname
    return files, cc_files, files[0]


# ------------------------------------------------------------------------------------------------ writing
def _check_output(bundle: Bundle, out: Path, force: bool) -> None:
    out_r, root = out.resolve(), bundle.root.resolve()
    if out_r == root or root in out_r.parents or out_r in root.parents:
        raise ConfigError(
            f"--output: expected a folder outside the bundle, found '{out}' (it would overwrite or "
            f"contain '{bundle.root}')"
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output: expected a folder, found a file at '{out}'")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ConfigError(
                f"--output: expected an empty folder or one edgecv repo wrote, found '{out}' with "
                f"other files (edgecv never writes over a folder it did not make)"
            )
        if not force:
            raise ConfigError(f"--output: '{out}' already holds a model repository; pass --force to replace it")


def write_repository(
    bundle: Bundle,
    out: str | Path,
    *,
    fmt: str = "triton",
    name: str | None = None,
    instances: int = 1,
    max_queue_delay_us: int = 2000,
    force: bool = False,
) -> dict[str, Any]:
    """Write a Triton or OVMS model repository for ``bundle`` at ``out``; returns what was written.

    Raises:
        ConfigError: unknown format, bad counts, an output folder that is not ours / inside the bundle.
        BundleError: a model file whose hash does not match the manifest.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--server: expected one of {', '.join(FORMATS)}, found '{fmt}'")
    if instances < 1:
        raise ConfigError(f"--instances: expected at least 1, found {instances}")
    if max_queue_delay_us < 0:
        raise ConfigError(f"--max-queue-delay-us: expected 0 or more, found {max_queue_delay_us}")
    out = Path(out)
    _check_output(bundle, out, force)
    base = name or model_name(bundle)
    inputs, outputs = io_specs(bundle)
    params = contract_parameters(bundle)
    lo, opt, hi = (int(v) for v in bundle.contract.batch_range)
    report: dict[str, Any] = {"root": str(out), "format": fmt, "bundle": str(bundle.root), "models": [], "notes": []}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; a server in another container reads it
    try:
        ovms_list = []
        for backend, precision, art in _servable(bundle):
            if fmt == "ovms" and backend == "tensorrt":
                report["notes"].append(
                    f"tensorrt:{precision} skipped: OpenVINO Model Server cannot load TensorRT engines"
                )
                continue
            mname = f"{base}_{backend}_{precision}"
            mdir = tmp / mname
            files, cc_files, default_file = _copy_model(bundle, backend, art, mdir / "1")
            br = (lo, opt, hi)
            if art is not None and isinstance(art.build_flags.get("batch_range"), list):
                br = tuple(int(v) for v in art.build_flags["batch_range"])  # type: ignore[assignment]
            entry = {
                "name": mname,
                "backend": backend,
                "precision": precision,
                "files": files,
                "max_batch_size": br[2] if inputs and inputs[0].shape[:1] == (None,) else 0,
            }
            if fmt == "triton":
                if backend == "tensorrt" and not cc_files:
                    report["notes"].append(
                        f"{mname}: the artifact records no compute capability, so the engine is "
                        f"model.plan without cc_model_filenames; serve it on the GPU it was built on"
                    )
                (mdir / "config.pbtxt").write_text(
                    triton_config(
                        mname,
                        backend,
                        inputs,
                        outputs,
                        params,
                        br,
                        instances=instances,  # type: ignore[arg-type]
                        max_queue_delay_us=max_queue_delay_us,
                        cc_files=cc_files,
                        default_file=default_file if cc_files else None,
                    )
                )
                entry["platform"] = _PLATFORM[backend][1]
                entry["config"] = f"{mname}/config.pbtxt"
            else:
                (mdir / "edgecv_contract.json").write_text(bundle.contract.to_json())
                shape = (
                    ",".join(
                        ("1:" + str(br[2]) if i == 0 and d is None else "-1" if d is None else str(d))
                        for i, d in enumerate(inputs[0].shape)
                    )
                    if inputs
                    else ""
                )
                cfg: dict[str, Any] = {
                    "name": mname,
                    "base_path": f"./{mname}",
                    "target_device": "CPU",
                    "nireq": max(2, instances * 2),
                    "plugin_config": {"PERFORMANCE_HINT": "THROUGHPUT"},
                }
                if inputs and len(inputs) == 1:
                    cfg["shape"] = {inputs[0].name: f"({shape})"}
                ovms_list.append({"config": cfg})
                entry["platform"] = f"ovms {'openvino IR' if backend == 'openvino' else 'onnx'}"
            report["models"].append(entry)
        if fmt == "ovms":
            (tmp / "config.json").write_text(json.dumps({"model_config_list": ovms_list}, indent=2) + "\n")
            report["notes"].append(
                "OVMS does not merge requests from different clients into one batch for a single "
                "model; use Triton or edgecv serve for server-side dynamic batching"
            )
        (tmp / MARKER).write_text(
            json.dumps(
                {
                    "tool": "edgecv repo",
                    "format": fmt,
                    "created": now_iso(),
                    "bundle": str(bundle.root.resolve()),
                    "bundle_name": bundle.manifest.name,
                    "models": report["models"],
                },
                indent=2,
            )
            + "\n"
        )
        if out.exists():
            old = out.with_name(f".{out.name}.old-{now_iso().replace(':', '')}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report
