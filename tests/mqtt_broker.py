"""A real Mosquitto broker for tests: started on a free loopback port with a generated config, stoppable and
restartable on the same port (with persistence, so a subscriber's session survives a restart)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None)


def require_mosquitto() -> str:
    path = mosquitto_path()
    if path is None:
        msg = "the mosquitto broker binary is not installed; install it with: apt-get install mosquitto (make system-deps)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {msg}")
        pytest.skip(msg)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    def __init__(self, workdir: Path, listener_conf: str = "allow_anonymous true\n") -> None:
        self.exe = require_mosquitto()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            ""
            # started as root, mosquitto drops to the 'mosquitto' user, which cannot read a 0700 test folder
            + ("user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else "")
            + f"listener {self.port} 127.0.0.1\n{listener_conf}persistence true\n"
            f"persistence_location {self.dir}/\nautosave_interval 1\nmax_queued_messages 100000\n"
            "log_dest stderr\nlog_type error\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean stop saves the persistence file
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class Subscriber:
    """A paho subscriber with a persistent session (QoS 1): it gets what was published while it was away."""

    def __init__(self, port: int, topic: str, client_id: str = "edgecv-test-sub") -> None:
        import threading

        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes]] = []
        self.connects = 0
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.c.reconnect_delay_set(min_delay=1, max_delay=2)

        def on_connect(c, u, f, rc, p=None):  # type: ignore[no-untyped-def]
            c.subscribe(topic, qos=1)
            self.connects += 1
            self._connected.set()

        def on_message(c, u, msg):  # type: ignore[no-untyped-def]
            with self._lock:
                self.messages.append((msg.topic, msg.payload))

        self.c.on_connect = on_connect
        self.c.on_message = on_message
        self.c.connect("127.0.0.1", port, keepalive=5)
        self.c.loop_start()
        assert self._connected.wait(10), "subscriber did not connect"
        time.sleep(0.2)  # the SUBACK

    def wait_count(self, n: int, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= n:
                    break
            time.sleep(0.05)
        time.sleep(0.3)  # duplicates / stragglers
        with self._lock:
            return len(self.messages)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
