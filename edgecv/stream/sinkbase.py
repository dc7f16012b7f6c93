"""What every sink of ``edgecv run`` is: the :class:`Sink` base and the one JSON encoding of an event.

A leaf module of ``edgecv.stream``: the sink implementations (``sinks.py``, ``live.py``, ``mqtt.py``,
``predict.py``) and the pipelines import it, and it imports none of them, so the registry in ``sinks.py`` can
import the implementations it registers without an import cycle.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


class Sink:
    """Base: ``needs_frame`` says whether the sink wants the annotated image (else only the event).

    Every sink has ``write(frame_bgr, event)`` and ``close()``; ``close`` always finalizes (the pipeline calls it on
    end of stream, on error and on Ctrl-C / SIGTERM).
    """

    needs_frame = True
    #: the sink takes the decoded results too (label files, masks): the pipeline calls :meth:`write_results`
    needs_results = False

    def write(self, frame: np.ndarray | None, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def write_results(self, frame: np.ndarray | None, event: dict[str, Any], results: list[Any]) -> None:
        """Like :meth:`write`, with the frame's decoded results (``tasks`` Result objects)."""
        self.write(frame, event)

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {}


def json_default(o: Any) -> Any:
    """``json.dumps``'s ``default`` for events: numpy scalars and arrays as Python numbers and lists, else ``str``."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def event_json(event: dict[str, Any]) -> str:
    """One event as compact JSON (the JSON-lines file and the MQTT payload use the same encoding)."""
    return json.dumps(event, separators=(",", ":"), default=json_default)
