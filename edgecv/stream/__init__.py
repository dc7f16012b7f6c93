"""Run a deployed model on a camera, video file, network stream or image folder (runtime tier, no torch).

``sources`` open and read frames, ``buffer`` bounds the queues with a drop policy, ``pipeline`` runs the stages
in threads, ``sinks`` write the annotated video / JSON lines / MJPEG / window, ``metrics`` keeps the numbers.
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
