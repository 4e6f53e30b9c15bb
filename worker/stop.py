"""The request to stop: set by SIGTERM / SIGINT, remembering when, because the drain deadline
counts from the signal, not from the end of the loop step it interrupted."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("streamclf")


class StopRequest(threading.Event):
    """An event that remembers when it was first set (`time.monotonic()`)."""

    def __init__(self) -> None:
        super().__init__()
        self.requested_at: float | None = None

    def set(self) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()
        super().set()


def stop_on_signals(stop: Callable[[], None]) -> None:
    """Call `stop` on SIGTERM and SIGINT."""

    def handler(signum: int, _frame: Any) -> None:
        stop()
        # Logged from another thread: a handler that writes to a stream the interrupted code
        # was writing to raises "reentrant call".
        threading.Thread(target=log.info, args=("received %s: stopping",
                                                signal.Signals(signum).name)).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
