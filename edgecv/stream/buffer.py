"""A bounded frame buffer with a drop policy, shared by the capture thread and the pipeline stages.

- ``latest``: when full, evict the oldest item to make room (inference always sees the newest frame; live default).
- ``oldest``: when full, drop the incoming item (keep what is queued).
- ``wait``: when full, block the producer (never drop; default for files and folders).

The buffer never holds more than ``capacity`` items; :attr:`high_water` records the most it ever held, so a
test (or a soak run) can check the bound.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

from edgecv.errors import ConfigError

T = TypeVar("T")
Policy = Literal["latest", "oldest", "wait"]
POLICIES: tuple[str, ...] = ("latest", "oldest", "wait")


class FrameBuffer(Generic[T]):
    """Thread-safe bounded FIFO with a drop policy. ``get`` returns None once closed and drained."""

    def __init__(self, capacity: int = 2, policy: str = "wait", name: str = "buffer") -> None:
        if policy not in POLICIES:
            raise ConfigError(f"--drop: expected one of {', '.join(POLICIES)}, found '{policy}'")
        if capacity < 1:
            raise ConfigError(f"{name} capacity: expected >= 1, found {capacity}")
        self.capacity = int(capacity)
        self.policy = policy
        self.name = name
        self._q: collections.deque[T] = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.put_count = 0
        self.high_water = 0
        # called (outside the lock) after every put and on close: a consumer of several buffers waits on one signal
        self.on_change: Callable[[], None] | None = None

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Add ``item`` by the policy. False when it was not added (``oldest`` dropped it, closed, or timed out)."""
        with self._cv:
            if self._closed:
                return False
            if len(self._q) >= self.capacity:
                if self.policy == "latest":
                    self._q.popleft()
                    self.dropped += 1
                elif self.policy == "oldest":
                    self.dropped += 1
                    return False
                else:
                    ok = self._cv.wait_for(lambda: self._closed or len(self._q) < self.capacity, timeout)
                    if not ok or self._closed:
                        return False
            self._q.append(item)
            self.put_count += 1
            self.high_water = max(self.high_water, len(self._q))
            self._cv.notify_all()
        if self.on_change is not None:
            self.on_change()
        return True

    def get(self, timeout: float | None = None) -> T | None:
        """The next item; None when the buffer is closed and empty (or on timeout)."""
        with self._cv:
            self._cv.wait_for(lambda: self._closed or bool(self._q), timeout)
            if not self._q:
                return None
            item = self._q.popleft()
            self._cv.notify_all()
            return item

    def close(self) -> None:
        """No more puts; consumers drain what is queued, then get None."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self.on_change is not None:
            self.on_change()

    def abort(self) -> int:
        """Close and discard what is queued (an error stops the pipeline); returns how many were discarded."""
        with self._cv:
            n = len(self._q)
            self._q.clear()
            self._closed = True
            self._cv.notify_all()
        if self.on_change is not None:
            self.on_change()
        return n

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def done(self) -> bool:
        """Closed and drained: no item will ever come out again."""
        with self._cv:
            return self._closed and not self._q

    def __len__(self) -> int:
        with self._cv:
            return len(self._q)

    def stats(self) -> dict[str, int | str]:
        return {
            "policy": self.policy,
            "capacity": self.capacity,
            "high_water": self.high_water,
            "dropped": self.dropped,
            "put": self.put_count,
        }
