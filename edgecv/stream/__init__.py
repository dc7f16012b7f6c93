"""Run a deployed model on a camera, video file, network stream or image folder (runtime tier, no torch).

``sources`` open and read frames (kinds registered in ``SOURCES``), ``buffer`` bounds the queues with a drop
policy, ``pipeline`` runs the stages in threads (``multi`` several streams on one engine), ``sinks`` write the
annotated video / JSON lines / MJPEG / window / MQTT / predict folders (kinds registered in ``SINKS``), ``metrics``
keeps the numbers, and ``workflow.run_stream`` assembles a whole ``edgecv run`` from its options.
"""

from edgecv.stream.buffer import POLICIES, FrameBuffer
from edgecv.stream.pipeline import StreamConfig, StreamPipeline
from edgecv.stream.sources import Source, SourceSpec, open_source, parse_source

__all__ = [
    "POLICIES",
    "FrameBuffer",
    "Source",
    "SourceSpec",
    "StreamConfig",
    "StreamPipeline",
    "open_source",
    "parse_source",
]
