"""Stream building blocks in-process: buffer policies, sources, decoders, overlays, pipeline with a fake runner,
sinks (JSONL, MJPEG over a real HTTP client)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgecv.backends.base import Runner
from edgecv.bundle import Contract
from edgecv.errors import ConfigError, SourceError
from edgecv.stream import FrameBuffer, StreamConfig, StreamPipeline, open_source, parse_source
from edgecv.stream.sinks import JsonlSink, MjpegServer
from edgecv.tasks.preprocess import Transform
from edgecv.types import TensorSpec

pytestmark = pytest.mark.stream

SIZE = 32
NCLS = 4


class FakeRunner(Runner):
    """Deterministic classifier: class = argmax of the mean of each channel (R, G, B → 0, 1, 2; dark → 3);
    ``delay`` seconds per call to play a slow model."""

    name = "fake"

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.calls = 0

    def _load(self) -> None:
        self._input_spec = [TensorSpec("input", (1, 3, SIZE, SIZE), "float32")]
        self._output_spec = [TensorSpec("output", (1, NCLS), "float32")]

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        x = feed["input"]
        m = x.reshape(x.shape[0], 3, -1).mean(axis=2)  # unnormalized means (scale 1/255, mean 0, std 1)
        logits = np.concatenate([m * 20, np.full((x.shape[0], 1), 2.0, np.float32)], axis=1)
        return {"output": logits.astype(np.float32)}


def contract(task: str = "classify", **kw: object) -> Contract:
    return Contract(
        task=task,
        input_shape=[1, 3, SIZE, SIZE],
        mean=[0, 0, 0],
        std=[1, 1, 1],
        class_names=[f"k{i}" for i in range(NCLS)],
        **kw,
    )


def write_video(path: Path, n: int, size: tuple[int, int] = (96, 64), fps: float = 30.0) -> list[int]:
    """A test clip: frame i is a solid colour (R, G or B by i % 3) → its expected class."""
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    assert w.isOpened()
    classes = []
    for i in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        c = i % 3
        img[..., 2 - c] = 230  # BGR: class 0 is red
        w.write(img)
        classes.append(c)
    w.release()
    return classes


# ------------------------------------------------------------------------------------------- buffer
def test_buffer_latest_keeps_newest_and_counts_drops() -> None:
    b: FrameBuffer[int] = FrameBuffer(2, "latest")
    for i in range(5):
        assert b.put(i)
    assert b.dropped == 3 and b.high_water == 2
    assert [b.get(0), b.get(0)] == [3, 4]


def test_buffer_oldest_keeps_queued_and_drops_incoming() -> None:
    b: FrameBuffer[int] = FrameBuffer(2, "oldest")
    assert [b.put(i) for i in range(4)] == [True, True, False, False]
    assert b.dropped == 2
    assert [b.get(0), b.get(0)] == [0, 1]


def test_buffer_wait_blocks_until_consumed_and_never_drops() -> None:
    b: FrameBuffer[int] = FrameBuffer(1, "wait")
    assert b.put(0)
    assert not b.put(1, timeout=0.05)  # full: blocks, times out
    got: list[int | None] = []
    t = threading.Thread(target=lambda: got.extend([b.get(1), b.get(1)]))
    t.start()
    assert b.put(2, timeout=2)
    b.close()
    t.join(2)
    assert got == [0, 2] and b.dropped == 0 and b.high_water == 1
    assert b.get(0) is None  # closed and drained


def test_buffer_rejects_bad_policy() -> None:
    with pytest.raises(ConfigError, match="latest, oldest, wait"):
        FrameBuffer(2, "newest")


# ------------------------------------------------------------------------------------------- sources
def test_parse_source_kinds(tmp_path: Path) -> None:
    (tmp_path / "v.mp4").write_bytes(b"x")
    assert parse_source("0").kind == "camera" and parse_source("0").target == 0
    assert parse_source("/dev/video2").kind == "camera"
    assert parse_source("rtsp://h:554/x").network
    assert parse_source("http://127.0.0.1:9/").kind == "url"
    assert parse_source(str(tmp_path)).kind == "folder"
    assert parse_source(str(tmp_path / "v.mp4")).kind == "file" and not parse_source(str(tmp_path / "v.mp4")).live
    assert parse_source("videotestsrc ! appsink", gst=True).kind == "gst"
    with pytest.raises(ConfigError, match="no such path"):
        parse_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(ConfigError, match="--gst"):
        parse_source("videotestsrc ! videoconvert ! appsink")
    with pytest.raises(ConfigError, match="scheme"):
        parse_source("ftp://x/y")


def test_gst_source_without_gstreamer_says_so() -> None:
    from edgecv.stream.sources import opencv_has_gstreamer

    if opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer")
    src = open_source(parse_source("videotestsrc ! appsink", gst=True))
    with pytest.raises(SourceError, match="GStreamer"):
        src.open(1.0)


def test_folder_source_skips_corrupt_and_tiny(tmp_path: Path) -> None:
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((40, 50, 3), 60 * i, np.uint8))
    (tmp_path / "1b.jpg").write_bytes(b"\xff\xd8not a jpeg")
    cv2.imwrite(str(tmp_path / "2b.png"), np.zeros((4, 4, 3), np.uint8))  # odd-sized: 4x4
    src = open_source(parse_source(str(tmp_path)))
    src.open(1.0)
    statuses = []
    while True:
        st, img = src.read()
        if st == "end":
            break
        statuses.append(st)
        if st == "ok":
            assert img is not None and img.shape == (40, 50, 3)
    assert statuses.count("ok") == 3 and statuses.count("corrupt") == 2


# ------------------------------------------------------------------------------------------- decoders
def test_classify_decoder_softmax_topk() -> None:
    from edgecv.tasks.decode import get_decoder

    c = contract(decode={"activation": "softmax", "topk": 3})
    logits = np.array([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]], np.float32)
    tf = Transform(1, 1, 0, 0, (SIZE, SIZE))
    res = get_decoder(c).decode({"output": logits}, [tf, tf])
    assert [list(r.ids) for r in res] == [[1, 3, 2], [0, 1, 2]]
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    np.testing.assert_allclose(res[0].scores, p[[1, 3, 2]], rtol=1e-5)
    j = res[0].to_json()
    assert j["topk"][0] == {"class_id": 1, "label": "k1", "score": round(float(p[1]), 6)}


def test_segment_decoder_undoes_letterbox() -> None:
    from edgecv.tasks.decode import get_decoder
    from edgecv.tasks.preprocess import preprocess

    c = contract("segment", resize="letterbox")
    img = np.zeros((20, 40, 3), np.uint8)  # wide: letterboxed with pad rows top and bottom
    _, tf = preprocess(img, c)
    assert tf.pad_y > 0
    # scores: class 2 on the left half of the input tensor, class 1 on the right, class 3 in the pad rows
    scores = np.zeros((1, NCLS, SIZE, SIZE), np.float32)
    scores[0, 2, :, : SIZE // 2] = 1
    scores[0, 1, :, SIZE // 2 :] = 1
    top = int(tf.pad_y)
    scores[0, :, :top] = 0
    scores[0, 3, :top] = 5
    res = get_decoder(c).decode({"output": scores}, [tf])[0]
    assert res.mask.shape == (20, 40)
    assert (res.mask[:, :20] == 2).all() and (res.mask[:, 20:] == 1).all()  # no pad class leaked in
    fr = {d["class_id"]: d["fraction"] for d in res.to_json()["classes"]}
    assert fr == {1: 0.5, 2: 0.5}


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "center_crop"])
@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_preprocess_resizes_before_the_channel_swap_bit_exactly(resize: str, color: str) -> None:
    """preprocess swaps channels after resizing (a 720p frame is not converted whole); the tensor must be
    bit-identical to converting first, for every resize mode, and the channels must really be swapped."""
    import cv2

    from edgecv.tasks.preprocess import preprocess, resize_image

    c = contract(resize=resize, color=color).model_copy(update={"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]})
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
    img[..., 0] = 10  # blue plane dark: a swap that did not happen shows
    x, tf = preprocess(img, c)
    first = cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if color == "RGB" else img
    ref, tf_ref = resize_image(first, c)
    ref = ((ref.astype(np.float32) * np.float32(c.scale) - np.float32(c.mean)) / np.float32(c.std)).transpose(2, 0, 1)[
        None
    ]
    assert tf == tf_ref
    np.testing.assert_array_equal(x, ref)
    blue = 2 if color == "RGB" else 0
    inside = x[0, blue][x[0, blue] != x[0, blue][0, 0]] if resize == "letterbox" else x[0, blue]
    assert np.allclose(inside, (10 / 255 - c.mean[blue]) / c.std[blue], atol=1e-6)


def test_graph_nms_decoder_maps_boxes_back() -> None:
    from edgecv.tasks.decode import get_decoder

    c = contract("detect", resize="letterbox", decode={"nms": "graph", "score_threshold": 0.3})
    tf = Transform(0.5, 0.5, 0.0, 8.0, (48, 64))  # 64x48 → 32x24, padded 8 px top
    boxes = np.zeros((1, 5, 4), np.float32)
    boxes[0, 0] = [2, 10, 12, 20]
    boxes[0, 1] = [0, 8, 32, 32]
    scores = np.array([[0.9, 0.2, 0.8, 0.7, 0.6]], np.float32)
    classes = np.array([[1, 2, 3, 0, 0]], np.int32)
    res = get_decoder(c).decode(
        {"boxes": boxes, "scores": scores, "classes": classes, "num_dets": np.array([2], np.int32)}, [tf]
    )[0]
    assert len(res) == 1  # 2 valid detections, one under the threshold; padded rows ignored
    np.testing.assert_allclose(res.boxes[0], [4, 4, 24, 24])
    assert res.to_json()["detections"][0]["label"] == "k1"


def test_get_decoder_generic_and_host_nms_errors() -> None:
    from edgecv.tasks.decode import get_decoder

    with pytest.raises(ConfigError, match="generic"):
        get_decoder(contract("generic"))


def test_draw_overlays_change_pixels() -> None:
    from edgecv.tasks.classify import ClassifyResult
    from edgecv.tasks.decode import DetectResult
    from edgecv.tasks.draw import draw_fps, draw_result
    from edgecv.tasks.segment import SegmentResult

    img = np.zeros((120, 160, 3), np.uint8)
    det = DetectResult(np.array([[10, 10, 60, 60]], np.float32), np.array([0.9], np.float32), np.array([1]), ["a", "b"])
    draw_result(img, det)
    assert img[10, 30:40].any() and not img[100:, 100:].any()  # box edge drawn, far corner untouched
    img2 = np.zeros((120, 160, 3), np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    mask[:, 80:] = 2
    draw_result(img2, SegmentResult(mask))
    assert not img2[:, :80].any() and img2[:, 80:].any()
    img3 = np.zeros((120, 160, 3), np.uint8)
    draw_result(img3, ClassifyResult(np.array([1]), np.array([0.5], np.float32), ["a", "b"]))
    draw_fps(img3, 12.3)
    assert img3[:30, :60].any() and img3[:30, 100:].any()


# ------------------------------------------------------------------------------------------- pipeline
def run_pipe(src: str, runner: Runner, cfg: StreamConfig, sinks: list | None = None) -> tuple[StreamPipeline, dict]:
    pipe = StreamPipeline(open_source(parse_source(src)), runner, contract(), sinks or [], cfg)
    with runner:
        return pipe, pipe.run(install_signals=False)


def test_pipeline_wait_processes_every_frame_in_order(tmp_path: Path) -> None:
    expected = write_video(tmp_path / "v.mp4", 30)
    jl = JsonlSink(tmp_path / "o.jsonl")
    _pipe, s = run_pipe(str(tmp_path / "v.mp4"), FakeRunner(delay=0.005), StreamConfig(drop="wait"), [jl])
    events = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert s["frames_processed"] == 30 and s["dropped"] == 0 and len(events) == 30
    assert [e["frame"] for e in events] == list(range(30))
    assert [e["results"][0]["topk"][0]["class_id"] for e in events] == expected
    assert set(events[0]["latency_ms"]) >= {"preprocess", "infer", "post", "e2e", "queue", "read"}
    for q in s["queues"].values():
        assert q["high_water"] <= q["capacity"]


def test_pipeline_latest_drops_when_inference_is_slow_and_wait_does_not(tmp_path: Path) -> None:
    write_video(tmp_path / "v.mp4", 60)
    # the file is read far faster than 20 ms/frame inference: latest must drop, bounded by the buffer
    jl = JsonlSink(tmp_path / "latest.jsonl")
    _, latest = run_pipe(str(tmp_path / "v.mp4"), FakeRunner(delay=0.02), StreamConfig(drop="latest"), [jl])
    assert latest["dropped"] > 10
    done = [json.loads(line)["frame"] for line in (tmp_path / "latest.jsonl").read_text().splitlines()]
    assert done == sorted(done) and done[-1] == 59  # the newest frame is always the one inferred
    assert latest["frames_processed"] + latest["dropped"] == latest["frames_in"] == 60
    assert latest["queues"]["capture"]["high_water"] == 1
    _, wait = run_pipe(str(tmp_path / "v.mp4"), FakeRunner(delay=0.02), StreamConfig(drop="wait", buffer_size=1))
    assert wait["dropped"] == 0 and wait["frames_processed"] == 60
    assert all(q["high_water"] <= q["capacity"] for q in wait["queues"].values())


def test_pipeline_stride_max_frames(tmp_path: Path) -> None:
    write_video(tmp_path / "v.mp4", 40)
    _, s = run_pipe(str(tmp_path / "v.mp4"), FakeRunner(), StreamConfig(drop="wait", stride=3, max_frames=5))
    assert s["frames_in"] == 5 and s["frames_processed"] == 5 and s["skipped_stride"] == 8
    assert s["stopped_by"] == "max frames"


def test_pipeline_max_fps_paces_a_file(tmp_path: Path) -> None:
    write_video(tmp_path / "v.mp4", 12)
    _, s = run_pipe(str(tmp_path / "v.mp4"), FakeRunner(), StreamConfig(drop="wait", max_fps=20))
    # 12 frames at 20 fps: at least 11 periods of 50 ms
    assert s["frames_processed"] == 12 and s["duration_s"] >= 0.5


def test_pipeline_folder_counts_corrupt(tmp_path: Path) -> None:
    import cv2

    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((30 + i, 40, 3), 200, np.uint8))
    (tmp_path / "2x.jpg").write_bytes(b"garbage")
    _, s = run_pipe(str(tmp_path), FakeRunner(), StreamConfig())
    assert s["policy"] == "wait" and s["frames_processed"] == 4 and s["skipped_corrupt"] == 1


def test_pipeline_runner_error_finalizes_and_raises(tmp_path: Path) -> None:
    write_video(tmp_path / "v.mp4", 20)

    class Broken(FakeRunner):
        def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            if self.calls >= 3:
                raise SourceError("engine fell over")
            return super()._infer_impl(feed)

    jl = JsonlSink(tmp_path / "o.jsonl")
    pipe = StreamPipeline(
        open_source(parse_source(str(tmp_path / "v.mp4"))), Broken(), contract(), [jl], StreamConfig(drop="wait")
    )
    with Broken() as r:
        pipe.runner = r
        with pytest.raises(SourceError, match="fell over"):
            pipe.run(install_signals=False)
    assert jl._f.closed and pipe.stopped_by == "error in infer"
    # frames already inferred may be discarded by the abort, but none after the failing call is written
    assert 1 <= len((tmp_path / "o.jsonl").read_text().splitlines()) <= 3


def test_mjpeg_endpoint_serves_jpeg_parts(tmp_path: Path) -> None:
    write_video(tmp_path / "v.mp4", 400)
    srv = MjpegServer("127.0.0.1", 0)
    runner = FakeRunner(delay=0.01)
    pipe = StreamPipeline(
        open_source(parse_source(str(tmp_path / "v.mp4"))),
        runner,
        contract(),
        [srv],
        StreamConfig(drop="wait", max_fps=60),
    )
    result: dict = {}

    def go() -> None:
        with runner:
            result.update(pipe.run(install_signals=False))

    t = threading.Thread(target=go)
    t.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/")
        r = conn.getresponse()
        assert r.status == 200 and b"stream.mjpg" in r.read()
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/stream.mjpg")
        r = conn.getresponse()
        assert r.getheader("Content-Type").startswith("multipart/x-mixed-replace; boundary=")
        boundary = r.getheader("Content-Type").split("boundary=")[1].encode()
        import cv2

        parts = 0
        buf = b""
        while parts < 3:
            buf += r.read1(65536)
            while True:
                head_end = buf.find(b"\r\n\r\n")
                if not buf.startswith(b"--" + boundary) or head_end < 0:
                    break
                headers = buf[:head_end].decode()
                n = int(headers.split("Content-Length: ")[1].split("\r\n")[0])
                if len(buf) < head_end + 4 + n + 2:
                    break
                jpeg = buf[head_end + 4 : head_end + 4 + n]
                img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                assert img is not None and img.shape == (64, 96, 3)
                parts += 1
                buf = buf[head_end + 4 + n + 2 :]
        conn.close()
    finally:
        pipe.stop("test done")
        t.join(20)
    assert parts >= 3 and srv.parts_sent >= 3
    assert result["frames_processed"] >= 3


def test_stream_engine_threads_leaves_capture_a_core_on_small_machines() -> None:
    from edgecv.stream.pipeline import stream_engine_threads, usable_cpus

    assert [stream_engine_threads(n) for n in (1, 2, 3, 4, 5, 16)] == [None, 1, 2, 3, None, None]
    assert stream_engine_threads() == stream_engine_threads(usable_cpus())


def test_stage_times_runs_until_min_time_and_reports_serial_fps() -> None:
    from edgecv.bench.stages import stage_times

    frames = [np.full((48, 64, 3), v, np.uint8) for v in (10, 200)]
    with FakeRunner(delay=0.01) as r:
        st = stage_times(r, contract(), frames, n=5, warmup=1, min_time_s=0.2)
    assert 5 < st.n < 25  # ~10 ms a frame: about 20 frames fill 0.2 s
    assert st.n * st.total_mean_ms >= 200.0
    assert st.infer_mean_ms >= 10.0 and st.fps == pytest.approx(1000.0 / st.total_mean_ms)
    with FakeRunner() as r:
        assert stage_times(r, contract(), frames, n=7, warmup=0).n == 7  # no min time: exactly n


def test_slowest_stage_names_the_stage_that_bounds_the_rate() -> None:
    from edgecv.stream.metrics import Metrics

    m = Metrics()
    assert m.slowest_stage() is None  # nothing measured yet
    for _ in range(11):
        for stage, ms in (("read", 2.0), ("preprocess", 0.5), ("infer", 3.0), ("post", 0.2), ("sink", 4.0)):
            m.add_latency(stage, ms)
    s = m.slowest_stage()
    assert s is not None and s["stage"] == "sinks" and s["p50_ms"] == 4.0 and s["max_fps"] == 250.0
    assert s["busy_p50_ms"] == {"capture": 2.0, "preprocess": 0.5, "infer": 3.0, "post": 0.2, "sinks": 4.0}


def test_with_conf_raises_the_detect_threshold_only() -> None:
    from edgecv.tasks.decode import with_conf

    det = contract("detect", decode={"nms": "graph", "score_threshold": 0.001, "max_det": 100})
    assert with_conf(det, 0.25).decode == {"nms": "graph", "score_threshold": 0.25, "max_det": 100}
    assert det.decode["score_threshold"] == 0.001  # the bundle's contract is not changed
    high = contract("detect", decode={"nms": "graph", "score_threshold": 0.5})
    assert with_conf(high, 0.25).decode["score_threshold"] == 0.5  # the bundle's own threshold is the floor
    cls = contract()
    assert with_conf(cls, 0.9) is cls
    with pytest.raises(ConfigError, match=r"--conf: expected a score in \[0, 1\], found 1.5"):
        with_conf(det, 1.5)
