"""``edgecv serve``: a bundle behind an Open Inference Protocol (KServe v2) server, built on MLServer.

Why MLServer: it speaks the Open Inference Protocol over HTTP and gRPC (so ``tritonclient``, KServe and any v2
client talk to it), has server-side adaptive batching (requests from different clients merged within
``max_batch_time``, up to ``max_batch_size``), runs inference in several worker processes, serves
health / ready / metadata endpoints and Prometheus metrics, and installs from PyPI without torch. KServe's
``ModelServer`` would also do, but it needs a hand-written batcher and pulls the whole ``kserve`` SDK.

The served model is a small MLServer runtime (:func:`bundle_model_class`) that opens the bundle with the
existing runners (``edgecv.backends``); the class subclasses ``mlserver.MLModel`` so it is made by a factory
(DESIGN rule 5) and published under a module attribute on first access (``__getattr__``), which is how
MLServer's worker processes import it by path.

What MLServer does not do, edgecv adds through hooks MLServer has:

- request checking before batching (an inference middleware): a wrong tensor name, dtype or shape is a 400 with
  one line, the request never joins a batch, and the server keeps serving;
- the network rule of :mod:`edgecv.netguard`: MLServer has no authentication, so a non-loopback bind needs a
  token, and the token is checked by an ASGI middleware on the HTTP and metrics apps and by a gRPC server
  interceptor (health endpoints stay open for probes);
- a merged batch larger than the bundle's batch range is run in chunks of the bundle's maximum.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.backends.oip import contract_parameters, model_name, numpy_dtype, oip_dtype, wire_shape
from edgecv.errors import ConfigError

_CLASS_CACHE: dict[str, type] = {}
#: Prometheus histogram of the items each engine call received (1 when nothing was merged)
BATCH_METRIC = "edgecv_infer_batch_items"
#: paths that stay open without a token (Kubernetes probes cannot send one)
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")
OPEN_GRPC = ("/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady")


@dataclass
class ServeConfig:
    """What ``edgecv serve`` starts.

    Attributes:
        bundle: bundle folder.
        backend / precision / device / threads: the runner each worker opens (threads None: CPUs / workers).
        host / http_port / grpc_port / metrics_port: where to listen.
        workers: MLServer parallel inference workers (processes); 0 runs inference in the server process.
        max_batch_time_ms: how long the adaptive batcher waits to fill a batch; 0 turns batching off.
        max_batch_size: requests merged at most (None: the bundle's largest batch).
        token: required bearer token (None: loopback only).
        name: served model name (None: the bundle's name).
    """

    bundle: str
    backend: str = "openvino"
    precision: str = "fp32"
    device: str | None = None
    threads: int | None = None
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    workers: int = 2
    max_batch_time_ms: float = 2.0
    max_batch_size: int | None = None
    token: str | None = None
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def bundle_model_class() -> type:
    """The MLServer runtime serving one bundle (made on first call, then cached)."""
    if "BundleModel" in _CLASS_CACHE:
        return _CLASS_CACHE["BundleModel"]
    mlserver = lazy_import("mlserver", extra="serve")
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.errors import InferenceError
    from mlserver.types import InferenceRequest, InferenceResponse, MetadataModelResponse, Parameters

    class BundleModel(MLModel):  # type: ignore[misc]
        """Opens ``parameters.extra['bundle']`` with the edgecv runner named there and serves it."""

        async def load(self) -> bool:
            from edgecv.backends import open_runner
            from edgecv.bundle import Bundle

            extra = dict(self.settings.parameters.extra or {})
            self._bundle = Bundle.open(extra["bundle"])
            self._runner = open_runner(
                self._bundle,
                extra["backend"],
                precision=extra["precision"],
                device=extra.get("device"),
                threads=extra.get("threads"),
            )
            self._runner.load()
            self._max_batch = int(self._bundle.contract.batch_range[2])
            self._out_names = [s.name for s in self._runner.output_spec]
            self._lock = threading.Lock()  # one inference at a time per worker: runners are not re-entrant
            # how many items each engine call got: shows on /metrics whether the batcher merges requests
            mlserver.register(BATCH_METRIC, "items per inference call after server-side batching")
            self.ready = True
            return True

        def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            n = int(next(iter(feed.values())).shape[0])
            with self._lock:
                if n <= self._max_batch:
                    return self._runner.infer(feed)
                parts = [
                    self._runner.infer({k: v[i : i + self._max_batch] for k, v in feed.items()})
                    for i in range(0, n, self._max_batch)
                ]
            return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}

        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            try:
                feed = {inp.name: np.ascontiguousarray(NumpyCodec.decode_input(inp)) for inp in payload.inputs}
                mlserver.log(**{BATCH_METRIC: int(next(iter(feed.values())).shape[0]) if feed else 0})
                out = await asyncio.to_thread(self._infer, feed)
            except Exception as exc:
                raise InferenceError(" ".join(str(exc).split())[:300] or type(exc).__name__) from exc
            return InferenceResponse(
                model_name=self.name,
                model_version=self.version,
                outputs=[NumpyCodec.encode_output(k, out[k]) for k in self._out_names if k in out],
            )

        async def metadata(self) -> MetadataModelResponse:
            meta = await super().metadata()
            meta.parameters = Parameters(
                **contract_parameters(self._bundle),
                edgecv_backend=self._runner.name,
                edgecv_precision=self._runner.precision,
            )
            return meta

        async def unload(self) -> bool:
            self._runner.close()
            return True

    BundleModel.__module__ = __name__
    BundleModel.__qualname__ = "BundleModel"
    _CLASS_CACHE["BundleModel"] = BundleModel
    return BundleModel


def __getattr__(name: str) -> Any:
    # MLServer imports the runtime by path ("edgecv.serve.server.BundleModel"), also in its worker processes
    if name == "BundleModel":
        return bundle_model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------------------------ checks
def check_request_inputs(inputs: list[Any], specs: list[Any], max_batch: int) -> str | None:
    """One line saying what is wrong with a request's inputs against the served specs, or None when it fits.

    ``inputs`` and ``specs`` carry ``name``, ``datatype`` and ``shape`` (MLServer's RequestInput /
    MetadataTensor). A ``-1`` in a spec is dynamic; the leading one is the batch, bounded by ``max_batch``.
    """
    want = {s.name: s for s in specs}
    got = [i.name for i in inputs]
    if sorted(got) != sorted(want):
        return f"expected inputs {sorted(want)}, found {sorted(got)}"
    for inp in inputs:
        spec = want[inp.name]
        dt = str(getattr(inp.datatype, "value", inp.datatype))
        sdt = str(getattr(spec.datatype, "value", spec.datatype))
        if dt != sdt:
            return f"input '{inp.name}': expected datatype {sdt}, found {dt}"
        shape = [int(v) for v in inp.shape]
        sshape = list(spec.shape)
        if len(shape) != len(sshape) or any(w != -1 and w != g for w, g in zip(sshape, shape)):
            return (
                f"input '{inp.name}': expected shape {'x'.join('?' if d == -1 else str(d) for d in sshape)}, "
                f"found {'x'.join(map(str, shape))}"
            )
        if shape and sshape[0] == -1 and not 1 <= shape[0] <= max_batch:
            return f"input '{inp.name}': expected a batch of 1 to {max_batch}, found {shape[0]}"
        n = math.prod(shape)
        data = getattr(inp, "data", None)
        root = getattr(data, "root", data)
        if isinstance(root, list) and root and not isinstance(root[0], (list, bytes, str)) and len(root) != n:
            return f"input '{inp.name}': expected {n} values for shape {shape}, found {len(root)}"
    return None


def _check_middleware(specs: list[Any], max_batch: int) -> Any:
    from mlserver.errors import MLServerError
    from mlserver.middleware import InferenceMiddleware

    class _CheckInputs(InferenceMiddleware):  # type: ignore[misc]
        def request_middleware(self, request: Any, model_settings: Any) -> Any:
            reason = check_request_inputs(request.inputs, specs, max_batch)
            if reason:
                raise MLServerError(reason, status_code=400)
            return request

        def response_middleware(self, response: Any, model_settings: Any) -> Any:
            return response

    return _CheckInputs()


def _token_asgi(app: Any, token: str) -> Any:
    """Pure ASGI middleware class for ``app.add_middleware``: 401 unless the request carries the token."""
    from edgecv.netguard import request_token, token_ok

    class _TokenMiddleware:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope.get("type") != "http" or scope.get("path") in OPEN_PATHS:
                await self.inner(scope, receive, send)
                return
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            qs = scope.get("query_string", b"").decode("latin-1")
            if token_ok(token, request_token(headers, "/?" + qs)):
                await self.inner(scope, receive, send)
                return
            body = b'{"error": "expected a bearer token (Authorization: Bearer ...), found none or a wrong one"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
                }
            )
            await send({"type": "http.response.body", "body": body})

    app.add_middleware(_TokenMiddleware)


def _token_interceptor(token: str) -> Any:
    import grpc
    from grpc import aio

    from edgecv.netguard import token_ok

    class _TokenInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            if details.method in OPEN_GRPC:
                return await continuation(details)
            md = {k.lower(): v for k, v in (details.invocation_metadata or ())}
            auth = str(md.get("authorization", ""))
            given = auth[7:].strip() if auth.lower().startswith("bearer ") else None
            if token_ok(token, given):
                return await continuation(details)

            async def deny(request: Any, context: Any) -> Any:
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "expected a bearer token (authorization metadata), found none or a wrong one",
                )

            return grpc.unary_unary_rpc_method_handler(deny)

    return _TokenInterceptor()


class _AioWithInterceptor:
    """Stands in for ``grpc.aio`` inside MLServer's gRPC server module so its ``aio.server(...)`` gets the token
    interceptor first; MLServer builds its interceptor list privately and offers no other hook."""

    def __init__(self, aio: Any, interceptor: Any) -> None:
        self._aio, self._interceptor = aio, interceptor

    def server(self, *args: Any, interceptors: Any = None, **kw: Any) -> Any:
        return self._aio.server(*args, interceptors=[self._interceptor, *(interceptors or [])], **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._aio, name)


# ------------------------------------------------------------------------------------------------ serving
def model_settings_for(cfg: ServeConfig) -> tuple[Any, list[Any], int]:
    """MLServer ``ModelSettings`` for the bundle, the input specs as metadata tensors, and the max batch.

    Opens the runner once here (then closes it) so metadata, request checks and batching limits come from what
    the engine actually loads, not from a guess.
    """
    from mlserver.settings import ModelParameters, ModelSettings
    from mlserver.types import MetadataTensor

    from edgecv.backends import open_runner
    from edgecv.bundle import Bundle

    b = Bundle.open(cfg.bundle)
    with open_runner(b, cfg.backend, precision=cfg.precision, device=cfg.device, threads=1) as r:
        ins = [MetadataTensor(name=s.name, datatype=oip_dtype(s.dtype), shape=wire_shape(s)) for s in r.input_spec]
        outs = [MetadataTensor(name=s.name, datatype=oip_dtype(s.dtype), shape=wire_shape(s)) for s in r.output_spec]
        dynamic = bool(r.input_spec) and r.input_spec[0].shape[:1] == (None,)
    _lo, _, hi = (int(v) for v in b.contract.batch_range)
    max_batch = hi if dynamic else 1
    batch_size = max(1, min(cfg.max_batch_size or max_batch, max_batch))
    batching = dynamic and batch_size > 1 and cfg.max_batch_time_ms > 0
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // max(1, cfg.workers))
    ms = ModelSettings(
        name=cfg.name or model_name(b),
        implementation=f"{__name__}.BundleModel",
        platform="edgecv",
        versions=["1"],
        inputs=ins,
        outputs=outs,
        max_batch_size=batch_size if batching else 0,
        max_batch_time=cfg.max_batch_time_ms / 1e3 if batching else 0.0,
        parameters=ModelParameters(
            version="1",
            extra={
                "bundle": str(b.root),
                "backend": cfg.backend,
                "precision": cfg.precision,
                "device": cfg.device,
                "threads": threads,
            },
        ),
    )
    return ms, ins, max_batch


def choose_target(bundle: str, backend: str | None, precision: str | None) -> tuple[str, str]:
    """``-b NAME[:PRECISION]`` as every command reads it; without ``-b``, the best artifact the bundle holds here
    (the rule ``run`` follows). A target the bundle cannot serve is refused here, before anything prints.

    Raises:
        ConfigError: torch or an unknown engine, an unknown precision, an INT8 target with no INT8 model.
    """
    from edgecv.backends import RUNNERS
    from edgecv.backends.runs import best_target, require_artifacts
    from edgecv.bundle import Bundle
    from edgecv.types import parse_backend_spec, parse_precision

    b = Bundle.open(bundle, verify=False)
    if backend is None:
        return best_target(b, parse_precision(precision) if precision else None)
    name, prec = parse_backend_spec(backend, precision or "fp32")
    if name in ("torch", "remote"):
        raise ConfigError(
            f"--backend {name}: expected an engine that runs the bundle (onnxruntime, openvino, tensorrt)"
        )
    RUNNERS.get(name)  # unknown → one line listing the choices
    require_artifacts(b, [(name, prec)])
    return name, prec


def check_config(cfg: ServeConfig) -> None:
    """Refuse, in one line, what cannot start: a non-loopback bind without a token, clashing ports, bad counts."""
    from edgecv.netguard import check_bind

    check_bind(cfg.host, cfg.token, what="edgecv serve")
    ports = [cfg.http_port, cfg.grpc_port, cfg.metrics_port]
    if len(set(ports)) != 3 or any(not 0 < p < 65536 for p in ports):
        raise ConfigError(f"--port/--grpc-port/--metrics-port: expected three different ports 1-65535, found {ports}")
    if cfg.workers < 0:
        raise ConfigError(f"--workers: expected 0 or more, found {cfg.workers}")
    if cfg.max_batch_time_ms < 0:
        raise ConfigError(f"--max-batch-time: expected milliseconds >= 0, found {cfg.max_batch_time_ms}")
    if cfg.max_batch_size is not None and cfg.max_batch_size < 1:
        raise ConfigError(f"--max-batch-size: expected at least 1, found {cfg.max_batch_size}")


def serve(cfg: ServeConfig) -> None:
    """Run the server until SIGINT / SIGTERM.

    Raises:
        ConfigError: non-loopback bind without a token, bad ports or counts.
        MissingDependencyError: MLServer not installed (``pip install edgecv[serve]``).
    """
    check_config(cfg)
    lazy_import("mlserver", extra="serve")
    from mlserver import MLServer
    from mlserver.middleware import InferenceMiddlewares
    from mlserver.settings import Settings

    ms, ins, max_batch = model_settings_for(cfg)
    # the workers' Prometheus files go to a private temp folder, not into the current directory
    metrics_dir = tempfile.mkdtemp(prefix="edgecv-serve-metrics-")
    settings = Settings(
        host=cfg.host,
        http_port=cfg.http_port,
        grpc_port=cfg.grpc_port,
        metrics_port=cfg.metrics_port,
        parallel_workers=cfg.workers,
        debug=False,
        load_models_at_startup=True,
        server_name="edgecv-mlserver",
        metrics_dir=metrics_dir,
        model_repository_root=str(ms.parameters.extra["bundle"]),
    )

    async def _main() -> None:
        if cfg.token:
            import mlserver.grpc.server as grpc_server_mod
            from grpc import aio

            grpc_server_mod.aio = _AioWithInterceptor(aio, _token_interceptor(cfg.token))  # type: ignore[assignment]
        server = MLServer(settings)
        # request checks run in the server process before a request may join a batch
        dp = server._data_plane
        dp._inference_middleware = InferenceMiddlewares(dp._inference_middleware, _check_middleware(ins, max_batch))
        if cfg.token:
            _token_asgi(server._rest_server._app, cfg.token)
            if server._metrics_server is not None:
                _token_asgi(server._metrics_server._app, cfg.token)
        await server.start([ms])

    try:
        asyncio.run(_main())
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def describe(cfg: ServeConfig) -> dict[str, Any]:
    """What ``serve`` is about to start, for the banner and --json (no framework import)."""
    return {
        "bundle": cfg.bundle,
        "backend": cfg.backend,
        "precision": cfg.precision,
        "host": cfg.host,
        "http": f"http://{cfg.host}:{cfg.http_port}",
        "grpc": f"grpc://{cfg.host}:{cfg.grpc_port}",
        "metrics": f"http://{cfg.host}:{cfg.metrics_port}/metrics",
        "workers": cfg.workers,
        "max_batch_time_ms": cfg.max_batch_time_ms,
        "token": bool(cfg.token),
    }


__all__ = [
    "ServeConfig",
    "bundle_model_class",
    "check_request_inputs",
    "describe",
    "model_settings_for",
    "numpy_dtype",
    "serve",
]
