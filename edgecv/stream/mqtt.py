"""MQTT sink: one message per processed frame per stream, to a topic with the stream's name in it (paho-mqtt).

``--mqtt mqtt://[user:password@]host[:1883]/edgecv/{stream}`` (``mqtts://`` for TLS, port 8883 by default).
The payload is the run's JSON event for the frame (see README "MQTT message schema"): ``stream``, ``seq``
(per stream, from 0, no gaps unless messages were dropped), ``frame``, ``ts`` (capture, Unix seconds),
``ts_result``, ``batch``, ``results`` and ``latency_ms``.

Delivery: :meth:`MqttSink.write` never blocks the pipeline. Messages wait in a bounded outgoing buffer
(``buffer`` messages) that a sender thread empties while the broker is connected; paho reconnects with backoff
when the broker goes away, and meanwhile the buffer fills. When it is full the *oldest* message is dropped and
counted (``dropped``; ``dropped_while_away`` those dropped while disconnected), so a run loses at most what
those counters say and the newest results are the ones kept. QoS 1 messages that were sent but not
acknowledged when the connection broke are sent again after the reconnect (a subscriber may see a duplicate,
never a gap it is not told about).
"""

from __future__ import annotations

import collections
import logging
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.errors import ConfigError, SinkError
from edgecv.stream.sinkbase import Sink, event_json

log = logging.getLogger("edgecv.stream")

PASSWORD_ENV = "EDGECV_MQTT_PASSWORD"


@dataclass
class MqttTarget:
    host: str
    port: int
    topic: str
    tls: bool
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://[user[:pass]@]host[:port]/topic/{stream}`` → :class:`MqttTarget` (one line when malformed)."""
    u = urllib.parse.urlsplit(url.strip())
    if u.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"--mqtt: expected mqtt://HOST[:PORT]/TOPIC or mqtts://…, found '{url}'")
    try:
        port = u.port
    except ValueError:
        port = -1
    if not u.hostname or port == -1:
        raise ConfigError(f"--mqtt: expected mqtt://HOST[:PORT]/TOPIC, found '{url}'")
    topic = urllib.parse.unquote(u.path.lstrip("/"))
    if not topic:
        raise ConfigError(
            f"--mqtt: expected a topic after the host (e.g. mqtt://{u.hostname}/edgecv/{{stream}}), found '{url}'"
        )
    if "+" in topic or "#" in url:  # urlsplit takes "#…" for a fragment
        raise ConfigError(f"--mqtt: expected a topic without wildcards (+, #), found '{url.split('/', 3)[-1]}'")
    tls = u.scheme == "mqtts"
    return MqttTarget(
        u.hostname,
        port or (8883 if tls else 1883),
        topic,
        tls,
        urllib.parse.unquote(u.username) if u.username else None,
        urllib.parse.unquote(u.password) if u.password else None,
    )


class MqttSink(Sink):
    """Publishes every frame's event to ``topic`` (``{stream}`` replaced by the stream name).

    Args:
        url: ``mqtt://…`` / ``mqtts://…`` (see :func:`parse_mqtt_url`).
        qos: 0 (at most once) or 1 (at least once).
        username, password: override those in the URL (the password also from ``EDGECV_MQTT_PASSWORD``).
        ca, cert, key: TLS: CA bundle to trust, client certificate and key (mqtts, or any of them given).
        insecure: TLS without checking the broker's host name (self-signed test brokers).
        buffer: most messages waiting to be sent (while the broker is away); the oldest are dropped beyond it.
        connect_timeout: seconds for the first connection; an unreachable broker at start is one line.
        client_id: MQTT client id (default: edgecv-<random>).
    """

    needs_frame = False

    def __init__(
        self,
        url: str,
        qos: int = 0,
        username: str | None = None,
        password: str | None = None,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        insecure: bool = False,
        buffer: int = 1000,
        connect_timeout: float = 5.0,
        client_id: str | None = None,
        keepalive: int = 10,
    ) -> None:
        import os

        if qos not in (0, 1):
            raise ConfigError(f"--mqtt-qos: expected 0 or 1, found {qos}")
        if buffer < 1:
            raise ConfigError(f"--mqtt-buffer: expected an integer >= 1, found {buffer}")
        self.target = parse_mqtt_url(url)
        self.qos = int(qos)
        self.buffer = int(buffer)
        self.username = username or self.target.username
        self.password = password or self.target.password or os.environ.get(PASSWORD_ENV) or None
        mqtt = lazy_import("paho.mqtt.client", extra="mqtt")
        self._mqtt = mqtt
        cid = client_id or f"edgecv-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
        # paho holds only what is in flight (QoS 1: sent, not yet acknowledged); everything else waits in ours
        self.inflight = max(1, min(20, self.buffer))
        self.client.max_inflight_messages_set(self.inflight)
        self.client.max_queued_messages_set(self.inflight)
        self.client.reconnect_delay_set(min_delay=1, max_delay=8)
        if self.username:
            self.client.username_pw_set(self.username, self.password)
        self.tls = self.target.tls or bool(ca or cert)
        if self.tls:
            try:
                self.client.tls_set(
                    ca_certs=ca,
                    certfile=cert,
                    keyfile=key,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ValueError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"--mqtt TLS: expected readable CA/certificate/key files, found an error ({exc})"
                ) from exc
            if insecure:
                self.client.tls_insecure_set(True)
        self._cv = threading.Condition()
        self._q: collections.deque[tuple[str, bytes]] = collections.deque()
        self.connected = False
        self.published = 0  # handed to paho while connected
        self.acked = 0  # QoS 1: acknowledged by the broker (QoS 0: written to the socket)
        self.dropped = 0
        self.dropped_while_away = 0
        self.disconnects = 0
        self.reconnects = 0
        self._ever_connected = False
        self._closed = False
        self._last_rc: Any = None
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        t = self.target
        try:
            self.client.connect(t.host, t.port, keepalive=keepalive)
        except ssl.SSLError as exc:
            raise SinkError(
                f"--mqtt: expected a TLS broker at {t.host}:{t.port} whose certificate checks out, "
                f"found a failed handshake ({getattr(exc, 'reason', None) or exc})"
            ) from exc
        except (OSError, ValueError) as exc:
            raise SinkError(
                f"--mqtt: expected a broker at {t.host}:{t.port}, found none ({getattr(exc, 'strerror', None) or exc})"
            ) from exc
        self.client.loop_start()
        with self._cv:
            self._cv.wait_for(lambda: self.connected or self._last_rc is not None, connect_timeout)
        if not self.connected:
            self.client.loop_stop()
            found = f"a refusal ({self._last_rc})" if self._last_rc is not None else "no acknowledgement"
            raise SinkError(
                f"--mqtt: expected the broker at {t.host}:{t.port} to accept the connection within "
                f"{connect_timeout:g} s, found {found}"
            )
        self._sender = threading.Thread(target=self._send_loop, name="edgecv-mqtt", daemon=True)
        self._sender.start()

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        with self._cv:
            if getattr(rc, "is_failure", False):
                self._last_rc = str(rc)
            else:
                if self._ever_connected:
                    self.reconnects += 1
                    log.warning("mqtt: reconnected to %s:%d", self.target.host, self.target.port)
                self.connected = True
                self._ever_connected = True
            self._cv.notify_all()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        with self._cv:
            if self.connected and not self._closed:
                self.disconnects += 1
                log.warning(
                    "mqtt: broker %s:%d went away (%s); buffering up to %d messages",
                    self.target.host,
                    self.target.port,
                    rc,
                    self.buffer,
                )
            self.connected = False
            self._cv.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any = None, props: Any = None) -> None:
        with self._cv:
            self.acked += 1

    # ------------------------------------------------------------------ sink
    def topic_for(self, stream: str) -> str:
        return self.target.topic.replace("{stream}", stream)

    def write(self, frame: np.ndarray | None, event: dict[str, Any]) -> None:
        payload = event_json(event).encode()
        topic = self.topic_for(str(event.get("stream", "default")))
        with self._cv:
            if self._closed:
                return
            if len(self._q) >= self.buffer:
                self._q.popleft()
                self.dropped += 1
                if not self.connected:
                    self.dropped_while_away += 1
            self._q.append((topic, payload))
            self._cv.notify_all()

    def _send_loop(self) -> None:
        mqtt = self._mqtt
        while True:
            with self._cv:
                self._cv.wait_for(
                    lambda: (
                        (self._closed and not self._q)
                        or (self.connected and bool(self._q))
                        or (self._closed and not self.connected)
                    ),
                    0.5,
                )
                if self._closed and (not self._q or not self.connected):
                    return
                if not (self.connected and self._q):
                    continue
                # taken off the queue while it is handed to paho: write() must not drop (and count) a message that
                # is being published, which paho then delivers (a 'dropped' message that arrived)
                topic, payload = self._q.popleft()
            info = self.client.publish(topic, payload, qos=self.qos)
            # QoS 1 while the connection just broke: paho keeps the message and sends it after the reconnect
            taken = info.rc == mqtt.MQTT_ERR_SUCCESS or (self.qos > 0 and info.rc == mqtt.MQTT_ERR_NO_CONN)
            with self._cv:
                if taken:
                    self.published += 1
                elif len(self._q) >= self.buffer:  # the buffer filled meanwhile: this one is the oldest
                    self.dropped += 1
                    if not self.connected:
                        self.dropped_while_away += 1
                else:
                    self._q.appendleft((topic, payload))
            if not taken:
                # QoS 0 and not connected (any more), or paho's in-flight window full: keep it, retry shortly
                time.sleep(0.02)

    def close(self, drain_timeout: float = 10.0) -> None:
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify_all()
        self._sender.join(timeout=drain_timeout)
        # QoS 1: wait (bounded) for the broker's acknowledgements of what was published
        deadline = time.monotonic() + drain_timeout
        while self.connected and self.qos > 0 and self.acked < self.published and time.monotonic() < deadline:
            time.sleep(0.02)
        with self._cv:
            left = len(self._q)
            if left:
                self.dropped += left
                if not self.connected:
                    self.dropped_while_away += left
                self._q.clear()
        self.client.disconnect()
        self.client.loop_stop()

    def describe(self) -> dict[str, Any]:
        with self._cv:
            return {
                "broker": f"{self.target.host}:{self.target.port}",
                "topic": self.target.topic,
                "qos": self.qos,
                "tls": self.tls,
                "buffer": self.buffer,
                "published": self.published,
                "acked": self.acked,
                "dropped": self.dropped,
                "dropped_while_away": self.dropped_while_away,
                "disconnects": self.disconnects,
                "reconnects": self.reconnects,
                "queued": len(self._q),
            }
