"""Name → object registries that fail loudly (torchvision ``models/_api.py``, timm ``_factory.py``).

Entries may be objects or lazy ``"module:attr"`` strings, so that registering a backend does not import
its framework.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from edgecv.errors import ConfigError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection. Duplicate names raise; unknown names raise and list the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T | str] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, obj: T | str | None = None, **meta: Any) -> Any:
        """Register ``obj`` under ``name``; used bare as a decorator (``@reg.register()``) it uses ``obj.__name__``.

        ``obj`` may be a ``"module:attr"`` string, resolved on first :meth:`get`.
        """

        def _add(o: T | str) -> T | str:
            key = name or getattr(o, "__name__", None)
            if not key:
                raise ConfigError(f"{self.kind} registry: cannot register an object without a name")
            if key in self._items:
                raise ConfigError(f"{self.kind} '{key}' is already registered")
            self._items[key] = o
            self._meta[key] = dict(meta)
            return o

        if obj is not None:
            return _add(obj)
        return _add

    def get(self, name: str) -> T:
        """The object registered as ``name``; raises :class:`UnknownNameError` listing the choices."""
        if name not in self._items:
            close = difflib.get_close_matches(name, self._items, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{hint}; expected one of: {', '.join(sorted(self._items)) or '(none)'}"
            )
        item = self._items[name]
        if isinstance(item, str) and ":" in item:
            mod, attr = item.split(":", 1)
            resolved: T = getattr(importlib.import_module(mod), attr)
            self._items[name] = resolved
            return resolved
        return item  # type: ignore[return-value]

    def meta(self, name: str) -> dict[str, Any]:
        """Metadata given at registration (e.g. task, default config)."""
        if name not in self._items:
            self.get(name)  # raises, listing the choices
        return self._meta[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def filter(self, pred: Callable[[str, dict[str, Any]], bool]) -> list[str]:
        return [n for n in self.names() if pred(n, self._meta[n])]
