"""The ``remote`` backend: a Runner over ``tritonclient`` that sends each ``infer`` to an Open Inference Protocol
server (``edgecv serve``, Triton, OpenVINO Model Server, KServe), over HTTP or gRPC.

validate, bench and run use it like any local runner: ``-b remote --endpoint http://127.0.0.1:8000 --model-name NAME``.
The endpoint's scheme picks the protocol (``http://``/``https://`` → HTTP/REST, ``grpc://`` → gRPC; a bare
``host:port`` is HTTP). Specs come from the server's model metadata; when the metadata carries an edgecv contract
it must equal the bundle's, so a client never compares a bundle against some other model.

Faults are one line: a server that is down or dies mid-run is a :class:`~edgecv.errors.BackendError` (exit 2),
a request the server refuses (wrong name, shape, dtype) is an :class:`~edgecv.errors.InputError` with the
server's reason. HTTP sends tensors as JSON (MLServer's REST has no binary extension); gRPC sends raw bytes.
"""

from __future__ import annotations

import os
import threading
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.backends.base import Runner
from edgecv.errors import BackendError, ConfigError, InputError
from edgecv.types import TensorSpec

if TYPE_CHECKING:
    from edgecv.bundle import Bundle

ENDPOINT_ENV = "EDGECV_ENDPOINT"
MODEL_ENV = "EDGECV_MODEL"
#: contract fields that must agree between the bundle and the served model
_CONTRACT_FIELDS = (
    "task",
    "input_name",
    "layout",
    "dtype",
    "color",
    "resize",
    "scale",
    "mean",
    "std",
    "class_names",
    "output_names",
)


def parse_endpoint(endpoint: str) -> tuple[str, str, bool]:
    """``grpc://h:p`` → ``("grpc", "h:p", False)``; ``http://h:p`` or ``h:p`` → HTTP; ``https://`` → SSL."""
    text = endpoint.strip()
    if "://" not in text:
        text = "http://" + text
    u = urllib.parse.urlsplit(text)
    scheme = u.scheme.lower()
    if scheme not in ("http", "https", "grpc", "grpcs") or not u.hostname:
        raise ConfigError(f"--endpoint: expected http://HOST:PORT or grpc://HOST:PORT, found '{endpoint}'")
    port = u.port or {"http": 80, "https": 443, "grpc": 8001, "grpcs": 443}[scheme]
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    return ("grpc" if scheme.startswith("grpc") else "http"), f"{host}:{port}", scheme in ("https", "grpcs")


def _one_line(exc: BaseException) -> str:
    msg = getattr(exc, "message", None)
    text = " ".join(str((msg() if callable(msg) else str(exc)) or type(exc).__name__).split())[:300]
    status = getattr(exc, "status", None)
    code = str((status() if callable(status) else None) or "").replace("StatusCode.", "")
    return f"{code}: {text}" if code and code not in text else text


class RemoteRunner(Runner):
    """Runs a model served over the Open Inference Protocol.

    Args:
        endpoint: ``http://HOST:PORT`` (REST) or ``grpc://HOST:PORT``.
        model: served model name.
        token: bearer token sent as ``Authorization`` (None: ``EDGECV_TOKEN`` if set, else none).
        contract: the bundle's contract as a dict, checked against the server's metadata when it carries one.
        precision: the precision asked for; the server's report (``edgecv_precision``) wins when present.
        timeout_s: network timeout per call.
    """

    name = "remote"

    def __init__(
        self,
        endpoint: str,
        model: str,
        token: str | None = None,
        contract: dict[str, Any] | None = None,
        precision: str = "fp32",
        timeout_s: float = 60.0,
    ) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.protocol, self.url, self.ssl = parse_endpoint(endpoint)
        self.model = model
        self.token = token if token is not None else (os.environ.get("EDGECV_TOKEN") or None)
        self.contract = contract
        self.precision = precision
        self.timeout_s = float(timeout_s)
        self.device = f"remote {self.protocol}://{self.url}"
        self.threads = None
        self.metadata: dict[str, Any] = {}
        self._client: Any = None
        self._clients: list[Any] = []
        self._local = threading.local()
        self._owner = threading.get_ident()
        self._mod: Any = None

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        precision: str = "fp32",
        device: str | None = None,
        threads: int | None = None,
        endpoint: str | None = None,
        model: str | None = None,
        token: str | None = None,
        **kw: Any,
    ) -> RemoteRunner:
        """A runner for the server that serves ``bundle``: ``endpoint`` (or ``EDGECV_ENDPOINT``), ``model`` (or
        ``EDGECV_MODEL``, else the bundle's name)."""
        if kw:
            raise ConfigError(f"remote runner: unexpected options {sorted(kw)}")
        from edgecv.backends.oip import model_name

        ep = endpoint or os.environ.get(ENDPOINT_ENV)
        if not ep:
            raise ConfigError(
                f"-b remote: expected --endpoint http://HOST:PORT or grpc://HOST:PORT (or {ENDPOINT_ENV}), found none"
            )
        name = model or os.environ.get(MODEL_ENV) or model_name(bundle)
        return cls(ep, name, token=token, contract=bundle.contract.model_dump(), precision=precision)

    # ------------------------------------------------------------------ lifecycle
    def _headers(self) -> dict[str, str] | None:
        # gRPC metadata keys must be lower case; HTTP headers are case-insensitive
        return {"authorization": f"Bearer {self.token}"} if self.token else None

    def _load(self) -> None:
        self._owner = threading.get_ident()
        self._mod = lazy_import(f"tritonclient.{self.protocol}", extra="serve")
        self._client = self._new_client()
        try:
            if self.protocol == "grpc":
                meta = self._client.get_model_metadata(self.model, headers=self._headers(), as_json=True)
            else:
                meta = self._client.get_model_metadata(self.model, headers=self._headers())
        except Exception as exc:
            self._close()
            raise BackendError(f"remote {self.protocol}://{self.url} model '{self.model}': {_one_line(exc)}") from exc
        self.metadata = dict(meta)
        self._input_spec = [self._spec(t) for t in meta.get("inputs", [])]
        self._output_spec = [self._spec(t) for t in meta.get("outputs", [])]
        if not self._input_spec or not self._output_spec:
            self._close()
            raise BackendError(
                f"remote model '{self.model}': expected inputs and outputs in its metadata, found "
                f"{len(self._input_spec)} and {len(self._output_spec)}"
            )
        self._check_contract(meta.get("parameters") or {})

    def _spec(self, t: dict[str, Any]) -> TensorSpec:
        from edgecv.backends.oip import numpy_dtype

        shape = tuple(None if int(d) < 0 else int(d) for d in t.get("shape", []))
        return TensorSpec(str(t["name"]), shape, numpy_dtype(str(t["datatype"])))

    def _new_client(self) -> Any:
        if self.protocol == "grpc":
            client = self._mod.InferenceServerClient(url=self.url, ssl=self.ssl)
        else:
            client = self._mod.InferenceServerClient(
                url=self.url, ssl=self.ssl, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
            )
        self._clients.append(client)
        return client

    def _thread_client(self) -> Any:
        """The HTTP client of the calling thread: tritonclient.http runs on gevent, whose connections cannot move
        between threads (``run`` loads in one thread and infers in another); gRPC clients are thread-safe."""
        if self.protocol == "grpc":
            return self._client
        ident = threading.get_ident()
        if self._owner != ident:
            if not hasattr(self._local, "client"):
                self._local.client = self._new_client()
            return self._local.client
        return self._client

    def _check_contract(self, params: dict[str, Any]) -> None:
        from edgecv.backends.oip import contract_from_parameters

        served = contract_from_parameters(params)
        if served is None:
            return  # a plain Triton / OVMS model: nothing to compare, the specs still are
        prec = params.get("edgecv_precision")
        if isinstance(prec, dict):
            prec = prec.get("string_value")
        if isinstance(prec, str) and prec:
            self.precision = prec
        if self.contract is None:
            return
        diff = [k for k in _CONTRACT_FIELDS if k in served and served.get(k) != self.contract.get(k)]
        if diff:
            self._close()
            raise BackendError(
                f"remote model '{self.model}': expected the bundle's contract, found a different "
                f"{', '.join(diff)} (is it serving another bundle?)"
            )

    def _close(self) -> None:
        for client in self._clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001, S110 - closing a dead connection or one of another thread
                pass
        self._clients.clear()
        self._client = None
        self._local = threading.local()

    # ------------------------------------------------------------------ inference
    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from edgecv.backends.oip import oip_dtype

        mod = self._mod
        inputs = []
        for spec in self._input_spec:
            arr = np.ascontiguousarray(feed[spec.name])
            inp = mod.InferInput(spec.name, list(arr.shape), oip_dtype(str(arr.dtype)))
            if self.protocol == "grpc":
                inp.set_data_from_numpy(arr)
            else:
                inp.set_data_from_numpy(arr, binary_data=False)
            inputs.append(inp)
        outputs = [
            mod.InferRequestedOutput(s.name)
            if self.protocol == "grpc"
            else mod.InferRequestedOutput(s.name, binary_data=False)
            for s in self._output_spec
        ]
        try:
            res = self._thread_client().infer(
                self.model,
                inputs,
                outputs=outputs,
                headers=self._headers(),
                **({"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}),
            )
        except Exception as exc:
            status = str(getattr(exc, "status", lambda: "")() or "")
            line = f"remote {self.protocol}://{self.url} model '{self.model}': {_one_line(exc)}"
            if status in ("400", "StatusCode.INVALID_ARGUMENT"):
                raise InputError(line) from exc
            raise BackendError(line) from exc
        out: dict[str, np.ndarray] = {}
        for s in self._output_spec:
            arr = res.as_numpy(s.name)
            if arr is None:
                raise BackendError(f"remote model '{self.model}': expected output '{s.name}', found none")
            out[s.name] = np.asarray(arr, dtype=np.dtype(s.dtype))
        return out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(endpoint=f"{self.protocol}://{self.url}", model=self.model)
        return d


__all__ = ["ENDPOINT_ENV", "MODEL_ENV", "Path", "RemoteRunner", "parse_endpoint"]
