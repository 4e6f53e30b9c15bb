"""A size-or-age buffer: a batch is ready when it is full or its oldest item has waited long enough.

Pure and single-threaded; the caller passes the clock so tests need no sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(self, max_size: int, max_wait_s: float) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._items: list[T] = []
        self._first_at = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now: float) -> list[T] | None:
        """Buffer an item; return the batch if this item filled it."""
        if not self._items:
            self._first_at = now
        self._items.append(item)
        if len(self._items) >= self.max_size:
            return self.flush()
        return None

    def due(self, now: float) -> list[T] | None:
        """Return the buffered batch if its oldest item has waited `max_wait_s`."""
        if self._items and now - self._first_at >= self.max_wait_s:
            return self.flush()
        return None

    def seconds_until_due(self, now: float) -> float | None:
        """How long until the current batch is due; None when empty."""
        if not self._items:
            return None
        return max(0.0, self._first_at + self.max_wait_s - now)

    def flush(self) -> list[T]:
        """Take everything buffered, ready or not."""
        items, self._items = self._items, []
        return items

    def discard(self, drop: Callable[[T], bool]) -> list[T]:
        """Remove the items for which `drop` is true (e.g. revoked partitions); return them."""
        dropped = [item for item in self._items if drop(item)]
        if dropped:
            self._items = [item for item in self._items if not drop(item)]
        return dropped
