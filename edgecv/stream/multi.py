"""Many streams, one engine: per-stream capture → cross-stream batching → asynchronous inference → post → sinks.

The shape of DeepStream's ``nvstreammux`` + one ``nvinfer`` and DL Streamer's shared ``model-instance-id``:

- every stream keeps its own capture thread, bounded capture buffer with its drop policy, reconnect with backoff
  and :class:`~edgecv.stream.metrics.Metrics` (each stream *is* a :class:`StreamPipeline` whose capture stage
  runs here; its other stages are replaced by the shared ones below);
- each capture thread also preprocesses its frames (the streams resize in parallel, off the shared path);
- one batcher waits for a free inference request *before* it takes frames (so frames never age in a batch
  blocked on the engine; meanwhile fresher frames replace them in ``latest`` buffers), then takes frames from
  every stream's buffer, round robin (never blocking on one stream; one frame per ``latest`` stream), until the
  batch holds the engine's largest batch, every live stream is in, or the batch wait has passed since its first
  frame (``batch_wait_ms``, at most half the engine's recent batch time), and submits the batch to the runner's
  :meth:`~edgecv.backends.base.Runner.async_queue` (OpenVINO's ``AsyncInferQueue`` with the throughput hint;
  worker threads on one ONNX Runtime session, one thread per request), which keeps several batches in flight
  (when all are busy the capture buffers apply their drop policy, per stream);
- one post thread decodes completed batches as they complete and writes each stream's frames in that stream's
  order (a frame waits only for an earlier frame of its own stream, never for another stream's batch), draws,
  and writes each frame's event, which carries its ``stream`` name, to that stream's sinks and
  to the shared ones (merged JSON lines, MQTT, the live page).

A stream that does not open, stalls or drops for good ends alone (one line naming it); the run goes on while
any stream runs. An engine or sink failure stops the run (the engine is shared).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv.errors import ConfigError, SourceError
from edgecv.stream.metrics import Metrics, Reservoir
from edgecv.stream.pipeline import (
    Frame,
    StreamConfig,
    StreamPipeline,
    close_sinks,
    finish_frame,
    install_stop_signals,
    raise_error,
    record_failure,
    restore_signals,
    usable_cpus,
    watch,
)
from edgecv.stream.sinkbase import Sink
from edgecv.stream.sources import Source
from edgecv.tasks.decode import make_feed

if TYPE_CHECKING:
    from edgecv.backends.base import AsyncInfer, Runner
    from edgecv.bundle import Contract
    from edgecv.tasks.decode import Decoder

log = logging.getLogger("edgecv.stream")

#: per-frame stages of the multi-stream run beside :data:`~edgecv.stream.metrics.STAGES` (milliseconds):
#: ``batch`` from being taken out of the capture buffer to the batch's submission (the batch wait), ``wait_post``
#: from the batch's inference result to the frame's own post (the batches before it and the frames before it in
#: its batch)
MULTI_STAGES = ("batch", "wait_post")


@dataclass
class MultiConfig:
    """How the streams share the engine.

    Attributes:
        batch_wait_ms: the longest a batch waits for more frames after its first one (0: take what is there).
        max_batch: most frames per batch; None: the engine's largest (the bundle's batch range, or its fixed batch).
        requests: batches in flight at once; None: the engine's choice (OpenVINO's optimal number, else 2).
        require_all: every source must open at start, else the run exits before anything runs.
    """

    batch_wait_ms: float = 5.0
    max_batch: int | None = None
    requests: int | None = None
    require_all: bool = False

    def validate(self) -> None:
        if self.batch_wait_ms < 0:
            raise ConfigError(f"--batch-wait-ms: expected a number >= 0, found {self.batch_wait_ms:g}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(f"--max-batch: expected an integer >= 1, found {self.max_batch}")
        if self.requests is not None and self.requests < 1:
            raise ConfigError(f"--requests: expected an integer >= 1, found {self.requests}")


@dataclass
class StreamInput:
    """One stream handed to :class:`MultiStreamPipeline`: its name, unopened source, flow settings and own sinks."""

    name: str
    source: Source
    config: StreamConfig = field(default_factory=StreamConfig)
    sinks: list[Sink] = field(default_factory=list)


class _Stream:
    """A stream's own state: a :class:`StreamPipeline` used for its capture stage, buffer and metrics."""

    def __init__(self, inp: StreamInput, runner: Runner, contract: Contract, decoder: Decoder) -> None:
        self.name = inp.name
        self.pipe = StreamPipeline(inp.source, runner, contract, inp.sinks, inp.config, decoder=decoder)
        self.sinks = inp.sinks
        self.open_error: str | None = None
        self.opened = False
        self.state = "opening"
        self.out_seq = 0
        self.picked = 0  # frames the batcher took (their order is the stream's output order)
        self.next_out = 0  # the next of them the post stage writes
        #: inferred frames waiting for an earlier frame of this stream (in a batch still running): pick → post args
        self.ready: dict[int, tuple[Any, ...]] = {}

    @property
    def metrics(self) -> Metrics:
        return self.pipe.metrics


class MultiStreamPipeline:
    """Runs one loaded :class:`Runner` over several streams with cross-stream batching. Build it, call :meth:`run`.

    Args:
        streams: the streams (unique names).
        runner: a loaded runner (use it as a context manager around :meth:`run`).
        contract: the bundle contract (preprocessing and decoding).
        sinks: shared sinks: every stream's events (and frames, to those that take them) go there too.
        config: batching and async settings.
        decoder: overrides the contract's decoder (tests).
        on_status: called about twice a second with the live status line.
        outputs: the model outputs to fetch (None: all), as for :class:`StreamPipeline`.
    """

    def __init__(
        self,
        streams: list[StreamInput],
        runner: Runner,
        contract: Contract,
        sinks: list[Sink] | None = None,
        config: MultiConfig | None = None,
        *,
        on_status: Callable[[str], None] | None = None,
        outputs: list[str] | None = None,
        decoder: Decoder | None = None,
    ) -> None:
        from edgecv.stream.cameras import check_unique
        from edgecv.tasks.decode import get_decoder

        if not streams:
            raise ConfigError("expected at least one stream, found none")
        check_unique([s.name for s in streams], "streams")
        self.cfg = config or MultiConfig()
        self.cfg.validate()
        self.outputs = outputs
        self.runner = runner
        self.contract = contract
        self.decoder = decoder if decoder is not None else get_decoder(contract)
        self.shared = list(sinks or [])
        self.on_status = on_status
        self.streams = [_Stream(s, runner, contract, self.decoder) for s in streams]
        self._by_name = {s.name: s for s in self.streams}
        self._avail = threading.Condition()
        self._puts = 0
        for st in self.streams:
            st.pipe.capture_buf.on_change = self._signal
            st.pipe.prepare = self._prepare
        self._stop = threading.Event()
        self.stopped_by = "end of streams"
        self.error: BaseException | None = None
        self._err_lock = threading.Lock()
        self._done_q: queue.Queue[tuple[int, Any, dict[str, np.ndarray] | None, BaseException | None, float]] = (
            queue.Queue()
        )
        self._n_submitted = 0
        self._batcher_done = threading.Event()
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.infer_ms = Reservoir()
        self.wait_ms = Reservoir()
        self._infer_ewma_s = 0.0  # recent batch inference time (the batch wait is at most half of it)
        self.slot_wait_ms = Reservoir()  # the batcher waiting for a free request (the engine is saturated)
        self.async_q: AsyncInfer | None = None
        self.max_batch = 1
        self.fixed_batch: int | None = None
        self.t_start = time.perf_counter()
        self.t_end: float | None = None
        self.last_summary: dict[str, Any] | None = None
        self._draw = any(s.needs_frame for s in self.shared) or any(
            x.needs_frame for st in self.streams for x in st.sinks
        )
        for s in self.shared:
            hook = getattr(s, "attach", None)
            if hook is not None:
                hook(self)

    # ------------------------------------------------------------------ control
    def _signal(self) -> None:
        with self._avail:
            self._puts += 1
            self._avail.notify_all()

    def stop(self, reason: str = "stopped") -> None:
        """End the run: every capture stops, frames in flight are finished, sinks are finalized."""
        if not self._stop.is_set():
            self.stopped_by = reason
            log.info("stopping: %s", reason)
        self._stop.set()
        for st in self.streams:
            st.pipe.stop(reason)
        self._signal()

    def _fail(self, stage: str, exc: BaseException) -> None:
        record_failure(self, stage, exc)
        for st in self.streams:
            st.pipe.stop(f"error in {stage}")
            st.pipe.capture_buf.abort()
        self._signal()

    # ------------------------------------------------------------------ engine shape
    def _batch_shape(self) -> None:
        spec = self.runner.input_spec[0]
        dim0 = spec.shape[0] if spec.shape else None
        if isinstance(dim0, int):
            self.fixed_batch = dim0  # a static model: batches are padded to its batch
            hi = dim0
        else:
            br = list(getattr(self.contract, "batch_range", [1, 1, 1]))
            hi = max(1, int(br[2]))
        want = self.cfg.max_batch or hi
        if want > hi:
            raise ConfigError(f"--max-batch: expected at most the engine's largest batch {hi}, found {want}")
        self.max_batch = want

    # ------------------------------------------------------------------ per-stream capture
    def _open(self, st: _Stream) -> bool:
        try:
            st.pipe.source.open(st.pipe.cfg.open_timeout)
        except SourceError as exc:
            st.open_error = str(exc)
            st.state = "failed"
            return False
        st.opened = True
        for s in st.sinks:
            hook = getattr(s, "on_source_open", None)
            if hook is not None:
                hook(st.pipe.source, st.pipe.cfg)
        st.pipe.metrics = Metrics()
        return True

    def _stream_main(self, st: _Stream) -> None:
        if not st.opened and not self._open(st):
            log.warning("stream '%s' did not open and is left out: %s", st.name, st.open_error)
            st.pipe.stopped_by = "did not open"
            st.pipe.capture_buf.close()
            return
        st.state = "running"
        st.pipe._capture()  # the stream's own capture stage: drop policy, stride, max fps, reconnect
        if st.pipe.error is not None:
            st.state = "failed"
            log.warning("stream '%s' ended: %s", st.name, st.pipe.error)
        elif st.state != "failed":
            st.state = "ended"

    # ------------------------------------------------------------------ batcher
    def _all_done(self) -> bool:
        return all(st.pipe.capture_buf.done for st in self.streams)

    def _take(self, rr: int, room: int, batch: list[tuple[_Stream, Frame]]) -> list[tuple[_Stream, Frame]]:
        """At most one frame from each stream, starting at stream ``rr``, up to ``room`` frames; none from a
        ``latest``-policy stream that has a frame in ``batch`` or in flight already: its next frame would only wait
        for that one's result (each stream's results are written in order), so it waits in the capture buffer
        instead, where fresher frames replace it; a live batch stays as large as the streams, its inference short."""
        got: list[tuple[_Stream, Frame]] = []
        full = {id(st) for st, _ in batch if st.pipe.policy == "latest"}
        n = len(self.streams)
        for k in range(n):
            st = self.streams[(rr + k) % n]
            if id(st) in full or (st.pipe.policy == "latest" and st.picked > st.next_out):
                continue  # a latest stream keeps one frame in flight: the next waits (and freshens) in its buffer
            fr = st.pipe.capture_buf.get(timeout=0)
            if fr is not None:
                fr.t_picked = time.perf_counter()
                fr.picked = st.picked
                st.picked += 1
                got.append((st, fr))
                if len(got) >= room:
                    break
        return got

    def _every_live_stream_in(self, batch: list[tuple[_Stream, Frame]]) -> bool:
        """No stream still running can add a frame soon: each has one in ``batch`` and is a live source or keeps
        only its latest frame (its next frame is a frame period away, or goes to the next batch), or keeps its
        latest frame and has one in flight."""
        have = {id(st) for st, _ in batch}

        def settled(st: _Stream) -> bool:
            latest = st.pipe.policy == "latest"
            if id(st) in have:
                return latest or st.pipe.source.spec.live
            return latest and st.picked > st.next_out

        return all(settled(st) for st in self.streams if not st.pipe.capture_buf.done)

    def _batch_wait_s(self) -> float:
        """The batch wait: ``batch_wait_ms``, at most half the engine's recent batch inference time (waiting longer
        for more frames costs the frames already in the batch more than a second batch would)."""
        w = self.cfg.batch_wait_ms / 1e3
        return min(w, 0.5 * self._infer_ewma_s) if self._infer_ewma_s > 0 else w

    def _wait_put(self, seen: int, timeout: float) -> None:
        """Until a frame arrives in (or a stream closes) any buffer after the ``seen``-th signal, or ``timeout``."""
        with self._avail:
            self._avail.wait_for(lambda: self._puts != seen, timeout)

    def _prepare(self, fr: Frame) -> None:
        """Preprocess in the stream's capture thread: the streams' frames are resized in parallel (OpenCV and
        numpy release the GIL), and a batch is ready to submit as soon as its frames are taken."""
        from edgecv.tasks.preprocess import preprocess

        t = time.perf_counter()
        fr.tensor, fr.transform = preprocess(fr.image, self.contract)
        fr.lat_ms["preprocess"] = (time.perf_counter() - t) * 1e3

    def _batcher(self) -> None:
        assert self.async_q is not None
        rr = 0
        try:
            while True:
                # a free request first, then the frames: they start at once instead of ageing in a batch that
                # waits for the engine (meanwhile fresher frames replace them in the capture buffers)
                t_slot = time.perf_counter()
                while not self.async_q.wait_ready(0.25):
                    if self.error is not None:
                        break
                slot_ms = (time.perf_counter() - t_slot) * 1e3
                batch: list[tuple[_Stream, Frame]] = []
                t_first = 0.0
                wait_s = self._batch_wait_s()
                while len(batch) < self.max_batch:
                    with self._avail:
                        seen = self._puts
                    if batch and time.perf_counter() - t_first >= wait_s:
                        break  # checked before taking too: a batcher descheduled for long takes no more
                    got = self._take(rr, self.max_batch - len(batch), batch)
                    rr = (rr + 1) % len(self.streams)
                    if got and not batch:
                        t_first = time.perf_counter()
                    batch.extend(got)
                    if len(batch) >= self.max_batch or self._all_done():
                        break
                    if batch:
                        left = wait_s - (time.perf_counter() - t_first)
                        if left <= 0:
                            break
                        if got:
                            continue  # more may be queued already: take them before waiting
                        if self._every_live_stream_in(batch):
                            break  # each live stream's next frame is a frame period away: do not wait for it
                    else:
                        left = 0.25
                    self._wait_put(seen, left)
                if not batch:
                    if self._all_done():
                        break
                    continue
                self.slot_wait_ms.add(slot_ms)
                tensors, transforms = [], []
                for _st, fr in batch:
                    fr.lat_ms["queue"] = (fr.t_picked - fr.t_enqueued) * 1e3
                    if fr.tensor is None:  # a capture stage without the prepare hook
                        self._prepare(fr)
                    assert fr.tensor is not None
                    tensors.append(fr.tensor)
                    transforms.append(fr.transform)
                    fr.tensor = None  # the batch holds it now
                x = np.concatenate(tensors, axis=0)
                if self.fixed_batch is not None and x.shape[0] < self.fixed_batch:
                    pad = np.zeros((self.fixed_batch - x.shape[0], *x.shape[1:]), x.dtype)
                    x = np.concatenate([x, pad], axis=0)
                t_sub = time.perf_counter()
                self.wait_ms.add((t_sub - t_first) * 1e3)
                for _st, fr in batch:
                    fr.lat_ms["batch"] = (t_sub - fr.t_picked) * 1e3
                self.batch_sizes[len(batch)] += 1
                job: dict[str, Any] = {
                    "seq": self._n_submitted,
                    "batch": batch,
                    "transforms": transforms,
                    "t_submit": t_sub,
                }
                self._n_submitted += 1
                self.async_q.submit(make_feed(self.contract, x), job, self._on_done)
                job.setdefault("t_started", time.perf_counter())
        except BaseException as exc:  # noqa: BLE001 - recorded and re-raised by run()
            self._fail("batching", exc)
        finally:
            try:
                self.async_q.wait_all()
            finally:
                self._batcher_done.set()
                self._done_q.put((-1, None, None, None, 0.0))

    def _on_done(self, job: Any, outputs: dict[str, np.ndarray] | None, err: BaseException | None) -> None:
        t = time.perf_counter()
        job.setdefault("t_started", job["t_submit"])
        self._done_q.put((int(job["seq"]), job, outputs, err, t))

    # ------------------------------------------------------------------ post
    def _post(self) -> None:
        """Completed batches in completion order; each stream's frames are written in their own order (a frame
        waits only for an earlier frame of its stream still in flight, never for another stream's batch)."""
        try:
            while True:
                seq, job, outputs, err, t_done = self._done_q.get()
                if seq < 0:  # the batcher put it after every submitted batch completed
                    break
                if err is not None:
                    raise err
                if self.error is None:
                    self._post_batch(job, outputs or {}, t_done)
        except BaseException as exc:  # noqa: BLE001 - recorded and re-raised by run()
            self._fail("post", exc)

    def _post_batch(self, job: dict[str, Any], outputs: dict[str, np.ndarray], t_done: float) -> None:
        batch: list[tuple[_Stream, Frame]] = job["batch"]
        transforms = list(job["transforms"])
        n = len(batch)
        t_start = min(job.get("t_started", job["t_submit"]), t_done)
        infer = (t_done - t_start) * 1e3
        self.infer_ms.add(infer)
        self._infer_ewma_s = infer / 1e3 if not self._infer_ewma_s else 0.8 * self._infer_ewma_s + 0.2 * infer / 1e3
        if self.fixed_batch is not None and n < self.fixed_batch:
            transforms += [transforms[-1]] * (self.fixed_batch - n)
        t0 = time.perf_counter()
        results = self.decoder.decode(outputs, transforms)
        dec_ms = (time.perf_counter() - t0) * 1e3 / n
        touched: list[_Stream] = []
        for i, (st, fr) in enumerate(batch):
            fr.lat_ms["infer"] = infer
            st.ready[fr.picked] = (fr, results[i], n, dec_ms, t_done)
            touched.append(st)
        for st in dict.fromkeys(touched):
            while st.next_out in st.ready:
                self._write_frame(st, *st.ready.pop(st.next_out))
                st.next_out += 1
        if any(st.pipe.policy == "latest" for st in touched):
            self._signal()  # the batcher may take these streams' next frames now

    def _write_frame(self, st: _Stream, fr: Frame, result: Any, n: int, dec_ms: float, t_done: float) -> None:
        t = time.perf_counter()
        fr.lat_ms["wait_post"] = (t - t_done) * 1e3
        head = {
            "stream": st.name,
            "ts": round(fr.wall_time, 6),
            "ts_result": round(time.time(), 6),
            "frame": fr.index,
            "seq": st.out_seq,
            "batch": n,
        }
        st.out_seq += 1
        finish_frame(
            fr,
            [result],
            st.sinks + self.shared,
            st.metrics,
            t_start=t,
            head=head,
            draw=self._draw,
            fps=st.metrics.out_rate.rate(),
            dropped=st.pipe.capture_buf.dropped,
            label=st.name,
            extra_post_ms=dec_ms,
        )

    # ------------------------------------------------------------------ run
    def run(self, install_signals: bool = True) -> dict[str, Any]:
        """Open the streams, run until every stream ended (or :meth:`stop`), finalize sinks; returns the summary.

        Raises:
            SourceError: with ``require_all``, a source did not open (nothing ran); or no stream opened at all.
            EdgecvError: the engine, the post stage or a sink failed (sinks are finalized first).
        """
        self._batch_shape()
        old_handlers = install_stop_signals(self.stop, self._stop) if install_signals else {}
        threads: list[threading.Thread] = []
        try:
            if self.cfg.require_all:
                with ThreadPoolExecutor(max_workers=len(self.streams)) as ex:
                    oks = list(ex.map(self._open, self.streams))
                if not all(oks):
                    bad = next(st for st, ok in zip(self.streams, oks) if not ok)
                    raise SourceError(f"--require-all: stream '{bad.name}' did not open: {bad.open_error}")
            for s in self.shared:  # shared sinks (a merged JSON lines file) open once the run goes ahead
                hook = getattr(s, "on_source_open", None)
                if hook is not None:
                    hook(self.streams[0].pipe.source, self.streams[0].pipe.cfg)
            self.async_q = (
                self.runner.async_queue(self.cfg.requests)
                if self.outputs is None
                else self.runner.async_queue(self.cfg.requests, self.outputs)
            )
            self.t_start = time.perf_counter()
            caps = [
                threading.Thread(target=self._stream_main, args=(st,), name=f"edgecv-capture-{st.name}", daemon=True)
                for st in self.streams
            ]
            threads = [
                *caps,
                threading.Thread(target=self._batcher, name="edgecv-batcher", daemon=True),
                threading.Thread(target=self._post, name="edgecv-post", daemon=True),
            ]
            for t in threads:
                t.start()
            watch(threads[-1:], self._report_status if self.on_status else None)
        except KeyboardInterrupt:
            self._fail("run", KeyboardInterrupt("interrupted twice"))
            raise
        finally:
            self._stop.set()
            for st in self.streams:
                st.pipe.stop(self.stopped_by)
            self._signal()
            max_open = max(st.pipe.cfg.open_timeout for st in self.streams)
            for t in threads:
                t.join(timeout=max_open + 5)
            if self.async_q is not None:
                self.async_q.close()
            self.t_end = time.perf_counter()
            self.error = close_sinks([s for st in self.streams for s in st.sinks] + self.shared, self.error)
            for st in self.streams:
                st.pipe.metrics.t_end = self.t_end
                st.pipe.source.close()
            restore_signals(old_handlers)
        summary = self.last_summary = self.summary()
        raise_error(self.error)
        if not any(st.opened for st in self.streams):
            raise SourceError("no stream opened: " + "; ".join(f"'{st.name}': {st.open_error}" for st in self.streams))
        return summary

    # ------------------------------------------------------------------ reporting
    def live(self) -> dict[str, Any]:
        """The numbers the live page and status line show: per stream and in total, over the last seconds."""
        streams: dict[str, dict[str, Any]] = {}
        for st in self.streams:
            m = st.metrics
            with m._lock:  # the post thread adds samples under it
                e2e = m.lat["e2e"].summary(recent=True)
            streams[st.name] = {
                "state": st.state,
                "fps_in": round(m.in_rate.rate(), 2),
                "fps_out": round(m.out_rate.rate(), 2),
                "p50_ms": e2e.get("p50"),
                "p99_ms": e2e.get("p99"),
                "frames": m.frames_out,
                "dropped": st.pipe.capture_buf.dropped,
                "reconnects": m.reconnects,
                "error": st.open_error or (str(st.pipe.error) if st.pipe.error else None),
            }
        inf = self.infer_ms.summary(recent=True)
        return {
            "t": round(time.perf_counter() - self.t_start, 3),
            "streams": streams,
            "total": {
                "fps_in": round(sum(s["fps_in"] for s in streams.values()), 2),
                "fps_out": round(sum(s["fps_out"] for s in streams.values()), 2),
                "frames": sum(s["frames"] for s in streams.values()),
                "dropped": sum(s["dropped"] for s in streams.values()),
                "reconnects": sum(s["reconnects"] for s in streams.values()),
                "infer_p50_ms": inf.get("p50"),
                "infer_p99_ms": inf.get("p99"),
            },
        }

    def _report_status(self) -> None:
        if self.on_status is not None:
            self.on_status(self.status_line())

    def status_line(self) -> str:
        lv = self.live()
        t = lv["total"]
        per = " | ".join(
            f"{n} {s['fps_out']:.1f}" + (f" ({s['state']})" if s["state"] != "running" else "")
            for n, s in lv["streams"].items()
        )
        return (
            f"{len(self.streams)} streams: out {t['fps_out']:5.1f} fps | processed {t['frames']} | dropped "
            f"{t['dropped']} | reconnects {t['reconnects']} | {per}"
        )

    def _stream_summary(self, st: _Stream) -> dict[str, Any]:
        s = st.metrics.summary()
        s["duration_s"] = round((self.t_end or time.perf_counter()) - self.t_start, 3)
        el = max(s["duration_s"], 1e-9)
        s["fps_in"] = round(s["frames_read"] / el, 3)
        s["fps_out"] = round(s["frames_processed"] / el, 3)
        s["dropped"] = st.pipe.capture_buf.dropped
        s["policy"] = st.pipe.policy
        s["state"] = st.state
        s["stopped_by"] = "did not open" if st.open_error else st.pipe.stopped_by
        s["error"] = st.open_error or (str(st.pipe.error) if st.pipe.error else None)
        s["source"] = st.pipe.source.describe()
        s["queues"] = {"capture": st.pipe.capture_buf.stats()}
        s["sinks"] = {type(x).__name__: x.describe() for x in st.sinks}
        return s

    def summary(self) -> dict[str, Any]:
        per = {st.name: self._stream_summary(st) for st in self.streams}
        dur = round((self.t_end or time.perf_counter()) - self.t_start, 3)
        el = max(dur, 1e-9)
        frames = sum(s["frames_processed"] for s in per.values())
        read = sum(s["frames_read"] for s in per.values())
        nb = sum(self.batch_sizes.values())
        mean_batch = (sum(k * v for k, v in self.batch_sizes.items()) / nb) if nb else 0.0
        total = {
            "streams": len(per),
            "duration_s": dur,
            "frames_read": read,
            "frames_processed": frames,
            "fps_in": round(read / el, 3),
            "fps_out": round(frames / el, 3),
            "dropped": sum(s["dropped"] for s in per.values()),
            "reconnects": sum(s["reconnects"] for s in per.values()),
            "latency_ms": {
                "e2e": _merge([st.metrics.lat["e2e"] for st in self.streams]),
                "infer_batch": self.infer_ms.summary(),
                "batch_wait": self.wait_ms.summary(),
                "request_wait": self.slot_wait_ms.summary(),
                **{k: _merge([st.metrics.lat[k] for st in self.streams if k in st.metrics.lat]) for k in MULTI_STAGES},
            },
            "slowest_stage": self.slowest_stage(mean_batch),
        }
        engine = {
            "runner": self.runner.describe(),
            "async": self.async_q.describe() if self.async_q is not None else None,
            "max_batch": self.max_batch,
            "fixed_batch": self.fixed_batch,
            "batch_wait_ms": self.cfg.batch_wait_ms,
            "batches": nb,
            "mean_batch": round(mean_batch, 3),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }
        from edgecv.stream.metrics import STAGES

        return {
            "mode": "multi",
            "streams": per,
            "total": total,
            "engine": engine,
            # the single-stream summary's keys, over all streams: readers of "run" results (the report) keep working
            "frames_read": read,
            "frames_processed": frames,
            "duration_s": dur,
            "fps_in": total["fps_in"],
            "fps_out": total["fps_out"],
            "dropped": total["dropped"],
            "reconnects": total["reconnects"],
            "skipped_corrupt": sum(s["skipped_corrupt"] for s in per.values()),
            "source": {"kind": "multi", "target": f"{len(per)} streams ({', '.join(per)})"},
            "latency_ms": {k: _merge([st.metrics.lat[k] for st in self.streams]) for k in STAGES},
            "runner": engine["runner"],
            "stopped_by": self.stopped_by,
            "failed": [n for n, s in per.items() if s["error"]],
            "sinks": {type(x).__name__: x.describe() for x in self.shared},
        }

    def slowest_stage(self, mean_batch: float) -> dict[str, Any] | None:
        """The process-wide stage that bounds the total frame rate, from each stage's median cost per frame.

        Capture runs one thread per stream (at most as many at once as there are CPUs); it is named ``decode``
        when every source is a file or folder (read as fast as it decodes) and ``capture`` when any is live
        (its read time includes waiting for the source's next frame, so it names the sources' own rate, not the
        decoder, as the bound); preprocess runs in the
        capture threads (as many at once as there are CPUs) and post in one thread for all streams; inference costs its batch time over the mean
        batch. ``max_fps`` is what each stage allows on its own; the smallest names the bound (``decode`` when
        the CPUs cannot decode the streams faster than the model infers them).
        """

        def p50(stage: str) -> float | None:
            vals = [float(st.metrics.lat[stage].summary()["p50"]) for st in self.streams if st.metrics.lat[stage].count]
            return sum(vals) / len(vals) if vals else None

        live = [st for st in self.streams if st.metrics.frames_out]
        cpus = usable_cpus()
        fps: dict[str, float] = {}
        ms: dict[str, float] = {}
        read = p50("read")
        # a file is read as fast as it decodes; a live source's read also waits for the camera's next frame
        cap = "capture" if any(st.pipe.source.spec.live for st in self.streams) else "decode"
        if read:
            ms[cap] = read
            # decoders share the CPUs; live captures mostly wait for their camera, each at its own rate
            fps[cap] = 1000.0 / read * max(1, min(len(live) or 1, cpus) if cap == "decode" else len(live) or 1)
        pre = p50("preprocess")
        if pre:  # in each stream's capture thread: the streams preprocess in parallel, as they decode
            ms["preprocess"] = pre
            fps["preprocess"] = 1000.0 / pre * max(1, min(len(live) or 1, cpus))
        inf = self.infer_ms.summary()
        if inf.get("n") and mean_batch:
            ms["infer"] = float(inf["p50"]) / mean_batch
            inflight = self.async_q.requests if self.async_q is not None else 1
            fps["infer"] = 1000.0 * mean_batch * inflight / float(inf["p50"]) if inf["p50"] else float("inf")
        post, sink = p50("post"), p50("sink")
        if post is not None:
            ms["post"] = post + (sink or 0.0)
            fps["post"] = 1000.0 / ms["post"] if ms["post"] > 0 else float("inf")
        if not fps:
            return None
        worst = min(fps, key=lambda k: fps[k])
        return {
            "stage": worst,
            "max_fps": round(fps[worst], 1),
            "cpus": cpus,
            "decode_bound": worst == "decode",
            "ms_per_frame_p50": {k: round(v, 3) for k, v in ms.items()},
            "max_fps_by_stage": {k: round(v, 1) for k, v in fps.items()},
        }


def _merge(res: list[Reservoir]) -> dict[str, float]:
    """Percentiles over several streams' samples together."""
    arrays = [r.samples for r in res if r.count]
    if not arrays:
        return {"n": 0}
    a = np.concatenate(arrays).astype(np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "n": int(sum(r.count for r in res)),
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p99": round(float(p99), 3),
        "max": round(float(a.max()), 3),
    }
