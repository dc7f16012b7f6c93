"""Several streams on one engine, in-process: cross-stream batching, per-stream order and isolation, async
queues of the real engines, cameras.yaml validation."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_stream_unit import NCLS, SIZE, contract, write_video

from edgecv.backends.base import Runner
from edgecv.errors import ConfigError, SourceError
from edgecv.stream import StreamConfig, open_source, parse_source
from edgecv.stream.multi import MultiConfig, MultiStreamPipeline, StreamInput
from edgecv.stream.sinks import JsonlSink
from edgecv.stream.sources import Source, SourceSpec
from edgecv.types import TensorSpec

pytestmark = pytest.mark.stream


class BatchRunner(Runner):
    """The classifier of test_stream_unit with a dynamic batch; records every batch size it was given."""

    name = "fake-batch"
    concurrent_infer = True

    def __init__(self, delay: float = 0.0, fixed: int | None = None) -> None:
        super().__init__()
        self.delay = delay
        self.fixed = fixed
        self.sizes: list[int] = []
        self._lock = threading.Lock()

    def _load(self) -> None:
        self._input_spec = [TensorSpec("input", (self.fixed, 3, SIZE, SIZE), "float32")]
        self._output_spec = [TensorSpec("output", (self.fixed, NCLS), "float32")]

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed["input"]
        with self._lock:
            self.sizes.append(x.shape[0])
        if self.delay:
            time.sleep(self.delay)
        m = x.reshape(x.shape[0], 3, -1).mean(axis=2)
        logits = np.concatenate([m * 20, np.full((x.shape[0], 1), 2.0, np.float32)], axis=1)
        return {"output": logits.astype(np.float32)}


def batch_contract(hi: int = 8):  # type: ignore[no-untyped-def]
    return contract(batch_range=[1, 1, hi])


def streams_of(
    paths: dict[str, Path], cfg: StreamConfig | None = None, sinks: dict[str, list] | None = None
) -> list[StreamInput]:  # type: ignore[type-arg]
    return [
        StreamInput(n, open_source(parse_source(str(p))), cfg or StreamConfig(drop="wait"), (sinks or {}).get(n, []))
        for n, p in paths.items()
    ]


def test_four_streams_batched_every_frame_in_order_per_stream(tmp_path: Path) -> None:
    videos, expected = {}, {}
    for i, n in enumerate((12, 20, 16, 9)):
        videos[f"s{i}"] = tmp_path / f"s{i}.mp4"
        expected[f"s{i}"] = write_video(videos[f"s{i}"], n)
    merged = JsonlSink(tmp_path / "all.jsonl")
    own = {n: [JsonlSink(tmp_path / f"{n}.jsonl")] for n in videos}
    runner = BatchRunner(delay=0.01)
    pipe = MultiStreamPipeline(
        streams_of(videos, sinks=own), runner, batch_contract(), [merged], MultiConfig(batch_wait_ms=50, requests=2)
    )
    with runner:
        s = pipe.run(install_signals=False)
    assert max(runner.sizes) > 1 and max(runner.sizes) <= 8  # frames of several streams shared a batch
    assert sum(runner.sizes) == sum(len(v) for v in expected.values())
    events = [json.loads(x) for x in (tmp_path / "all.jsonl").read_text().splitlines()]
    for name, classes in expected.items():
        mine = [e for e in events if e["stream"] == name]
        assert [e["frame"] for e in mine] == list(range(len(classes)))
        assert [e["seq"] for e in mine] == list(range(len(classes)))
        assert [e["results"][0]["topk"][0]["class_id"] for e in mine] == classes
        own_lines = (tmp_path / f"{name}.jsonl").read_text().splitlines()
        assert [json.loads(x)["frame"] for x in own_lines] == list(range(len(classes)))
        assert s["streams"][name]["frames_processed"] == len(classes)
        assert s["streams"][name]["dropped"] == 0
    assert s["total"]["frames_processed"] == 57
    assert s["engine"]["batches"] == len(runner.sizes)
    assert sum(int(k) * v for k, v in s["engine"]["batch_sizes"].items()) == 57
    assert s["engine"]["async"]["requests"] == 2
    assert s["total"]["slowest_stage"]["stage"] in ("decode", "preprocess", "infer", "post")


def test_fixed_batch_engine_is_padded_and_max_batch_checked(tmp_path: Path) -> None:
    videos = {"a": tmp_path / "a.mp4", "b": tmp_path / "b.mp4"}
    ea, eb = write_video(videos["a"], 7), write_video(videos["b"], 5)
    runner = BatchRunner(fixed=4)
    merged = JsonlSink(tmp_path / "m.jsonl")
    pipe = MultiStreamPipeline(streams_of(videos), runner, batch_contract(), [merged], MultiConfig(batch_wait_ms=20))
    with runner:
        s = pipe.run(install_signals=False)
    assert set(runner.sizes) == {4} and s["engine"]["fixed_batch"] == 4
    ev = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [e["results"][0]["topk"][0]["class_id"] for e in ev if e["stream"] == "a"] == ea
    assert [e["results"][0]["topk"][0]["class_id"] for e in ev if e["stream"] == "b"] == eb
    with BatchRunner(fixed=4) as r2:
        p2 = MultiStreamPipeline(streams_of(videos), r2, batch_contract(), [], MultiConfig(max_batch=8))
        with pytest.raises(ConfigError, match="at most the engine's largest batch 4, found 8"):
            p2.run(install_signals=False)


class StallingSource(Source):
    """A live source that delivers ``n`` frames, then blocks in read() until released (a stalled camera)."""

    def __init__(self, n: int) -> None:
        super().__init__(SourceSpec("camera", 99))
        self.n = n
        self.i = 0
        self.release = threading.Event()

    def open(self, timeout: float) -> None:
        self.i = 0

    def read(self):  # type: ignore[no-untyped-def]
        if self.i >= self.n:
            self.release.wait(30)
            return "end", None
        self.i += 1
        time.sleep(0.01)
        img = np.zeros((40, 40, 3), np.uint8)
        img[..., 1] = 200
        return "ok", img


class NeverOpens(Source):
    def __init__(self) -> None:
        super().__init__(SourceSpec("url", "rtsp://127.0.0.1:1/x"))

    def open(self, timeout: float) -> None:
        raise SourceError("source url:rtsp://127.0.0.1:1/x did not open within 0.1 s")

    def read(self):  # type: ignore[no-untyped-def]
        return "end", None


def test_stalled_and_dead_streams_never_stall_the_others(tmp_path: Path) -> None:
    write_video(tmp_path / "ok.mp4", 40)
    stall = StallingSource(3)
    streams = [
        StreamInput("ok", open_source(parse_source(str(tmp_path / "ok.mp4"))), StreamConfig(drop="wait")),
        StreamInput("stall", stall, StreamConfig(drop="latest", reconnect_max=0)),
        StreamInput("dead", NeverOpens(), StreamConfig(open_timeout=0.1)),
    ]
    runner = BatchRunner()
    pipe = MultiStreamPipeline(streams, runner, batch_contract(), [], MultiConfig(batch_wait_ms=5))
    done = threading.Event()
    seen_ok: list[int] = []

    def watch() -> None:  # the healthy stream finishes while the stalled one is still blocked in read()
        deadline = time.monotonic() + 20
        while not done.is_set() and time.monotonic() < deadline:
            st = pipe._by_name["ok"]
            if st.state == "ended" and st.metrics.frames_out == 40:
                seen_ok.append(st.metrics.frames_out)
                break
            time.sleep(0.02)
        stall.release.set()

    w = threading.Thread(target=watch)
    with runner:
        w.start()
        s = pipe.run(install_signals=False)
        done.set()
        w.join()
    assert seen_ok == [40]  # every frame of the healthy stream came out while the other was stalled
    assert s["streams"]["stall"]["frames_processed"] == 3
    assert s["streams"]["dead"]["stopped_by"] == "did not open" and "did not open" in s["streams"]["dead"]["error"]
    assert s["failed"] == ["dead"]


def test_require_all_fails_before_anything_runs(tmp_path: Path) -> None:
    write_video(tmp_path / "ok.mp4", 5)
    runner = BatchRunner()
    streams = [
        StreamInput("ok", open_source(parse_source(str(tmp_path / "ok.mp4")))),
        StreamInput("dead", NeverOpens(), StreamConfig(open_timeout=0.1)),
    ]
    pipe = MultiStreamPipeline(streams, runner, batch_contract(), [], MultiConfig(require_all=True))
    with runner, pytest.raises(SourceError, match="--require-all: stream 'dead' did not open"):
        pipe.run(install_signals=False)
    assert runner.sizes == []


class FlakyCamera(Source):
    """A network source that drops after every 5 frames and comes back; counts its opens."""

    def __init__(self) -> None:
        super().__init__(SourceSpec("url", "rtsp://flaky/x"))
        self.opens = 0
        self.i = 0

    def open(self, timeout: float) -> None:
        self.opens += 1
        self.i = 0

    def read(self):  # type: ignore[no-untyped-def]
        if self.i >= 5:
            return "end", None
        self.i += 1
        return "ok", np.full((40, 40, 3), 90, np.uint8)


def test_reconnects_are_counted_per_stream(tmp_path: Path) -> None:
    write_video(tmp_path / "ok.mp4", 10)
    flaky = FlakyCamera()
    cfg = StreamConfig(drop="wait", reconnect_backoff=0.01, reconnect_max=2, max_frames=15)
    streams = [StreamInput("ok", open_source(parse_source(str(tmp_path / "ok.mp4")))), StreamInput("flaky", flaky, cfg)]
    with BatchRunner() as runner:
        s = MultiStreamPipeline(streams, runner, batch_contract(), []).run(install_signals=False)
    assert s["streams"]["flaky"]["reconnects"] == 2 and s["streams"]["flaky"]["frames_processed"] == 15
    assert s["streams"]["ok"]["reconnects"] == 0 and s["streams"]["ok"]["frames_processed"] == 10
    assert s["total"]["reconnects"] == 2


class TickingCamera(Source):
    """A live camera that delivers ``n`` frames, one every 10 ms, then ends."""

    def __init__(self, n: int, value: int) -> None:
        super().__init__(SourceSpec("camera", 98))
        self.n, self.value, self.i = n, value, 0

    def open(self, timeout: float) -> None:
        self.i = 0

    def read(self):  # type: ignore[no-untyped-def]
        if self.i >= self.n:
            return "end", None
        self.i += 1
        time.sleep(0.01)
        return "ok", np.full((40, 40, 3), self.value, np.uint8)


def test_live_batch_closes_once_every_live_stream_is_in(tmp_path: Path) -> None:
    """Live streams: a batch holding a frame of every stream starts at once instead of waiting --batch-wait-ms for
    the next frames (each a frame period away); the batcher takes frames only when a request is free."""
    cams = {"a": TickingCamera(8, 60), "b": TickingCamera(8, 200)}
    streams = [StreamInput(n, c, StreamConfig(drop="wait", reconnect_max=0)) for n, c in cams.items()]
    with BatchRunner(delay=0.005) as runner:
        pipe = MultiStreamPipeline(
            streams, runner, batch_contract(), [], MultiConfig(batch_wait_ms=600_000, requests=1)
        )
        s = pipe.run(install_signals=False)
    assert s["streams"]["a"]["frames_processed"] == 8 and s["streams"]["b"]["frames_processed"] == 8
    # no batch waited its 10-minute bound: each closed when both cameras were in, or when the cameras ended
    assert s["total"]["latency_ms"]["batch_wait"]["max"] < 600_000 / 10
    assert s["total"]["latency_ms"]["request_wait"]["n"] == len(runner.sizes)
    assert sum(runner.sizes) == 16
    # drop latest: one frame per stream and batch (its next frame goes fresher into the next batch)
    cams = {"a": TickingCamera(30, 60), "b": TickingCamera(30, 200)}
    streams = [StreamInput(n, c, StreamConfig(drop="latest", reconnect_max=0)) for n, c in cams.items()]
    with BatchRunner(delay=0.05) as runner:
        pipe = MultiStreamPipeline(streams, runner, batch_contract(), [], MultiConfig(batch_wait_ms=200, requests=1))
        s = pipe.run(install_signals=False)
    assert max(runner.sizes) <= 2 and s["total"]["dropped"] > 0


def test_async_queue_wait_ready_until_a_request_is_free() -> None:
    gate = threading.Event()

    class Gated(BatchRunner):
        def _infer_impl(self, feed):  # type: ignore[no-untyped-def]
            gate.wait(30)
            return super()._infer_impl(feed)

    got: list[int] = []
    with Gated() as r:
        q = r.async_queue(2)
        x = np.zeros((1, 3, SIZE, SIZE), np.float32)
        assert q.wait_ready(0) and q.in_flight == 0
        q.submit({"input": x}, 0, lambda u, out, err: got.append(u))
        assert q.wait_ready(0)  # one of two requests busy
        q.submit({"input": x}, 1, lambda u, out, err: got.append(u))
        assert q.in_flight == 2 and not q.wait_ready(0.05)  # both busy: the next submit would block
        gate.set()
        assert q.wait_ready(10)
        q.wait_all()
        q.close()
    assert sorted(got) == [0, 1] and q.in_flight == 0


def test_engine_error_stops_the_run_and_finalizes(tmp_path: Path) -> None:
    class Broken(BatchRunner):
        def _infer_impl(self, feed):  # type: ignore[no-untyped-def]
            raise RuntimeError("engine exploded")

    write_video(tmp_path / "a.mp4", 10)
    jl = JsonlSink(tmp_path / "a.jsonl")
    with Broken() as runner:
        pipe = MultiStreamPipeline(streams_of({"a": tmp_path / "a.mp4"}), runner, batch_contract(), [jl])
        with pytest.raises(SourceError, match="engine exploded"):
            pipe.run(install_signals=False)
    assert pipe.stopped_by == "error in post"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_engine_async_queue_matches_sync_inference(tmp_path: Path, backend: str) -> None:
    pytest.importorskip(backend)
    pytest.importorskip("torch")
    from helpers import make_tiny_bundle

    from edgecv.backends import open_runner

    b = make_tiny_bundle(tmp_path / "tiny", "classify", size=32)
    kw = {"performance": "throughput"}
    x = np.random.default_rng(1).standard_normal((6, 3, 32, 32)).astype(np.float32)
    with open_runner(b, backend, threads=1, **kw) as r:
        want = [r.infer({"input": x[i : i + 2]})["output"] for i in range(0, 6, 2)]
        q = r.async_queue(3)
        got: dict[int, np.ndarray] = {}
        lock = threading.Lock()

        def done(i, out, err):  # type: ignore[no-untyped-def]
            assert err is None
            with lock:
                got[i] = out["output"]

        for k, i in enumerate(range(0, 6, 2)):
            q.submit({"input": x[i : i + 2]}, k, done)
        q.wait_all()
        info = q.describe()
        q.close()
        if backend == "openvino":  # asked of the compiled model, not of what we passed
            assert str(r._compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")
    assert info["requests"] == 3
    assert info["kind"] == ("openvino AsyncInferQueue" if backend == "openvino" else "threads")
    for k in range(3):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)


def test_onnxruntime_throughput_hint_runs_threads_as_requests(tmp_path: Path) -> None:
    """ORT's throughput hint: one intra-op thread per request, and ``threads`` requests by default."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from helpers import make_tiny_bundle

    from edgecv.backends import open_runner
    from edgecv.errors import ConfigError

    b = make_tiny_bundle(tmp_path / "tiny", "classify", size=32)
    with open_runner(b, "onnxruntime", threads=3, performance="throughput") as r:
        assert r._session.get_session_options().intra_op_num_threads == 1
        q = r.async_queue()
        assert q.describe() == {"kind": "threads", "requests": 3}
        q.close()
        assert r.describe()["performance"] == "throughput"
    with open_runner(b, "onnxruntime", threads=2) as r:  # latency (default): the threads go into each request
        assert r._session.get_session_options().intra_op_num_threads == 2
        q = r.async_queue()
        assert q.describe()["requests"] == 2
        q.close()
    with pytest.raises(ConfigError, match="expected latency or throughput, found 'fast'"):
        open_runner(b, "onnxruntime", performance="fast")


# ------------------------------------------------------------------------------------------ cameras.yaml
def test_cameras_yaml_valid_and_dotted_errors(tmp_path: Path) -> None:
    from edgecv.stream.cameras import expand, load_cameras

    v = tmp_path / "c.mp4"
    write_video(v, 2)
    good = tmp_path / "cams.yaml"
    good.write_text(
        f"streams:\n  - name: door\n    file: {v}\n    max_fps: 5\n    drop: latest\n"
        f"    save: out/{{name}}.mp4\n  - name: cam\n    device: 0\n"
        f"  - name: net\n    url: rtsp://10.0.0.5/main\n"
    )
    cams = load_cameras(good)
    assert [c.name for c in cams] == ["door", "cam", "net"]
    assert cams[0].source_spec().kind == "file" and cams[1].source_spec().kind == "camera"
    assert cams[2].source_spec().kind == "url" and cams[0].max_fps == 5
    assert expand(cams[0].save, "door") == Path("out/door.mp4")
    cases = {
        "streams:\n  - name: a\n    file: x\n    drop: sometimes\n": "streams.0.drop:",
        "streams:\n  - name: a\n    url: rtsp://h/x\n  - name: b\n    file: f\n    url: rtsp://h/y\n": "streams.1: expected exactly one of url, device, file, gst, found url, file",
        "streams:\n  - name: a\n    url: rtsp://h/x\n    fps: 3\n": "streams.0.fps: Extra inputs",
        "streams:\n  - name: a\n    url: rtsp://h/x\n  - name: a\n    url: rtsp://h/y\n": "found 'a' twice",
        "streams:\n  - name: a\n    url: rtsp://h/x\n    max_fps: -1\n": "streams.0.max_fps:",
        "streams: [\n": "syntax error at line",
        "streams: []\n": "streams:",
    }
    for text, needle in cases.items():
        p = tmp_path / "bad.yaml"
        p.write_text(text)
        with pytest.raises(ConfigError) as ei:
            load_cameras(p)
        assert needle in str(ei.value) and "\n" not in str(ei.value), (text, str(ei.value))


def test_cameras_from_flags_names_and_duplicates(tmp_path: Path) -> None:
    from edgecv.stream.cameras import cameras_from_flags

    v = tmp_path / "v.mp4"
    write_video(v, 2)
    cams = cameras_from_flags([str(v), f"yard={v}", "rtsp://h/x?a=b"])
    assert [c.name for c in cams] == ["cam0", "yard", "cam2"]
    assert cams[2].url == "rtsp://h/x?a=b"
    with pytest.raises(ConfigError, match="expected unique stream names, found 'a' twice"):
        cameras_from_flags([f"a={v}", f"a={v}"])


def test_live_page_follows_the_netguard_rules(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    from edgecv.stream.live import LivePage

    with pytest.raises(ConfigError, match="expected a token"):
        LivePage(["a"], host="0.0.0.0", port=0)
    token = "t" * 24
    page = LivePage(["a", "b"], host="127.0.0.1", port=0, token=token)
    try:
        page.write(np.full((40, 60, 3), 120, np.uint8), {"stream": "a"})
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(page.url + "metrics.json", timeout=5)
        assert ei.value.code == 401
        with urllib.request.urlopen(page.url + f"?token={token}", timeout=5) as r:
            html = r.read().decode()
        assert f"/stream/a.mjpg?token={token}" in html and f"/stream/b.mjpg?token={token}" in html
        req = urllib.request.Request(page.url + "snapshot/a.jpg", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.read()[:2] == b"\xff\xd8"
        req = urllib.request.Request(page.url + "snapshot/zzz.jpg", headers={"Authorization": f"Bearer {token}"})
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(req, timeout=5)
        assert ei.value.code == 404
        assert page.describe()["refused_unauthorized"] == 1
    finally:
        page.close()
