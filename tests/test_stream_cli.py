"""``edgecv run`` end to end in subprocesses, with real peers: generated video files, ffprobe, an ffmpeg
HTTP/MPEG-TS server and a GStreamer RTSP server that are killed and restarted mid-run.

A test whose server tool is missing FAILS when ``CI=true`` (the CI image must install it) and is skipped with
the reason otherwise. Debian packages: ffmpeg (ffmpeg, ffprobe); python3-gi, gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-base, gstreamer1.0-plugins-good (RTSP server, jpegenc, rtpjpegpay).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.stream, pytest.mark.onnxruntime, pytest.mark.torch]

ROOT = Path(__file__).resolve().parents[1]
SYS_PY = "/usr/bin/python3"  # python3-gi is a Debian package: the system interpreter drives the RTSP server


def require(what: str, ok: bool, install: str) -> None:
    """Fail under CI=true (the image must provide it), skip with the reason otherwise."""
    if ok:
        return
    msg = f"{what} is not available; install it with: {install}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {msg}")
    pytest.skip(msg)


def require_ffmpeg() -> None:
    require("ffmpeg/ffprobe", bool(shutil.which("ffmpeg") and shutil.which("ffprobe")), "apt-get install ffmpeg")


def has_gst_rtsp() -> bool:
    if not Path(SYS_PY).exists():
        return False
    code = (
        "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "assert Gst.ElementFactory.find('jpegenc') and Gst.ElementFactory.find('rtpjpegpay')"
    )
    return subprocess.run([SYS_PY, "-c", code], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("b") / "tiny", "classify", size=32).root


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import cv2

    path = tmp_path_factory.mktemp("v") / "in.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25, (160, 120))
    for i in range(50):
        img = np.zeros((120, 160, 3), np.uint8)
        cv2.circle(img, (10 + 3 * i, 60), 20, (0, 0, 255), -1)
        w.write(img)
    w.release()
    return path


def edgecv(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgecv", "run", *args]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["OMP_NUM_THREADS"] = "1"
    e.pop("EDGECV_DEBUG", None)
    return e


def ffprobe_frames(path: Path) -> int:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"ffprobe cannot read {path}: {out.stderr}"
    return int(json.loads(out.stdout)["streams"][0]["nb_read_frames"])


def jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    # the last line may be half-written while the run is live
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def wait_until(pred, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            _out, err = proc.communicate()
            raise AssertionError(f"edgecv run exited {proc.returncode} while waiting for {what}:\n{err[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------- files
def test_file_wait_processes_every_frame_and_video_matches(bundle: Path, video: Path, tmp_path: Path) -> None:
    require_ffmpeg()
    out, jl, summ = tmp_path / "out.mp4", tmp_path / "o.jsonl", tmp_path / "s.json"
    p = subprocess.run(
        edgecv(
            str(bundle),
            "--source",
            str(video),
            "--drop",
            "wait",
            "--save",
            str(out),
            "--jsonl",
            str(jl),
            "--summary",
            str(summ),
        ),
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    events = jsonl(jl)
    s = json.loads(summ.read_text())
    assert len(events) == 50 == s["frames_processed"] == s["frames_read"] and s["dropped"] == 0
    assert [e["frame"] for e in events] == list(range(50))
    assert ffprobe_frames(out) == len(events)
    assert s["sinks"]["VideoSink"]["frames"] == 50 and s["stopped_by"] == "end of stream"
    assert s["sinks"]["VideoSink"]["preset"] == "ultrafast"  # the encoder shares the CPU with the model
    assert "infer" in p.stdout and "fps in" in p.stdout  # the summary table
    from edgecv.stream.pipeline import stream_engine_threads

    # no --threads: a machine with <= 4 cores leaves capture a core; the summary says what the engine got
    assert s["runner"]["threads"] == stream_engine_threads()
    slow = s["slowest_stage"]
    assert slow["stage"] in ("capture", "preprocess", "infer", "post", "sinks") and "slowest stage" in p.stdout
    assert slow["p50_ms"] == max(slow["busy_p50_ms"].values()) > 0
    assert not list(tmp_path.glob(".*partial*"))  # the temporary video was renamed


@pytest.mark.parametrize("writer", ["ffmpeg", "opencv"])
def test_video_sink_writer_thread_writes_every_frame(tmp_path: Path, writer: str) -> None:
    from edgecv.stream.sinks import VideoSink

    require_ffmpeg()
    out = tmp_path / "w.mp4"
    sink = VideoSink(out, fps=30, writer=writer)
    for i in range(40):
        frame = np.full((72, 128, 3), (i * 6) % 256, np.uint8)
        sink.write(frame, {})
        assert sink._queue.high_water <= 2  # the encoder queue is bounded
    sink.close()
    assert sink.frames == 40 and ffprobe_frames(out) == 40
    assert not list(tmp_path.glob(".*partial*"))


def test_video_sink_encoder_death_is_one_error_and_no_file(tmp_path: Path) -> None:
    from edgecv.errors import SinkError
    from edgecv.stream.sinks import VideoSink

    require_ffmpeg()
    out = tmp_path / "dead.mp4"
    sink = VideoSink(out, fps=30, writer="ffmpeg")
    frame = np.zeros((720, 1280, 3), np.uint8)
    sink.write(frame, {})
    assert sink._proc is not None
    sink._proc.kill()  # the encoder dies mid-run (OOM killer, disk full …)
    with pytest.raises(SinkError, match="could not write .*dead.mp4.*ffmpeg stopped"):
        for _ in range(200):  # the writer thread notices at its next write; the next put raises
            sink.write(frame, {})
            time.sleep(0.01)
    sink.close()
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))  # nothing half-written is left


def test_opencv_writer_and_stdout_json(bundle: Path, video: Path, tmp_path: Path) -> None:
    require_ffmpeg()
    out = tmp_path / "cv.mp4"
    p = subprocess.run(
        edgecv(
            str(bundle),
            "--source",
            str(video),
            "--save",
            str(out),
            "--writer",
            "opencv",
            "--stride",
            "2",
            "--threads",
            "1",
            "--json",
        ),
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["frames_processed"] == 25 and s["skipped_stride"] == 25 and s["policy"] == "wait"
    assert s["runner"]["threads"] == 1  # --threads 1 is passed through
    assert ffprobe_frames(out) == 25


def test_folder_source_counts_corrupt_image(bundle: Path, tmp_path: Path) -> None:
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i:02d}.jpg"), np.full((48 + 8 * i, 64, 3), 40 * i, np.uint8))
    (folder / "02b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    jl = tmp_path / "o.jsonl"
    p = subprocess.run(
        edgecv(str(bundle), "--source", str(folder), "--jsonl", str(jl), "--json"),
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["frames_processed"] == 5 and s["skipped_corrupt"] == 1 and len(jsonl(jl)) == 5
    assert "02b.jpg" in p.stderr  # the skipped file is named in the log


def test_sigterm_leaves_playable_video(bundle: Path, video: Path, tmp_path: Path) -> None:
    require_ffmpeg()
    out, jl, summ = tmp_path / "out.mp4", tmp_path / "o.jsonl", tmp_path / "s.json"
    proc = subprocess.Popen(
        edgecv(
            str(bundle),
            "--source",
            str(video),
            "--loop",
            "--max-fps",
            "50",
            "--save",
            str(out),
            "--jsonl",
            str(jl),
            "--summary",
            str(summ),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        wait_until(lambda: len(jsonl(jl)) >= 60, 120, "60 processed frames", proc)  # past one loop of the file
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    s = json.loads(summ.read_text())
    assert s["stopped_by"] == "signal SIGTERM" and s["frames_processed"] >= 60
    assert ffprobe_frames(out) == s["frames_processed"] == len(jsonl(jl))


def test_never_opening_source_fails_fast_with_one_line(bundle: Path) -> None:
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    p = subprocess.run(
        edgecv(str(bundle), "--source", f"http://127.0.0.1:{port}/", "--open-timeout", "2"),
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
    )
    elapsed = time.monotonic() - t0
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "did not open within 2 s" in lines[0], p.stderr
    # 2 s of open attempts plus interpreter/runner start-up; an ignored timeout would hang much longer
    assert elapsed < 2 + 15


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--drop", "newest"], "--drop: expected one of latest, oldest, wait"),
        (["--stride", "0"], "--stride: expected an integer >= 1"),
        (["--serve", "nonsense:port"], "--serve: expected HOST:PORT"),
        (["--save", "x.txt"], "--save: expected a .mp4"),
        (["--video-decode", "gpu"], "--video-decode: expected one of auto, hw, sw, found 'gpu'"),
        (["--save", "o.mp4", "--save-preset", "quick"], "--save-preset: expected one of ultrafast"),
    ],
)
def test_bad_options_one_line(bundle: Path, video: Path, args: list[str], needle: str) -> None:
    p = subprocess.run(
        edgecv(str(bundle), "--source", str(video), *args), capture_output=True, text=True, env=env(), timeout=120
    )
    assert p.returncode == 2 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_decode_modes_report_the_decoder_and_hw_without_one_fails(bundle: Path, video: Path) -> None:
    found = {}
    for mode in ("sw", "auto"):
        p = subprocess.run(
            edgecv(str(bundle), "--source", str(video), "--video-decode", mode, "--max-frames", "5", "--json"),
            capture_output=True,
            text=True,
            env=env(),
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        found[mode] = json.loads(p.stdout)["source"]["decoder"]
    assert found["sw"] == "software"
    p = subprocess.run(
        edgecv(str(bundle), "--source", str(video), "--video-decode", "hw", "--max-frames", "5"),
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
    )
    if found["auto"] == "software":  # no hardware decoder here (CI): --decode hw must say so in one line
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "--video-decode hw: expected a hardware video decoder" in p.stderr
    else:  # a machine with VAAPI & co: hw decodes on it
        assert p.returncode == 0, p.stderr


def test_show_without_display_says_why(bundle: Path, video: Path) -> None:
    e = env()
    e.pop("DISPLAY", None)
    e.pop("WAYLAND_DISPLAY", None)
    p = subprocess.run(
        edgecv(str(bundle), "--source", str(video), "--show"), capture_output=True, text=True, env=e, timeout=120
    )
    assert p.returncode == 2 and "--show" in p.stderr and "--serve" in p.stderr


def test_serve_mjpeg_from_cli(bundle: Path, video: Path, tmp_path: Path) -> None:
    import http.client

    port = free_port()
    proc = subprocess.Popen(
        edgecv(
            str(bundle),
            "--source",
            str(video),
            "--loop",
            "--max-fps",
            "25",
            "--serve",
            f"127.0.0.1:{port}",
            "--summary",
            str(tmp_path / "s.json"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        from edgecv.stream.sinks import wait_for_port

        assert wait_for_port("127.0.0.1", port, 60), "the MJPEG server did not come up"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/stream.mjpg")
        r = conn.getresponse()
        assert r.status == 200
        data = b""
        while data.count(b"Content-Type: image/jpeg") < 3:
            chunk = r.read1(65536)
            assert chunk, "stream ended early"
            data += chunk
        conn.close()
        assert data.count(b"\xff\xd8") >= 2  # JPEG start markers
        proc.send_signal(signal.SIGINT)  # Ctrl-C: clean stop too
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["stopped_by"] == "signal SIGINT" and s["sinks"]["MjpegServer"]["parts_sent"] >= 3


# ------------------------------------------------------------------------------------------- network peers
def _run_with_server_restarts(bundle: Path, tmp_path: Path, url: str, start_server) -> dict:
    """Run edgecv on ``url``; after 10 frames kill the server, restart it 1 s later, and require 10 frames
    captured after the restart. Returns the summary."""
    jl, summ = tmp_path / "o.jsonl", tmp_path / "s.json"
    server = start_server()
    proc = subprocess.Popen(
        edgecv(
            str(bundle),
            "--source",
            url,
            "--jsonl",
            str(jl),
            "--summary",
            str(summ),
            "--open-timeout",
            "15",
            "--reconnect-max",
            "10",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        wait_until(lambda: len(jsonl(jl)) >= 10, 90, "10 frames before the drop", proc)
        server.kill()
        server.wait(10)
        time.sleep(1.0)
        t_restart = time.time()
        server = start_server()
        wait_until(lambda: sum(e["ts"] > t_restart for e in jsonl(jl)) >= 10, 90, "10 frames after the restart", proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        for p in (proc, server):
            if p.poll() is None:
                p.kill()
                p.wait(10)
    assert proc.returncode == 0, err
    s = json.loads(summ.read_text())
    assert s["reconnects"] >= 1 and s["stopped_by"] == "signal SIGTERM"
    assert "reconnect attempt" in err and "reconnected" in err  # logged
    return s


@pytest.mark.server
def test_http_mpegts_source_reconnects(bundle: Path, video: Path, tmp_path: Path) -> None:
    require_ffmpeg()
    port = free_port()

    def start() -> subprocess.Popen:
        # -listen 1 serves one client, so a restart is a new server; -re plays at the native rate (live);
        # H.264 with a short GOP: mpeg4-part-2 copied into MPEG-TS lacks in-band headers and cannot be decoded
        return subprocess.Popen(
            [
                "ffmpeg",
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-stream_loop",
                "-1",
                "-i",
                str(video),
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-g",
                "25",
                "-f",
                "mpegts",
                "-listen",
                "1",
                f"http://127.0.0.1:{port}/",
            ],
            stdin=subprocess.DEVNULL,
        )

    s = _run_with_server_restarts(bundle, tmp_path, f"http://127.0.0.1:{port}/", start)
    assert s["policy"] == "latest"  # live source default


RTSP_SERVER = textwrap.dedent("""
    import sys
    import gi
    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(sys.argv[1])
    factory = GstRtspServer.RTSPMediaFactory()
    # rtpjpegpay needs 4:2:0 JPEG, hence format=I420
    factory.set_launch("( videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,framerate=15/1,"
                       "format=I420 ! jpegenc ! rtpjpegpay name=pay0 pt=26 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/test", factory)
    server.attach(None)
    print("ready", flush=True)
    GLib.MainLoop().run()
""")


@pytest.mark.server
def test_rtsp_source_reconnects(bundle: Path, tmp_path: Path) -> None:
    require(
        "GStreamer RTSP server (python3-gi + gst-rtsp-server)",
        has_gst_rtsp(),
        "apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good",
    )
    require_ffmpeg()
    script = tmp_path / "rtsp_server.py"
    script.write_text(RTSP_SERVER)
    port = free_port()

    def start() -> subprocess.Popen:
        p = subprocess.Popen([SYS_PY, str(script), str(port)], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        return p

    _run_with_server_restarts(bundle, tmp_path, f"rtsp://127.0.0.1:{port}/test", start)
