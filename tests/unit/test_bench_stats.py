"""The benchmarks' statistics: nearest-rank percentiles, batch-time and profile summaries."""

from pathlib import Path

from benchmarks.common import percentile
from benchmarks.throughput import batch_time_summary, summarize_profile


def test_percentile_is_the_nearest_rank() -> None:
    values = list(range(1, 11))
    assert percentile(values, 50) == 5  # 5 of 10 at or below it; round-half-even gave 6
    assert percentile(values, 90) == 9
    assert percentile(values, 100) == 10
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def test_batch_time_summary_reads_size_seconds_and_end_time() -> None:
    times = [[32, 0.010, 1.0], [16, 0.030, 2.0], [8, 0.020, 3.0]]
    summary = batch_time_summary(times)
    assert summary["batches"] == 3
    assert summary["p50_ms"] == 20.0 and summary["p99_ms"] == 30.0
    assert summary["mean_batch_size"] == 56 / 3


def test_profile_summary_leaves_out_lines_without_a_sample_count(tmp_path: Path) -> None:
    profile = tmp_path / "profile.txt"
    profile.write_text(
        "thread (0x1);run (worker/app.py:10);send (kafka/producer/kafka.py:700) 3\n"
        "thread (0x1);run (worker/app.py:10) 1\n"
        "thread (0x2);poll (kafka/consumer/group.py:5) (\n"  # what ended a full run
    )
    summary = summarize_profile(profile)
    assert summary["samples"] == 4
    assert summary["self_pct"][0] == ("producer/kafka.py:send", 75.0)
