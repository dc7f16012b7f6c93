"""``edgecv run`` with several streams end to end, in subprocesses: --source repeated and cameras.yaml, per-stream
and merged JSON lines, bad input as one line with exit 2 and nothing written, MQTT to a real Mosquitto, and the
live page in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mqtt_broker import Broker, Subscriber, free_port

pytestmark = [pytest.mark.stream, pytest.mark.onnxruntime, pytest.mark.torch]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("b") / "tiny", "classify", size=32).root


def make_video(path: Path, n: int, colour: int) -> Path:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25, (160, 120))
    for i in range(n):
        img = np.zeros((120, 160, 3), np.uint8)
        img[..., colour] = 200
        cv2.circle(img, (10 + 4 * (i % 35), 60), 15, (255, 255, 255), -1)
        w.write(img)
    w.release()
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("v")
    return [make_video(d / f"v{i}.mp4", n, i) for i, n in enumerate((30, 24, 18))]


def edgecv(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgecv", "run", *args]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(edgecv(*args), capture_output=True, text=True, env=env(), timeout=timeout)


def test_three_sources_per_stream_and_merged_jsonl(bundle: Path, videos: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "o"
    p = run(
        str(bundle),
        "--source",
        f"red={videos[2]}",
        "--source",
        str(videos[1]),
        "--source",
        f"blue={videos[0]}",
        "--jsonl",
        str(out / "{name}.jsonl"),
        "--json",
        "--batch-wait-ms",
        "20",
        "--no-record",
    )
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    want = {"red": 18, "cam1": 24, "blue": 30}
    assert {n: d["frames_processed"] for n, d in s["streams"].items()} == want
    assert s["total"]["frames_processed"] == 72 and s["engine"]["mean_batch"] > 1
    assert s["total"]["slowest_stage"]["stage"] in ("decode", "preprocess", "infer", "post")
    for name, n in want.items():
        ev = [json.loads(x) for x in (out / f"{name}.jsonl").read_text().splitlines()]
        assert [e["frame"] for e in ev] == list(range(n)) and {e["stream"] for e in ev} == {name}
    merged = tmp_path / "all.jsonl"
    yaml_file = tmp_path / "cams.yaml"
    yaml_file.write_text(
        f"streams:\n  - name: a\n    file: {videos[0]}\n    max_fps: 1000\n"
        f"  - name: b\n    file: {videos[1]}\n    jsonl: {tmp_path}/{{name}}-own.jsonl\n"
    )
    p = run(str(bundle), "--sources", str(yaml_file), "--jsonl", str(merged), "--no-record")
    assert p.returncode == 0, p.stderr
    ev = [json.loads(x) for x in merged.read_text().splitlines()]
    assert len([e for e in ev if e["stream"] == "a"]) == 30 and len([e for e in ev if e["stream"] == "b"]) == 24
    assert len((tmp_path / "b-own.jsonl").read_text().splitlines()) == 24
    assert "2 streams" in p.stdout and "slowest stage in total" in p.stdout


@pytest.mark.parametrize(
    "yaml_text,needle",
    [
        ("streams:\n  - name: a\n    file: {v}\n    drop: never\n", "streams.0.drop: Input should be"),
        (
            "streams:\n  - name: a\n    file: {v}\n  - name: a\n    file: {v}\n",
            "expected unique stream names, found 'a' twice",
        ),
        ("streams:\n  - name: a\n    file: /nonexistent/x.mp4\n", "stream 'a': --source: expected an existing file"),
        ("cameras:\n  - name: a\n", "cams.yaml: streams: Field required"),
    ],
)
def test_bad_cameras_yaml_one_line_exit_2_nothing_written(
    bundle: Path, videos: list[Path], tmp_path: Path, yaml_text: str, needle: str
) -> None:
    f = tmp_path / "cams.yaml"
    f.write_text(yaml_text.format(v=videos[0]))
    out = tmp_path / "out"
    p = run(str(bundle), "--sources", str(f), "--jsonl", str(out / "{name}.jsonl"), "--summary", str(out / "s.json"))
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], p.stderr
    assert not out.exists()


def test_duplicate_names_unreachable_broker_and_require_all(bundle: Path, videos: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    p = run(str(bundle), "--source", f"a={videos[0]}", "--source", f"a={videos[1]}", "--jsonl", str(out))
    assert p.returncode == 2 and "expected unique stream names, found 'a' twice" in p.stderr
    port = free_port()
    p = run(
        str(bundle),
        "--source",
        str(videos[0]),
        "--mqtt",
        f"mqtt://127.0.0.1:{port}/edgecv/{{stream}}",
        "--jsonl",
        str(out),
    )
    assert p.returncode == 2, p.stderr
    assert [ln for ln in p.stderr.splitlines() if ln.strip()] == [
        f"error: --mqtt: expected a broker at 127.0.0.1:{port}, found none (Connection refused)"
    ]
    assert not out.exists()
    dead = f"http://127.0.0.1:{free_port()}/live.ts"
    p = run(
        str(bundle),
        "--source",
        str(videos[0]),
        "--source",
        f"gone={dead}",
        "--open-timeout",
        "1",
        "--require-all",
        "--jsonl",
        str(out),
    )
    assert p.returncode == 2 and "--require-all: stream 'gone' did not open" in p.stderr, p.stderr
    assert not out.exists() or out.read_text() == ""
    p = run(
        str(bundle),
        "--source",
        str(videos[0]),
        "--source",
        f"gone={dead}",
        "--open-timeout",
        "1",
        "--json",
        "--no-record",
    )
    assert p.returncode == 0, p.stderr
    assert "stream 'gone' did not open" in p.stderr
    s = json.loads(p.stdout)
    assert s["streams"]["cam0"]["frames_processed"] == 30 and s["failed"] == ["gone"]


@pytest.mark.server
def test_mqtt_messages_equal_frames_times_streams(bundle: Path, videos: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("paho.mqtt.client")
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        sub = Subscriber(broker.port, "cams/#", client_id="sub-cli")
        p = run(
            str(bundle),
            "--source",
            f"x={videos[0]}",
            "--source",
            f"y={videos[1]}",
            "--mqtt",
            f"{broker.url}/cams/{{stream}}",
            "--mqtt-qos",
            "1",
            "--json",
            "--no-record",
        )
        assert p.returncode == 0, p.stderr
        s = json.loads(p.stdout)
        got = sub.wait_count(54)
        sub.close()
    finally:
        broker.stop()
    assert s["total"]["frames_processed"] == 54 and got == 54
    mq = s["sinks"]["MqttSink"]
    assert mq["published"] == 54 and mq["acked"] == 54 and mq["dropped"] == 0
    ev = [json.loads(pl) for _, pl in sub.messages]
    for name, n in (("x", 30), ("y", 24)):
        mine = [e for e in ev if e["stream"] == name]
        assert [e["seq"] for e in mine] == list(range(n))
        assert all(e["results"][0]["task"] == "classify" and "e2e" in e["latency_ms"] for e in mine)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (make system-deps)")
def test_live_page_in_headless_chromium(bundle: Path, videos: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("websocket")
    from browser import Page

    port = free_port()
    proc = subprocess.Popen(
        edgecv(
            str(bundle),
            "--source",
            f"left={videos[0]}",
            "--source",
            f"right={videos[1]}",
            "--loop",
            "--max-fps",
            "10",
            "--serve",
            f"127.0.0.1:{port}",
            "--summary",
            str(tmp_path / "s.json"),
            "-q",
            "--no-record",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        from edgecv.stream.sinks import wait_for_port

        assert wait_for_port("127.0.0.1", port, 120), proc.stderr.read() if proc.poll() is not None else "no port"
        with Page(width=1000, height=700) as page:
            page.open_url(f"http://127.0.0.1:{port}/")
            page.wait_for("Array.from(document.images).every(i => i.naturalWidth > 0)", 60)
            sizes = page.evaluate("Array.from(document.images).map(i => [i.alt, i.naturalWidth, i.naturalHeight])")
            first = int(page.wait_for("Number(document.getElementById('t-frames').textContent) || 0", 30))
            time.sleep(2.0)
            later = int(page.evaluate("Number(document.getElementById('t-frames').textContent) || 0"))
            fps = page.evaluate("document.getElementById('s-left-fps_out').textContent")
            updates = int(page.evaluate("Number(document.body.dataset.updates || 0)"))
            shot = page.screenshot(tmp_path / "live.png")
            errors = list(page.errors)
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert sorted(sizes) == [["left", 160, 120], ["right", 160, 120]]
    assert later > first > 0 and updates >= 3 and float(fps) > 0
    assert errors == []
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["stopped_by"] == "signal SIGINT" and s["sinks"]["LivePage"]["parts_sent"] > 0
    keep = ROOT / "out" / "test-live-page.png"  # left for a look; out/ is ignored by git
    keep.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, keep)
