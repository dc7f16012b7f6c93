"""Every registered stream source kind and sink kind, checked without anyone writing a test for it: the tests are
parametrized over ``SOURCES`` and ``SINKS`` and use what each kind registers (an example, and for sinks a check of
what it wrote), so a new kind is tested the moment it is registered."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_stream_unit import FakeRunner, contract

from edgecv.errors import ConfigError, SourceError
from edgecv.stream import StreamConfig, StreamPipeline, open_source, parse_source
from edgecv.stream.multi import MultiStreamPipeline, StreamInput
from edgecv.stream.sinks import SINKS, JsonlSink, SinkContext
from edgecv.stream.sources import SOURCES, Source, source_kinds
from edgecv.stream.workflow import RunOptions

pytestmark = pytest.mark.stream


def test_registries_hold_the_built_in_kinds() -> None:
    assert {"camera", "file", "url", "gst", "folder", "glob"} <= set(SOURCES.names())
    assert {"video", "images", "labels", "jsonl", "mjpeg", "live", "mqtt", "window"} <= set(SINKS.names())
    assert [k.order for k in source_kinds()] == sorted(k.order for k in source_kinds())


@pytest.mark.parametrize("name", SOURCES.names())
def test_every_source_kind_parses_its_example_and_opens_or_fails_in_one_line(name: str, tmp_path: Path) -> None:
    kind = SOURCES.get(name)
    example = kind.example(tmp_path)
    spec = parse_source(example, gst=kind.flag == "--gst")
    assert spec.kind == name and spec.live == kind.live and spec.network == kind.network
    src = open_source(spec)
    assert isinstance(src, Source) and src.spec == spec
    if not kind.opens_anywhere:  # a device, a server, GStreamer: opens here, or says in one line why not
        try:
            src.open(2.0)
        except SourceError as exc:
            assert "\n" not in str(exc) and str(exc)
            return
        status, frame = src.read()
        src.close()
        assert status == "ok" and frame is not None and frame.ndim == 3
        return
    out = tmp_path / "events.jsonl"
    pipe = StreamPipeline(src, FakeRunner(), contract(), [JsonlSink(out)], StreamConfig(drop="wait"))
    with pipe.runner:
        s = pipe.run(install_signals=False)
    events = [json.loads(x) for x in out.read_text().splitlines()]
    assert s["frames_processed"] == len(events) == 3 and s["source"]["kind"] == name
    assert [e["frame"] for e in events] == [0, 1, 2]
    assert all(p.exists() for p in spec.inputs())  # what outputs are kept out of
    if name in ("folder", "glob"):
        assert [e["file"] for e in events] == ["img0.png", "img1.png", "img2.png"]


def _broker_or_skip(tmp_path: Path):  # type: ignore[no-untyped-def]
    pytest.importorskip("paho.mqtt.client")
    from mqtt_broker import Broker

    b = Broker(tmp_path / "broker")
    b.start()
    return b


@pytest.mark.parametrize("name", SINKS.names())
def test_every_sink_kind_writes_what_the_run_saw(name: str, tmp_path: Path) -> None:
    kind = SINKS.get(name)
    images = Path(SOURCES.get("folder").example(tmp_path / "in"))
    values = kind.example(tmp_path / "out")
    broker = None
    if kind.needs == "mqtt broker":
        broker = _broker_or_skip(tmp_path)
        values = {k: str(v).replace("{port}", str(broker.port)) for k, v in values.items()}
    try:
        opts = RunOptions(bundle=tmp_path, sources=[str(images)], **values)
        v = getattr(opts, kind.option)
        mode = "single" if "single" in kind.modes else "multi"
        assert kind.applies(v, mode), f"{name}: its example does not ask for it"
        ctx = SinkContext(values, opts, contract(), None if mode == "single" else "s0", ["s0"], [images])
        if kind.precheck is not None:
            kind.precheck(v, kind.flag, ctx)
        if kind.needs == "display" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            with pytest.raises(ConfigError) as ei:
                kind.build(v, ctx)
            assert "\n" not in str(ei.value) and kind.flag in str(ei.value)
            return
        sink = kind.build(v, ctx)
        log = tmp_path / "events.jsonl"
        runner = FakeRunner()
        src = open_source(parse_source(str(images)))
        if mode == "single":
            pipe: StreamPipeline | MultiStreamPipeline = StreamPipeline(
                src, runner, contract(), [sink, JsonlSink(log)], StreamConfig(drop="wait")
            )
        else:
            pipe = MultiStreamPipeline(
                [StreamInput("s0", src, StreamConfig(drop="wait"))], runner, contract(), [sink, JsonlSink(log)]
            )
        with runner:
            s = pipe.run(install_signals=False)
        events = [json.loads(x) for x in log.read_text().splitlines()]
        assert s["frames_processed"] == len(events) == 3
        kind.check(sink, events, tmp_path / "out")
    finally:
        if broker is not None:
            broker.stop()
