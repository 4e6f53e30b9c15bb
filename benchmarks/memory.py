"""Peak resident memory of the worker process while it drains a backlog of short messages.

The peak is /proc/PID/status VmHWM read right after the backlog is drained. The worker holds
at most `batching.max_in_flight` records, so the peak should not grow with the backlog.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import short_messages
from benchmarks.throughput import session


def peak_rss(bootstrap: str, backlogs: Sequence[int], big_in_flight: int | None = 20_000,
             log_dir: Path | None = None) -> dict[str, Any]:
    """Peak RSS for each backlog size at the default max_in_flight, and (largest backlog) with a
    larger max_in_flight, to show which one the peak follows."""
    runs = []
    plan: list[tuple[int, dict[str, Any]]] = [(n, {}) for n in backlogs]
    if big_in_flight:
        plan.append((max(backlogs), {"batching.max_in_flight": big_in_flight}))
    for n, settings in plan:
        res = session(bootstrap, settings, short_messages(n), read_outputs=False,
                      log_dir=log_dir)
        runs.append({
            "backlog": n,
            "max_in_flight": settings.get("batching.max_in_flight", 2000),
            "rss_at_ready_mb": _mb(res.get("rss_at_ready_kb")),
            "peak_rss_mb": _mb(res.get("peak_rss_kb")),
            "drain_s": res.get("ready_to_drained_s"),
            "error": res.get("error"),
        })
    default_runs = [r for r in runs if r["max_in_flight"] == 2000]
    return {"runs": runs,
            "peak_rss_mb": max((r["peak_rss_mb"] or 0) for r in default_runs)}


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)
