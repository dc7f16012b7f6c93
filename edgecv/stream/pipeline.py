"""The stream pipeline: capture → preprocess → infer → post-process → sinks, one thread per stage.

Stages are joined by bounded :class:`~edgecv.stream.buffer.FrameBuffer` queues, so preprocessing of frame N+1
overlaps inference of frame N (numpy, OpenCV and the engines release the GIL) and memory cannot grow. The
capture buffer applies the drop policy (``latest`` / ``oldest`` / ``wait``); the stage queues always block,
so with ``latest`` a slow model makes the capture buffer drop the stale frames, never the stages.

Faults: a network source that drops is reconnected with exponential backoff (``reconnect_max`` tries per
outage); corrupt / odd-sized frames are skipped and counted; :meth:`StreamPipeline.stop` (Ctrl-C, SIGTERM)
stops capture, drains the frames in flight and finalizes every sink.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv.errors import ConfigError, EdgecvError, SourceError
from edgecv.stream.buffer import FrameBuffer
from edgecv.stream.metrics import Metrics, RateMeter
from edgecv.stream.sinkbase import Sink
from edgecv.stream.sources import Source, SourceSpec

if TYPE_CHECKING:
    from edgecv.backends.base import Runner
    from edgecv.bundle import Contract
    from edgecv.tasks.decode import Decoder

log = logging.getLogger("edgecv.stream")


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, so a container's CPU set counts, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


SMALL_MACHINE_CPUS = 4


def stream_engine_threads(cpus: int | None = None) -> int | None:
    """Engine CPU threads for a stream run when the user did not choose (None: the engine's own default).

    Capture is a stage of its own: decoding one 720p H.264/MPEG-4 frame costs ~2.4 ms of CPU. On a machine
    with few cores an engine that takes them all (OpenVINO and ONNX Runtime do) fights the decoder and both
    slow down, so there the engine gets ``cpus - 1`` threads and capture keeps a core. Above
    :data:`SMALL_MACHINE_CPUS` the engines' defaults already leave room (OpenVINO uses physical cores only).
    Measured on a 2-core VM (shapes_detector, 720p file, ``--drop wait``): 260 fps with 1 engine thread,
    212 fps with OpenVINO's default of 2.
    """
    n = usable_cpus() if cpus is None else cpus
    if n <= 1 or n > SMALL_MACHINE_CPUS:
        return None
    return n - 1


@dataclass
class StreamConfig:
    """How frames flow. ``drop=None`` picks ``latest`` for live sources and ``wait`` for files and folders.

    Attributes:
        drop: capture-buffer policy: latest, oldest or wait.
        buffer_size: capture-buffer capacity (frames); None: 1 for ``latest`` (freshest frame, least
            latency), 2 otherwise.
        queue_size: capacity of each queue between stages; None: same rule (1 keeps the overlap of
            preprocess and inference without queueing stale frames).
        stride: process every N-th source frame.
        max_fps: at most this many frames per second enter the pipeline (live sources skip the rest, files
            are paced).
        max_frames: stop after this many frames entered the pipeline.
        open_timeout: seconds to wait for the source to open (and per reconnect attempt).
        reconnect_max: reconnect attempts per outage of a network source before giving up.
        reconnect_backoff: first backoff in seconds; doubles per attempt up to ``reconnect_backoff_max``.
        loop: restart a file source at its end (soak runs).
        draw: annotate frames for sinks that take images.
    """

    drop: str | None = None
    buffer_size: int | None = None
    queue_size: int | None = None
    stride: int = 1
    max_fps: float | None = None
    max_frames: int | None = None
    open_timeout: float = 10.0
    reconnect_max: int = 10
    reconnect_backoff: float = 0.5
    reconnect_backoff_max: float = 8.0
    loop: bool = False
    draw: bool = True

    def validate(self) -> None:
        if self.stride < 1:
            raise ConfigError(f"--stride: expected an integer >= 1, found {self.stride}")
        if self.max_fps is not None and self.max_fps <= 0:
            raise ConfigError(f"--max-fps: expected a positive number, found {self.max_fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames: expected an integer >= 1, found {self.max_frames}")
        if self.open_timeout <= 0:
            raise ConfigError(f"--open-timeout: expected seconds > 0, found {self.open_timeout}")
        for name, v in (("--buffer", self.buffer_size), ("queue size", self.queue_size)):
            if v is not None and v < 1:
                raise ConfigError(f"{name}: expected an integer >= 1, found {v}")
        if self.reconnect_max < 0:
            raise ConfigError(f"--reconnect-max: expected an integer >= 0, found {self.reconnect_max}")


@dataclass
class Frame:
    """One frame travelling through the stages, with its timings (perf_counter seconds)."""

    index: int  # position in the source (0-based, before stride)
    image: np.ndarray
    t_capture: float
    wall_time: float
    t_read_ms: float = 0.0
    t_enqueued: float = 0.0
    t_picked: float = 0.0  # taken from the capture buffer by a multi-stream batcher
    picked: int = -1  # its place among its stream's frames the multi-stream batcher took (their output order)
    tensor: np.ndarray | None = None
    extra: dict[str, np.ndarray] | None = None  # inputs beside the image (R-CNN rois), made in the pre stage
    transform: Any = None
    outputs: dict[str, np.ndarray] | None = None
    results: list[Any] = field(default_factory=list)
    lat_ms: dict[str, float] = field(default_factory=dict)
    name: str | None = None  # the image file it was read from (image folders and globs), for events and sinks


def finish_frame(
    fr: Frame,
    results: list[Any],
    sinks: list[Sink],
    metrics: Metrics,
    *,
    t_start: float,
    head: dict[str, Any],
    draw: bool,
    fps: float,
    dropped: int,
    label: str = "",
    extra_post_ms: float = 0.0,
) -> bool:
    """The post stage after decoding, for one frame of any pipeline: draw ``results`` (and the frame rate) on the
    frame when a sink takes images, time it, build the frame's event (``head``, then ``file`` for a frame read from
    an image file, ``results`` and ``latency_ms``), write it to every sink and record the frame's metrics.

    Returns:
        True when a sink asks the run to stop (a window closed with q / Esc).
    """
    from edgecv.tasks.draw import draw_fps, draw_result

    fr.results = results
    canvas = None
    if draw:
        canvas = fr.image  # the frame is ours alone by now: draw in place
        for r in results:
            draw_result(canvas, r)
        draw_fps(canvas, fps, label)
    t_post = time.perf_counter()
    fr.lat_ms["post"] = (t_post - t_start) * 1e3 + extra_post_ms
    fr.lat_ms["read"] = fr.t_read_ms
    fr.lat_ms["e2e"] = (t_post - fr.t_capture) * 1e3
    event = dict(head)
    if fr.name is not None:
        event["file"] = fr.name
    event["results"] = [r.to_json() for r in results]
    event["latency_ms"] = {k: round(v, 3) for k, v in fr.lat_ms.items()}
    stop = False
    for s in sinks:
        if s.needs_results:
            s.write_results(canvas if s.needs_frame else None, event, results)
        else:
            s.write(canvas if s.needs_frame else None, event)
        stop = stop or bool(getattr(s, "stop_requested", False))
    fr.lat_ms["sink"] = (time.perf_counter() - t_post) * 1e3
    for k, v in fr.lat_ms.items():
        metrics.add_latency(k, v)
    metrics.out_rate.tick()
    metrics.count("frames_out")
    metrics.timeline.frame(time.perf_counter() - metrics.t_start, fr.lat_ms, dropped, metrics.reconnects)
    fr.image = None  # type: ignore[assignment]
    return stop


def record_failure(run: Any, stage: str, exc: BaseException) -> None:
    """The first failure of a run (``run.error``, ``run.stopped_by``) under its lock, then the run stops; ``run()``
    raises it (the CLI prints one line), the debug log is for library users who watch it live."""
    with run._err_lock:
        if run.error is None:
            run.error = exc
            run.stopped_by = f"error in {stage}"
            log.debug("%s failed: %s", stage, exc)
    run._stop.set()


def install_stop_signals(stop: Callable[[str], None], stopping: threading.Event) -> dict[int, Any]:
    """SIGINT / SIGTERM call ``stop`` (a second Ctrl-C while ``stopping`` aborts); only from the main thread.
    Returns the previous handlers for :func:`restore_signals`."""
    old: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return old

    def handler(signum: int, _frame: Any) -> None:
        if stopping.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop(f"signal {signal.Signals(signum).name}")

    for signum in (signal.SIGINT, signal.SIGTERM):
        old[signum] = signal.signal(signum, handler)
    return old


def restore_signals(old: dict[int, Any]) -> None:
    for signum, h in old.items():
        signal.signal(signum, h)


def watch(threads: list[threading.Thread], on_status: Callable[[], None] | None) -> None:
    """Wait for the stage threads (the last one is the sinks' stage), calling ``on_status`` about twice a second."""
    last_status = 0.0
    while any(t.is_alive() for t in threads):
        threads[-1].join(timeout=0.1)
        if not threads[-1].is_alive():
            time.sleep(0.05)
        now = time.perf_counter()
        if on_status is not None and now - last_status >= 0.5:
            last_status = now
            on_status()


def close_sinks(sinks: list[Sink], error: BaseException | None) -> BaseException | None:
    """Finalize every sink however the run ended; the run's error, else the first failure to close one."""
    for s in sinks:
        try:
            s.close()
        except Exception as exc:  # noqa: BLE001 - finalize the others, report this one
            if error is None:
                error = exc  # raised by the run: one line, not two
            elif exc is not error:
                log.error("closing %s failed: %s", type(s).__name__, exc)
    return error


def raise_error(error: BaseException | None) -> None:
    """A run's recorded failure as the one-line error the CLI prints."""
    if error is None:
        return
    if isinstance(error, EdgecvError):
        raise error
    raise SourceError(f"stream stopped by {type(error).__name__}: {error}") from error


class StreamPipeline:
    """Runs a :class:`Runner` over a :class:`Source` into sinks. Build it, then call :meth:`run`.

    Args:
        source: an unopened source (``open_source(parse_source(...))``).
        runner: a loaded runner (use it as a context manager around :meth:`run`).
        contract: the bundle contract (preprocessing and decoding).
        sinks: where processed frames go.
        config: flow settings.
        decoder: overrides the contract's decoder (tests).
        on_status: called about twice a second with the live status line.
        outputs: the model outputs to fetch (None: all); the decoder's own, so validation-only outputs are not
            copied out of the engine on every frame.
    """

    def __init__(
        self,
        source: Source,
        runner: Runner,
        contract: Contract,
        sinks: list[Sink] | None = None,
        config: StreamConfig | None = None,
        decoder: Decoder | None = None,
        on_status: Callable[[str], None] | None = None,
        outputs: list[str] | None = None,
    ) -> None:
        from edgecv.tasks.decode import get_decoder

        self.outputs = outputs
        self.source = source
        self.runner = runner
        self.contract = contract
        self.sinks = list(sinks or [])
        self.cfg = config or StreamConfig()
        self.cfg.validate()
        self.policy = self.cfg.drop or ("latest" if source.spec.live else "wait")
        self.decoder = decoder if decoder is not None else get_decoder(contract)
        self.on_status = on_status
        self.metrics = Metrics()
        auto = 1 if self.policy == "latest" else 2
        self.capture_buf: FrameBuffer[Frame] = FrameBuffer(self.cfg.buffer_size or auto, self.policy, "capture")
        self.pre_q: FrameBuffer[Frame] = FrameBuffer(self.cfg.queue_size or auto, "wait", "preprocessed")
        self.inf_q: FrameBuffer[Frame] = FrameBuffer(self.cfg.queue_size or auto, "wait", "inferred")
        self._stop = threading.Event()
        self.stopped_by = "end of stream"
        self.error: BaseException | None = None
        self._err_lock = threading.Lock()
        self._fps_meter = RateMeter(window_s=2.0)
        self.last_summary: dict[str, Any] | None = None
        self._draw = self.cfg.draw and any(s.needs_frame for s in self.sinks)
        #: called with every frame in the capture thread before it enters the capture buffer (the multi-stream
        #: run preprocesses there: one thread per stream, off the shared batcher's path)
        self.prepare: Callable[[Frame], None] | None = None

    # ------------------------------------------------------------------ control
    def stop(self, reason: str = "stopped") -> None:
        """Ask the run to end: capture stops, frames in flight are finished, sinks are finalized."""
        if not self._stop.is_set():
            self.stopped_by = reason
            log.info("stopping: %s", reason)
        self._stop.set()

    def _fail(self, stage: str, exc: BaseException) -> None:
        record_failure(self, stage, exc)
        for b in (self.capture_buf, self.pre_q, self.inf_q):
            b.abort()

    # ------------------------------------------------------------------ capture
    def _reconnect(self) -> bool:
        delay = self.cfg.reconnect_backoff
        for attempt in range(1, self.cfg.reconnect_max + 1):
            if self._stop.wait(delay):
                return False
            self.metrics.count("reconnect_attempts")
            log.warning(
                "source %s dropped; reconnect attempt %d/%d",
                self.source.spec.describe(),
                attempt,
                self.cfg.reconnect_max,
            )
            try:
                self.source.open(self.cfg.open_timeout)
            except SourceError as exc:
                log.warning("reconnect attempt %d failed: %s", attempt, exc)
                delay = min(delay * 2, self.cfg.reconnect_backoff_max)
                continue
            self.metrics.count("reconnects")
            log.warning("source %s reconnected after %d attempt(s)", self.source.spec.describe(), attempt)
            return True
        return False

    def _capture(self) -> None:
        spec: SourceSpec = self.source.spec
        idx = -1
        period = 1.0 / self.cfg.max_fps if self.cfg.max_fps else 0.0
        next_due = 0.0
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                status, img = self.source.read()
                t1 = time.perf_counter()
                if status == "end":
                    if spec.network or (spec.live and self.cfg.reconnect_max > 0):
                        if self._reconnect():
                            continue
                        if not self._stop.is_set():
                            raise SourceError(
                                f"source {spec.describe()} dropped and did not come back after "
                                f"{self.cfg.reconnect_max} reconnect attempt(s)"
                            )
                        break
                    if self.cfg.loop and spec.files:
                        self.source.open(self.cfg.open_timeout)
                        continue
                    self.stop("end of stream")
                    break
                idx += 1
                if status == "corrupt" or img is None:
                    self.metrics.count("skipped_corrupt")
                    continue
                self.metrics.count("frames_read")
                self.metrics.in_rate.tick(t1)
                if idx % self.cfg.stride:
                    self.metrics.count("skipped_stride")
                    continue
                if period:
                    now = time.perf_counter()
                    if next_due and now < next_due:
                        if spec.live:  # a live source cannot be slowed: skip the early frames
                            self.metrics.count("skipped_rate")
                            continue
                        self._stop.wait(next_due - now)  # a file can: pace it
                        now = time.perf_counter()
                    # keep the average rate, but do not burst to catch up after a stall
                    next_due = next_due + period if next_due and now - next_due < period else now + period
                fr = Frame(
                    index=idx,
                    image=img,
                    t_capture=t1,
                    wall_time=time.time(),
                    t_read_ms=(t1 - t0) * 1e3,
                    name=self.source.frame_name,
                )
                if self.prepare is not None:
                    self.prepare(fr)
                fr.t_enqueued = time.perf_counter()
                self.capture_buf.put(fr)
                self.metrics.count("frames_in")
                if self.cfg.max_frames and self.metrics.frames_in >= self.cfg.max_frames:
                    self.stop("max frames")
                    break
        except EdgecvError as exc:
            self._fail("capture", exc)
        except Exception as exc:  # noqa: BLE001 - any capture failure ends the run with a message
            self._fail("capture", exc)
        finally:
            self.capture_buf.close()

    # ------------------------------------------------------------------ stages
    def _preprocess(self, fr: Frame) -> None:
        from edgecv.tasks.preprocess import preprocess

        t = time.perf_counter()
        fr.lat_ms["queue"] = (t - fr.t_enqueued) * 1e3
        fr.tensor, fr.transform = preprocess(fr.image, self.contract)
        if self.contract.decode.get("proposals"):
            # R-CNN / Fast R-CNN: selective search on the host per frame, counted in the preprocess stage
            from edgecv.tasks.decode import extra_inputs

            fr.extra = extra_inputs(self.contract, fr.tensor)
        fr.lat_ms["preprocess"] = (time.perf_counter() - t) * 1e3

    def _infer(self, fr: Frame) -> None:
        t = time.perf_counter()
        assert fr.tensor is not None  # set by _preprocess, which always runs first
        feed = {self.contract.input_name: fr.tensor, **(fr.extra or {})}
        fr.outputs = self.runner.infer(feed) if self.outputs is None else self.runner.infer(feed, self.outputs)
        fr.tensor = fr.extra = None  # release the inputs early
        fr.lat_ms["infer"] = (time.perf_counter() - t) * 1e3

    def _post(self, fr: Frame) -> None:
        t = time.perf_counter()
        results = self.decoder.decode(fr.outputs or {}, [fr.transform])
        fr.outputs = None
        head = {"ts": round(fr.wall_time, 6), "frame": fr.index, "seq": self.metrics.frames_out}
        stop = finish_frame(
            fr,
            results,
            self.sinks,
            self.metrics,
            t_start=t,
            head=head,
            draw=self._draw,
            fps=self._fps_meter.rate(),
            dropped=self.capture_buf.dropped,
        )
        self._fps_meter.tick()
        if stop:
            self.stop("window closed")

    def _worker(
        self, name: str, src: FrameBuffer[Frame], dst: FrameBuffer[Frame] | None, fn: Callable[[Frame], None]
    ) -> None:
        try:
            while True:
                fr = src.get()
                if fr is None:
                    break
                fn(fr)
                if dst is not None:
                    dst.put(fr)
        except BaseException as exc:  # noqa: BLE001 - recorded and re-raised by run()
            self._fail(name, exc)
        finally:
            if dst is not None:
                dst.close()

    # ------------------------------------------------------------------ run
    def run(self, install_signals: bool = True) -> dict[str, Any]:
        """Open the source, run until the end (or :meth:`stop`), finalize sinks; returns the summary.

        SIGINT / SIGTERM stop the run cleanly when called from the main thread (a second Ctrl-C aborts).

        Raises:
            SourceError: the source did not open within ``open_timeout``, or dropped for good.
            EdgecvError: a stage failed (the sinks are finalized first).
        """
        old_handlers = install_stop_signals(self.stop, self._stop) if install_signals else {}
        threads: list[threading.Thread] = []
        try:
            self.source.open(self.cfg.open_timeout)
            for s in self.sinks:
                hook = getattr(s, "on_source_open", None)
                if hook is not None:
                    hook(self.source, self.cfg)
            self.metrics = Metrics()
            threads = [
                threading.Thread(target=self._capture, name="edgecv-capture", daemon=True),
                threading.Thread(
                    target=self._worker,
                    args=("preprocess", self.capture_buf, self.pre_q, self._preprocess),
                    name="edgecv-pre",
                    daemon=True,
                ),
                threading.Thread(
                    target=self._worker,
                    args=("infer", self.pre_q, self.inf_q, self._infer),
                    name="edgecv-infer",
                    daemon=True,
                ),
                threading.Thread(
                    target=self._worker, args=("post", self.inf_q, None, self._post), name="edgecv-post", daemon=True
                ),
            ]
            for t in threads:
                t.start()
            watch(threads, self._report_status if self.on_status else None)
        except KeyboardInterrupt:
            self._fail("run", KeyboardInterrupt("interrupted twice"))
            raise
        finally:
            self._stop.set()
            for t in threads:
                t.join(timeout=self.cfg.open_timeout + 5)
            self.metrics.t_end = time.perf_counter()
            self.error = close_sinks(self.sinks, self.error)
            self.source.close()
            restore_signals(old_handlers)
        summary = self.last_summary = self.summary()
        raise_error(self.error)
        return summary

    def _report_status(self) -> None:
        if self.on_status is not None:
            self.on_status(self.status_line())

    def status_line(self) -> str:
        return self.metrics.status_line(self.capture_buf.dropped)

    def summary(self) -> dict[str, Any]:
        s = self.metrics.summary()
        s["dropped"] = self.capture_buf.dropped
        s["policy"] = self.policy
        s["stopped_by"] = self.stopped_by
        s["source"] = self.source.describe()
        s["runner"] = self.runner.describe()
        s["queues"] = {b.name: b.stats() for b in (self.capture_buf, self.pre_q, self.inf_q)}
        s["sinks"] = {type(x).__name__: x.describe() for x in self.sinks}
        return s
