"""End-to-end latency at offered loads below the worker's throughput, and the batching grid.

Latency is the output record's timestamp (set when the worker sends the result) minus the input
record's timestamp (set when the load generator sent it); both clocks are this machine's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import FAST_FETCH, Message, repeated
from benchmarks.throughput import session

LOAD_FRACTIONS = (0.25, 0.5, 0.8)


def load_sweep(bootstrap: str, messages: Sequence[Message], worker_msgs_per_s: float,
               phase_seconds: float, settings: dict[str, Any] | None = None,
               log_dir: Path | None = None) -> dict[str, Any]:
    """One worker; a short backlog to warm it, then one paced phase per load fraction."""
    settings = settings or {}
    loads = [round(f * worker_msgs_per_s, 1) for f in LOAD_FRACTIONS]
    res = session(bootstrap, settings, repeated(messages, 1, "b"), phases=loads,
                  phase_messages=messages, phase_seconds=phase_seconds, batch_times=True,
                  log_dir=log_dir)
    for fraction, phase in zip(LOAD_FRACTIONS, res["phases"], strict=True):
        phase["load_fraction"] = fraction
    return {
        "worker_msgs_per_s_basis": worker_msgs_per_s,
        "phase_seconds": phase_seconds,
        "settings": settings,
        "phases": res["phases"],
        "batch_times": res.get("batch_times"),
        "worker_histograms": res.get("worker_histograms"),
    }


def grid(bootstrap: str, messages: Sequence[Message], offered_msgs_per_s: float,
         waits_ms: Sequence[float], sizes: Sequence[int], phase_seconds: float,
         log_dir: Path | None = None) -> list[dict[str, Any]]:
    """For each (max_wait_ms, max_batch_size): backlog throughput and p99 at a fixed load."""
    points = []
    for wait in waits_ms:
        for size in sizes:
            settings = {**GRID_BASE, "batching.max_wait_ms": wait,
                        "batching.max_batch_size": size}
            res = session(bootstrap, settings, repeated(messages, 1, "b"),
                          phases=[offered_msgs_per_s], phase_messages=messages,
                          phase_seconds=phase_seconds, batch_times=True, log_dir=log_dir)
            phase = res["phases"][0] if res["phases"] else {}
            points.append({
                "max_wait_ms": wait,
                "max_batch_size": size,
                "msgs_per_s": res.get("drain", {}).get("msgs_per_s"),
                "offered_msgs_per_s": offered_msgs_per_s,
                "p50_ms": phase.get("p50_ms"),
                "p99_ms": phase.get("p99_ms"),
                "batch_p99_ms": (phase.get("batch_times") or {}).get("p99_ms"),
            })
    return points


# Settings and worker_proc flags compared at half load: one inference lane, the consumer's fetch
# wait, batch coalescing, and reading in a process.
VARIANTS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "model.lanes: 1": ({"model.lanes": 1}, ()),
    "fetch_max_wait_ms: 10": ({"kafka.consumer": FAST_FETCH}, ()),
    "fetch_max_wait_ms: 10, model.threads: 1": (
        {"kafka.consumer": FAST_FETCH, "model.threads": 1}, ()),
    "fetch_max_wait_ms: 10, model.threads: 1, coalescing batches": (
        {"kafka.consumer": FAST_FETCH, "model.threads": 1}, ("--coalesce",)),
    "input.decode_processes: 1": ({"input.decode_processes": 1}, ()),
}
# The grid varies batching on top of these (so that the fetch wait does not hide it).
GRID_BASE = {"kafka.consumer": FAST_FETCH, "model.threads": 1}


def variants(bootstrap: str, messages: Sequence[Message], worker_msgs_per_s: float,
             phase_seconds: float, log_dir: Path | None = None,
             names: Sequence[str] = tuple(VARIANTS)) -> list[dict[str, Any]]:
    """p50/p99 at 50 % of the default worker's throughput for each variant (one worker each)."""
    load = round(0.5 * worker_msgs_per_s, 1)
    out = []
    for name in names:
        settings, flags = VARIANTS[name]
        res = session(bootstrap, settings, repeated(messages, 1, "b"), phases=[load],
                      phase_messages=messages, phase_seconds=phase_seconds, batch_times=True,
                      log_dir=log_dir, flags=flags)
        phase = res["phases"][0] if res["phases"] else {}
        out.append({"variant": name, "offered_msgs_per_s": load,
                    "backlog_msgs_per_s": res.get("drain", {}).get("msgs_per_s"),
                    **{k: phase.get(k) for k in ("p50_ms", "p95_ms", "p99_ms")},
                    "batch_times": phase.get("batch_times")})
    return out
