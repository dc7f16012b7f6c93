#!/usr/bin/env python3
"""A multi-stream ``edgecv run --mqtt`` against a local Mosquitto that is stopped and restarted mid-run: messages
the subscriber received against frames processed, and the dropped count the run reports (issue 14).

    python scripts/mqtt_restart_soak.py BUNDLE --videos a.mp4 b.mp4 [--seconds 120] [--outage 10] [--buffer 200]

The streams are files looped at ``--fps`` (a live-like rate). The broker runs with persistence and the
subscriber with a persistent QoS 1 session, so what the broker accepted reaches it across the restart; the
check is ``received == processed - dropped`` (duplicates from QoS 1 resends counted once).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(conf: Path, port: int) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return p
        except OSError:
            time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


def main() -> None:
    import paho.mqtt.client as mqtt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--videos", nargs="+", required=True)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--outage", type=float, default=10, help="seconds the broker stays down")
    ap.add_argument("--buffer", type=int, default=200)
    ap.add_argument("--fps", type=float, default=10)
    ap.add_argument("--backend", default="onnxruntime")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgecv-mqtt-"))
    port = free_port()
    conf = tmp / "mosquitto.conf"
    as_root = "user root\n" if os.geteuid() == 0 else ""  # else mosquitto drops to a user that cannot write tmp
    conf.write_text(
        as_root + f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {tmp}/\n"
        "max_queued_messages 1000000\n"
    )
    broker = start_broker(conf, port)
    got: list[bytes] = []
    lock = threading.Lock()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edgecv-soak-sub", clean_session=False)
    sub.reconnect_delay_set(1, 2)
    sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe("edgecv/#", qos=1)

    def on_message(c, u, m):  # type: ignore[no-untyped-def]
        with lock:
            got.append(m.payload)

    sub.on_message = on_message
    sub.connect("127.0.0.1", port, keepalive=5)
    sub.loop_start()
    time.sleep(0.5)
    srcs = [x for i, v in enumerate(a.videos) for x in ("--source", f"s{i}={v}")]
    cmd = [
        sys.executable,
        "-m",
        "edgecv",
        "run",
        a.bundle,
        "-b",
        a.backend,
        *srcs,
        "--loop",
        "--max-fps",
        str(a.fps),
        "--mqtt",
        f"mqtt://127.0.0.1:{port}/edgecv/{{stream}}",
        "--mqtt-qos",
        "1",
        "--mqtt-buffer",
        str(a.buffer),
        "--summary",
        str(tmp / "summary.json"),
        "-q",
        "--no-record",
    ]
    print("command:", " ".join(cmd))
    run = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    down_at = a.seconds * 0.4
    time.sleep(down_at)
    broker.send_signal(signal.SIGTERM)
    broker.wait()
    print(f"broker stopped at {down_at:.0f} s for {a.outage:.0f} s")
    time.sleep(a.outage)
    broker = start_broker(conf, port)
    time.sleep(max(1.0, a.seconds - down_at - a.outage))
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    if run.returncode != 0:
        raise SystemExit(f"edgecv run failed: {err[-800:]}")
    time.sleep(5)  # the rest of the queued messages
    sub.loop_stop()
    broker.send_signal(signal.SIGTERM)
    broker.wait()
    s = json.loads((tmp / "summary.json").read_text())
    mq = s["sinks"]["MqttSink"]
    unique = {(e["stream"], e["seq"]) for e in (json.loads(p) for p in got)}
    processed = s["total"]["frames_processed"]
    per = ", ".join(f"{n} {d['frames_processed']}" for n, d in s["streams"].items())
    print(f"streams {len(s['streams'])}, run {s['total']['duration_s']:.1f} s, frames processed {processed} ({per})")
    print(
        f"mqtt: published {mq['published']}, acked {mq['acked']}, dropped {mq['dropped']} (while away "
        f"{mq['dropped_while_away']}), disconnects {mq['disconnects']}, reconnects {mq['reconnects']}, "
        f"buffer {mq['buffer']}"
    )
    print(
        f"subscriber: {len(got)} messages, {len(unique)} unique; processed - dropped = {processed - mq['dropped']}"
        f" -> {'OK' if len(unique) == processed - mq['dropped'] else 'MISMATCH'}"
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
