"""Backends: one Runner (and Builder, where there is something to build) per inference engine.

Entries are lazy ``module:Class`` strings so that importing this package imports no framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgecv.registry import Registry

if TYPE_CHECKING:
    from edgecv.backends.base import Builder, Runner
    from edgecv.bundle import Bundle

RUNNERS: Registry[type[Runner]] = Registry("backend")
BUILDERS: Registry[type[Builder]] = Registry("backend builder")

RUNNERS.register("torch", "edgecv.backends.torch:TorchRunner", module="torch", extra="torch")
RUNNERS.register(
    "onnxruntime", "edgecv.backends.onnxruntime:OnnxRuntimeRunner", module="onnxruntime", extra="onnxruntime"
)
RUNNERS.register("openvino", "edgecv.backends.openvino:OpenVINORunner", module="openvino", extra="openvino")
RUNNERS.register("tensorrt", "edgecv.backends.tensorrt:TensorRTRunner", module="tensorrt", extra="tensorrt")
# a model served over the Open Inference Protocol (edgecv serve, Triton, OVMS, KServe); needs --endpoint
RUNNERS.register("remote", "edgecv.backends.remote:RemoteRunner", module="tritonclient", extra="serve")

BUILDERS.register("openvino", "edgecv.backends.openvino:OpenVINOBuilder")
BUILDERS.register("tensorrt", "edgecv.backends.tensorrt:TensorRTBuilder")
BUILDERS.register("onnxruntime", "edgecv.backends.onnxruntime:OnnxRuntimeBuilder")


def open_runner(
    bundle: Bundle,
    backend: str,
    precision: str = "fp32",
    device: str | None = None,
    threads: int | None = None,
    **kwargs: Any,
) -> Runner:
    """A (not yet loaded) runner for ``bundle`` on ``backend`` at ``precision``.

    Raises:
        UnknownNameError: unknown backend (lists the choices).
        MissingDependencyError: the backend's framework is not installed (names the extra).
    """
    cls = RUNNERS.get(backend)
    return cls.from_bundle(bundle, precision=precision, device=device, threads=threads, **kwargs)  # type: ignore[attr-defined,no-any-return]
