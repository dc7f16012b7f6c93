"""The Runner and Builder interfaces every backend implements.

validate, bench and stream take any :class:`Runner` and never ask which backend it is.
"""

from __future__ import annotations

import abc
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from typing_extensions import Self

from edgecv.errors import BackendError, InputError
from edgecv.types import Precision, TensorSpec

if TYPE_CHECKING:
    from edgecv.bundle import Artifact, Bundle


class Runner(abc.ABC):
    """A loaded model that maps a feed dict of numpy arrays to a dict of numpy arrays.

    Use it as a context manager: ``with runner: runner.infer(feed)``. :meth:`infer` checks input names,
    shapes and dtypes against :attr:`input_spec` before calling :meth:`_infer_impl`.

    Attributes set by :meth:`load`:
        load_time_s: seconds spent loading / compiling the model.
        precision: the precision the backend actually runs (e.g. ``"fp32"``, ``"bf16"``), read back from the
            engine where it reports it.
        device: the device the backend runs on (e.g. ``"CPU"``, ``"cuda:0"``).
    """

    name: ClassVar[str] = "runner"
    #: ``infer`` may be called from several threads at once (the engine is thread-safe and keeps no per-call
    #: state in the runner); :meth:`async_queue` then overlaps that many calls, else it runs one at a time
    concurrent_infer: ClassVar[bool] = False

    def __init__(self) -> None:
        self.load_time_s: float = 0.0
        self.precision: str = "fp32"
        self.device: str = "CPU"
        self._loaded = False
        self._input_spec: list[TensorSpec] = []
        self._output_spec: list[TensorSpec] = []

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Self:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self) -> None:
        if self._loaded:
            return
        t0 = time.perf_counter()
        self._load()
        self.load_time_s = time.perf_counter() - t0
        self._loaded = True

    def close(self) -> None:
        if self._loaded:
            self._close()
            self._loaded = False

    @abc.abstractmethod
    def _load(self) -> None:
        """Load the model; fill ``_input_spec``/``_output_spec``, ``precision`` and ``device``."""

    def _close(self) -> None:
        """Release resources."""

    # ------------------------------------------------------------------ specs
    @property
    def input_spec(self) -> list[TensorSpec]:
        self._require_loaded()
        return self._input_spec

    @property
    def output_spec(self) -> list[TensorSpec]:
        self._require_loaded()
        return self._output_spec

    @property
    def is_loaded(self) -> bool:
        return self._loaded

    def _require_loaded(self) -> None:
        if not self._loaded:
            raise BackendError(f"{self.name} runner used before load(); use it as a context manager")

    # ------------------------------------------------------------------ inference
    def infer(self, feed: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model on ``feed`` (input name → array); returns output name → array. ``outputs``: only these
        (an engine that can skips fetching and copying the others); None: every output."""
        self._require_loaded()
        self.check_feed(feed)
        if outputs is None:
            return self._infer_impl(feed)
        return self._infer_outputs(feed, self.check_outputs(outputs))

    def check_outputs(self, names: Sequence[str]) -> list[str]:
        """``names`` as a list, each one an output of the model (else one line naming the outputs)."""
        have = [s.name for s in self._output_spec]
        unknown = [n for n in names if n not in have]
        if unknown or not names:
            raise InputError(f"expected outputs among {have}, found {list(names)}")
        return list(names)

    def _infer_outputs(self, feed: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        """Inference on a checked feed, returning only ``names``; engines that can fetch a subset override it."""
        out = self._infer_impl(feed)
        return {n: out[n] for n in names}

    def check_feed(self, feed: dict[str, np.ndarray]) -> None:
        want = {s.name for s in self._input_spec}
        got = set(feed)
        if want != got:
            raise InputError(f"expected inputs {sorted(want)}, found {sorted(got)}")
        for spec in self._input_spec:
            arr = feed[spec.name]
            if not isinstance(arr, np.ndarray):
                raise InputError(f"input '{spec.name}': expected a numpy array, found {type(arr).__name__}")
            reason = spec.matches(arr)
            if reason:
                raise InputError(reason)

    @abc.abstractmethod
    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Backend-specific inference on a checked feed."""

    def async_queue(self, requests: int | None = None, outputs: Sequence[str] | None = None) -> AsyncInfer:
        """Up to ``requests`` inferences in flight through the engine's asynchronous API (None: the engine's
        own choice). The base class runs :meth:`infer` on worker threads (ONNX Runtime: ``Run`` on one
        session from several threads, which ORT documents as thread-safe); a runner that is not
        :attr:`concurrent_infer` gets one worker, so inference still overlaps the caller's other work.
        OpenVINO overrides this with its ``AsyncInferQueue``. ``outputs``: only these outputs (as :meth:`infer`)."""
        self._require_loaded()
        n = max(1, int(requests or 2))
        names = self.check_outputs(outputs) if outputs is not None else None
        return ThreadedAsyncInfer(self, n if self.concurrent_infer else 1, names)

    def describe(self) -> dict[str, Any]:
        """What the runner is running, for tables and JSON."""
        return {
            "backend": self.name,
            "precision": self.precision,
            "device": self.device,
            "threads": getattr(self, "threads", None),
            "load_time_s": round(self.load_time_s, 4),
        }


Done = Callable[[Any, "dict[str, np.ndarray] | None", "BaseException | None"], None]


class AsyncInfer(abc.ABC):
    """Several inferences in flight on one loaded runner.

    :meth:`submit` returns at once while fewer than :attr:`requests` are running (it blocks otherwise: the
    caller is throttled, never queues without bound) and later calls ``done(userdata, outputs, error)`` on an
    engine or worker thread, in completion order (not always submission order). :meth:`wait_all` returns once
    everything submitted has completed.
    """

    def __init__(self, runner: Runner, requests: int) -> None:
        self.runner = runner
        self.requests = int(requests)
        self.kind = "threads"
        self._pending = 0  # submitted, not completed (the done callback has returned)
        self._cv = threading.Condition()

    def _begin(self) -> None:
        with self._cv:
            self._pending += 1

    def _end(self) -> None:
        with self._cv:
            self._pending -= 1
            self._cv.notify_all()

    @property
    def in_flight(self) -> int:
        """Inferences submitted and not completed yet."""
        return self._pending

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Until a request is free (the next :meth:`submit` starts at once), or ``timeout`` seconds; True when one
        is. A caller that batches live frames waits here *before* it takes them, so frames never age in a batch
        that waits for the engine (fresher ones replace them in their capture buffers meanwhile)."""
        with self._cv:
            return self._cv.wait_for(lambda: self._pending < self.requests, timeout)

    @abc.abstractmethod
    def submit(self, feed: dict[str, np.ndarray], userdata: Any, done: Done) -> None: ...

    @abc.abstractmethod
    def wait_all(self) -> None: ...

    def close(self) -> None:
        self.wait_all()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "requests": self.requests}


class ThreadedAsyncInfer(AsyncInfer):
    """:class:`AsyncInfer` over ``runner.infer`` on ``requests`` worker threads."""

    def __init__(self, runner: Runner, requests: int, outputs: list[str] | None = None) -> None:
        super().__init__(runner, requests)
        self.outputs = outputs
        self.kind = "threads" if requests > 1 else "thread"
        self._slots = threading.BoundedSemaphore(self.requests)
        self._jobs: queue.Queue[tuple[dict[str, np.ndarray], Any, Done] | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, name=f"edgecv-infer-{i}", daemon=True) for i in range(self.requests)
        ]
        for t in self._threads:
            t.start()

    def submit(self, feed: dict[str, np.ndarray], userdata: Any, done: Done) -> None:
        self.runner.check_feed(feed)
        self._slots.acquire()
        self._begin()
        self._jobs.put((feed, userdata, done))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            feed, userdata, done = job
            try:
                try:
                    if self.outputs is None:
                        out = self.runner._infer_impl(feed)
                    else:
                        out = self.runner._infer_outputs(feed, self.outputs)
                except BaseException as exc:  # noqa: BLE001 - handed to the callback
                    done(userdata, None, exc)
                else:
                    done(userdata, out, None)
            finally:
                self._slots.release()
                self._end()

    def wait_all(self) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self._pending == 0)

    def close(self) -> None:
        self.wait_all()
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=5)


@dataclass
class BuildConfig:
    """What a :class:`Builder` should make.

    Attributes:
        precision: fp32, fp16, bf16 or int8.
        device: backend device string (``CPU``, ``GPU``, ``cuda:0`` …).
        batch_range: (min, opt, max) batch sizes for dynamic-shape profiles; None takes the bundle's.
        workspace_mb: TensorRT builder workspace limit (MiB); None takes the target's default (1 GiB on Jetson).
        emit_only: write the equivalent command line (trtexec) instead of building.
        options: typed backend-specific extras are fields here, never free-form dicts from users.
    """

    precision: Precision = "fp32"
    device: str = "CPU"
    batch_range: tuple[int, int, int] | None = None
    workspace_mb: int | None = None
    emit_only: bool = False
    timing_cache: Path | None = None
    keep_float: list[str] = field(default_factory=list)
    onnx_path: Path | None = None  # override the bundle's model.onnx (e.g. a QDQ model)
    strongly_typed: bool = False  # TensorRT: take precisions from the (QDQ) graph, not from builder flags
    target: str | None = None  # TensorRT: orin-nano, orin-nx, agx-orin, thor or x86 (edgecv.backends.tensorrt_plan)
    hardware_compat: str | None = None  # TensorRT: "ampere+" for an engine that runs on any Ampere+ discrete GPU
    version_compatible: bool = False  # TensorRT: a plan newer TensorRT versions can load


class Builder(abc.ABC):
    """Turns an ONNX model (``config.onnx_path``, default the bundle's ``model.onnx``; float or QDQ) into a
    backend artifact. Cheap to construct; works when called. A builder never quantizes: INT8 is
    :func:`edgecv.quant.quantize`, which calls the builder with the QDQ model it made."""

    name: ClassVar[str] = "builder"

    @abc.abstractmethod
    def build(self, bundle: Bundle, config: BuildConfig) -> Artifact:
        """Build, add the artifact to ``bundle`` (atomically, manifest updated) and return it."""


def check_onnx_file(path: str | Path) -> None:
    """Fail with one line when ``path`` is not a parseable ONNX model.

    OpenVINO tries every frontend it has on a file it cannot read, and the TensorFlow one prints C++ log lines
    to stderr before the error; parsing the protobuf first turns a corrupt file into one clear message.
    Skipped when the ``onnx`` package is not installed (a device may have only the engine).
    """
    p = Path(path)
    if p.suffix.lower() != ".onnx":
        return
    try:
        import onnx
    except ImportError:
        return
    try:
        onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        msg = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise BackendError(f"'{p}' is not a valid ONNX model ({type(exc).__name__}: {msg}); re-export it") from exc
