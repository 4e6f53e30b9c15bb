"""model.lanes: how many batches the worker classifies at once, and that lanes keep the order."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from worker.app import (
    Worker,
    _ShortGilSwitch,
    available_cores,
    cgroup_cpu_limit,
    inference_plan,
)
from worker.codec import Request, SourceRecord
from worker.config import load_config


@pytest.mark.parametrize(
    ("lanes", "threads", "cores", "on_gpu", "plan"),
    [
        (0, 0, 2, False, (2, 1)),  # auto on this machine kind: a lane per core, one thread each
        (0, 0, 1, False, (1, 1)),
        (0, 0, 32, False, (8, 1)),  # no more lanes than batches in a sort window
        (0, 0, 4, True, (1, 3)),  # a GPU runs one batch at a time; threads as before lanes
        (1, 0, 4, False, (1, 3)),  # one lane: a core stays with the Kafka path
        (3, 0, 4, False, (3, 1)),
        (2, 2, 8, False, (2, 2)),
    ],
)
def test_inference_plan(lanes: int, threads: int, cores: int, on_gpu: bool,
                        plan: tuple[int, int]) -> None:
    assert inference_plan(lanes, threads, cores, on_gpu) == plan


class _Labelled:
    """A prediction that names the text it was made for."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.label = f"t{ids[0]}"
        self.score = 1.0
        self.scores = {self.label: 1.0}


class _FakeModel:
    """What the worker reads of a classifier besides predict_ids; the batches come tokenized."""

    name, version, labels, device, max_tokens = "fake", "1", ("a", "b"), "cpu", 64

    def tokenize(self, text: str) -> list[int]:
        raise AssertionError("not used")


class SlowFirstBatches(_FakeModel):
    """Takes longer on earlier batches, so that with two lanes later batches finish first;
    records how many batches ran at the same time. The first calls wait (up to 10 s, on a loaded
    machine) until `lanes` of them are running, so that a slow thread start cannot hide the
    concurrency."""

    def __init__(self, lanes: int) -> None:
        self.lanes = lanes
        self.active = 0
        self.most_at_once = 0
        self.calls = 0
        self._met = False
        self._cond = threading.Condition()

    def predict_ids(self, seqs: Sequence[Sequence[int]]) -> list[_Labelled]:
        with self._cond:
            self.active += 1
            self.calls += 1
            self.most_at_once = max(self.most_at_once, self.active)
            self._cond.notify_all()
            # Waiting ends for good at the first meeting or the first timeout: a worker that
            # runs batches one by one then costs one timeout and fails on most_at_once.
            self._cond.wait_for(lambda: self._met or self.active >= self.lanes, timeout=10.0)
            self._met = True
            wait = 0.05 if self.calls % 2 else 0.005
        time.sleep(wait)  # stands in for a forward pass that releases the GIL
        with self._cond:
            self.active -= 1
        return [_Labelled(s) for s in seqs]


def _window(n: int) -> list[Request]:
    out = []
    for i in range(n):
        record = SourceRecord("in", 0, i, 0, f"k{i}".encode(), b"v", ())
        # Lengths vary so that sorting by length reorders the window.
        out.append(Request(record, f"k{i}", "text", [i] * (1 + (i * 7) % 5)))
    return out


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_lanes_classify_batches_at_once_and_keep_window_order(lanes: int) -> None:
    config = load_config(None, ["batching.max_batch_size=4", f"model.lanes={lanes}"], environ={})
    classifier = SlowFirstBatches(lanes)
    worker = Worker(config, classifier=classifier)
    window = _window(32)  # 8 batches of 4
    out: list = [None] * len(window)
    pool = ThreadPoolExecutor(lanes) if lanes > 1 else None
    try:
        running = worker._classify_window(  # noqa: SLF001
            classifier, window, out, pool, threading.Semaphore(lanes))
        for batch in running:
            batch.result()
    finally:
        if pool:
            pool.shutdown()
    assert [p.label for p in out] == [f"t{r.ids[0]}" for r in window]
    assert classifier.calls == 8
    assert classifier.most_at_once == lanes


class HoldsTheFirstBatch(_FakeModel):
    """The first batch runs until a second one is running beside it, or 10 s have passed."""

    def __init__(self) -> None:
        self.first_started = threading.Event()
        self.second_started = threading.Event()
        self.overlapped: bool | None = None
        self._calls = 0
        self._lock = threading.Lock()

    def predict_ids(self, seqs: Sequence[Sequence[int]]) -> list[_Labelled]:
        with self._lock:
            self._calls += 1
            first = self._calls == 1
        if first:
            self.first_started.set()
            self.overlapped = self.second_started.wait(timeout=10.0)
        else:
            self.second_started.set()
        return [_Labelled(s) for s in seqs]


def test_a_free_lane_takes_the_next_batch_while_the_one_before_still_runs() -> None:
    """At light load each window is one batch: with two lanes, the next batch must not wait for
    the one before it to finish (it used to, leaving a core idle and adding a batch's time to
    its latency). Results still come out in input order."""
    config = load_config(None, ["batching.max_batch_size=4", "model.lanes=2"], environ={})
    classifier = HoldsTheFirstBatch()
    worker = Worker(config, classifier=classifier)
    worker._load_classifier()  # noqa: SLF001 (plans the lanes)
    worker._owned = frozenset({("in", 0)})  # noqa: SLF001 (as if partition in-0 were assigned)
    inference = threading.Thread(target=worker._inference_loop, args=(classifier,))  # noqa: SLF001
    inference.start()
    requests = _window(8)
    try:
        worker._batches.put(requests[:4])  # noqa: SLF001
        assert classifier.first_started.wait(timeout=10.0)
        worker._batches.put(requests[4:])  # noqa: SLF001
        labels = []
        for _ in range(2):
            window, predictions, running = worker._publisher.windows.get(timeout=20.0)  # noqa: SLF001
            for batch in running:
                batch.result(timeout=20.0)
            labels += [p.label for p in predictions]
    finally:
        worker._batches.put(None)  # noqa: SLF001
        inference.join(timeout=20.0)
    assert classifier.overlapped is True
    assert labels == [f"t{r.ids[0]}" for r in requests]


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "200000 100000\n"}, 2),
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: rounded up
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),
        ({}, None),
    ],
)
def test_cgroup_cpu_limit_reads_v2_and_v1(tmp_path, files: dict[str, str],
                                          limit: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(tmp_path) == limit


def test_available_cores_is_capped_by_the_cgroup_limit(tmp_path) -> None:
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert available_cores(tmp_path) == 1
    assert available_cores(tmp_path / "absent") >= 1


class FailsSomeBatches(_FakeModel):
    """Raises on a batch larger than `fits` (as CUDA does when a batch outgrows GPU memory) or
    holding the token id `poison`; counts every call."""

    def __init__(self, fits: int = 1_000, poison: int | None = None) -> None:
        self.fits, self.poison, self.calls = fits, poison, 0

    def predict_ids(self, seqs: Sequence[Sequence[int]]) -> list[_Labelled]:
        self.calls += 1
        if len(seqs) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (a stand-in)")
        if any(self.poison in s for s in seqs):
            raise RuntimeError("model blew up")
        return [_Labelled(s) for s in seqs]


def _classify_one_batch(classifier: _FakeModel, window: list[Request]) -> tuple[list, list]:
    """Run one batch through the worker's retry rule; (predictions, dead-lettered ids)."""
    config = load_config(None, [f"batching.max_batch_size={len(window)}"], environ={})
    worker = Worker(config, classifier=classifier)
    failed: list[str] = []
    # The dead-letter topic is the integration tests' business; here only who lands there.
    worker._inference_failed = lambda request, exc: failed.append(request.id)  # noqa: SLF001
    out: list = [None] * len(window)
    worker._classify_chunk(classifier, window, [r.ids for r in window], out,  # noqa: SLF001
                           list(range(len(window))))
    return out, failed


def test_a_batch_too_large_for_the_device_is_retried_in_halves() -> None:
    window = _window(32)
    classifier = FailsSomeBatches(fits=4)
    out, failed = _classify_one_batch(classifier, window)
    assert failed == []
    assert [p.label for p in out] == [f"t{r.ids[0]}" for r in window]
    # 32, 16 ×2 and 8 ×4 fail, then 8 batches of 4 fit: 15 calls (one record at a time: 33).
    assert classifier.calls == 15


def test_a_bad_record_is_found_by_halving_and_only_it_is_dead_lettered() -> None:
    window = _window(32)
    poison = window[13].ids[0]
    classifier = FailsSomeBatches(poison=poison)
    out, failed = _classify_one_batch(classifier, window)
    assert failed == ["k13"]
    assert out[13] is None
    assert [p.label for i, p in enumerate(out) if i != 13] == [
        f"t{r.ids[0]}" for i, r in enumerate(window) if i != 13]
    # Halves of 32, 16, 8, 4, 2 and 1 that hold it fail; their other halves pass: 11 calls.
    assert classifier.calls == 11


class RecordsTheSwitchInterval(_FakeModel):
    """Notes the GIL switch interval each forward pass runs under."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def predict_ids(self, seqs: Sequence[Sequence[int]]) -> list[_Labelled]:
        self.seen.append(sys.getswitchinterval())
        return [_Labelled(s) for s in seqs]


@pytest.fixture
def usual_switch_interval() -> Iterator[float]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)  # Python's default, whatever ran before
    yield 0.005
    sys.setswitchinterval(before)


def test_forward_passes_run_with_the_short_switch_interval_and_only_they(
    usual_switch_interval: float,
) -> None:
    config = load_config(None, ["batching.max_batch_size=4"], environ={})
    classifier = RecordsTheSwitchInterval()
    worker = Worker(config, classifier=classifier)
    window = _window(12)
    worker._classify_window(  # noqa: SLF001
        classifier, window, [None] * len(window), None, threading.Semaphore(1))
    assert classifier.seen == pytest.approx([0.0005] * 3)
    assert sys.getswitchinterval() == pytest.approx(usual_switch_interval)


def test_the_switch_interval_stays_short_until_the_last_overlapping_pass_ends(
    usual_switch_interval: float,
) -> None:
    passes = _ShortGilSwitch(0.001)  # one for all lanes
    passes.__enter__()  # lane 1 starts
    passes.__enter__()  # lane 2 starts
    passes.__exit__(None, None, None)  # lane 1 ends
    assert sys.getswitchinterval() == pytest.approx(0.001)
    passes.__exit__(None, None, None)  # lane 2 ends
    assert sys.getswitchinterval() == pytest.approx(usual_switch_interval)


def test_records_of_a_partition_no_longer_assigned_are_not_classified() -> None:
    """A revoked partition's records still queued for inference belong to the new owner; they
    are no longer tracked or counted in flight here (before, they were classified and published,
    past max_in_flight, and the new owner produced them again)."""
    class Counts(_FakeModel):
        seen = 0

        def predict_ids(self, seqs: Sequence[Sequence[int]]) -> list[_Labelled]:
            self.seen += len(seqs)
            return [_Labelled(s) for s in seqs]

    config = load_config(None, ["batching.max_batch_size=4"], environ={})
    classifier = Counts()
    worker = Worker(config, classifier=classifier)
    worker._load_classifier()  # noqa: SLF001
    worker._owned = frozenset({("in", 0)})  # noqa: SLF001
    inference = threading.Thread(target=worker._inference_loop, args=(classifier,))  # noqa: SLF001
    inference.start()
    kept = _window(3)
    gone = [Request(SourceRecord("in", 1, i, 0, b"k", b"v", ()), f"g{i}", "text", [i + 1])
            for i in range(3)]
    try:
        worker._batches.put([kept[0], gone[0], kept[1], gone[1]])  # noqa: SLF001
        worker._batches.put([gone[2]])  # noqa: SLF001
        worker._batches.put([kept[2]])  # noqa: SLF001
        classified = []
        while len(classified) < 3:
            window, predictions, running = worker._publisher.windows.get(timeout=20.0)  # noqa: SLF001
            classified += [r.record.partition for r in window]
    finally:
        worker._batches.put(None)  # noqa: SLF001
        inference.join(timeout=20.0)
    assert classified == [0, 0, 0]
    assert classifier.seen == 3
