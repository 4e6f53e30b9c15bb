"""The worker as the benchmarks run it: `streamclf run` with two optional variants.

    python benchmarks/worker_proc.py [--noop] [--batch-times FILE] --set key.path=value ...

--noop          the worker with a classifier that does nothing (the Kafka path's own ceiling)
--batch-times   wrap the model to record every batch's tokenize + predict time, written to FILE
                as JSON at exit (the worker's own histogram has coarse buckets)
--coalesce      a variant of the worker (a lever, measured here, not in worker/): batches that
                wait for the busy inference thread merge, up to max_batch_size, instead of
                queueing one behind another

Without options this is exactly what `streamclf run` does: the worker loads its model itself.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def text_length(text: str) -> list[int]:
    """The no-op classifier's tokenizer (module level, so decoding processes can be given it)."""
    return [len(text)]


class NoOpClassifier:
    """Satisfies worker.app.Classifier and does no work: every text is `ham`."""

    name = "noop"
    version = "0"
    labels = ("ham", "spam")
    max_tokens = 256
    device = "cpu"

    class _Prediction:
        __slots__ = ()
        label = "ham"
        score = 1.0
        scores = {"ham": 1.0, "spam": 0.0}

    _one = _Prediction()

    text_tokenizer = tokenize = staticmethod(text_length)

    def predict_ids(self, seqs: Sequence[Sequence[int]]) -> list[Any]:
        return [self._one] * len(seqs)


class TimedClassifier:
    """Delegates to a classifier and records (batch size, seconds of predict_ids, wall-clock
    time at its end), so that each load phase can be given its own batch times.

    Only the model call is timed: the worker tokenizes a whole window of queued batches before
    it classifies them one by one, as `streamclf_inference_duration_seconds` measures it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.version = inner.name, inner.version
        self.labels, self.max_tokens, self.device = inner.labels, inner.max_tokens, inner.device
        self.times: list[tuple[int, float, float]] = []

    def tokenize(self, text: str) -> list[int]:
        return self.inner.tokenize(text)

    @property
    def text_tokenizer(self) -> Any:
        return self.inner.text_tokenizer

    def predict_ids(self, seqs: Sequence[Sequence[int]]) -> Any:
        started = time.perf_counter()
        out = self.inner.predict_ids(seqs)
        self.times.append((len(seqs), time.perf_counter() - started, time.time()))
        return out


def coalescing_worker_class() -> Any:
    """worker.app.Worker whose queued batches merge while the inference thread is busy."""
    from worker.app import Worker

    class CoalescingWorker(Worker):
        def _submit(self, batch: list[Any]) -> None:
            limit = self.config.batching.max_batch_size
            waiting = self._batches
            with waiting.mutex:  # the inference thread takes batches under the same lock
                last = waiting.queue[-1] if waiting.queue else None
                if last is not None and len(last) + len(batch) <= limit:
                    last.extend(batch)
                    return
            waiting.put(batch)

    return CoalescingWorker


def load_model(config: Any) -> Any:
    """What the worker itself does when no classifier is given (worker.app)."""
    import torch

    from model.predictor import Predictor
    from worker import app

    m = config.model
    predictor = Predictor.load(m.path, device=m.device, max_tokens=m.max_tokens,
                               threshold=m.threshold, quantize=m.quantize)
    torch.set_num_threads(app.plan_for(m, predictor.device)[1])  # the worker's own rule
    return predictor


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--noop", action="store_true")
    parser.add_argument("--batch-times")
    parser.add_argument("--coalesce", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    from worker.app import Worker
    from worker.cli import setup_logging
    from worker.config import load_config

    config = load_config(None, args.overrides)
    setup_logging(config.logging.level, config.logging.format)
    classifier: Any = None
    if args.noop:
        classifier = NoOpClassifier()
    elif args.batch_times:
        classifier = TimedClassifier(load_model(config))
    worker_class = coalescing_worker_class() if args.coalesce else Worker
    worker = worker_class(config, classifier=classifier)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _n, _f: worker.stop())
    code = worker.run()
    if args.batch_times and isinstance(classifier, TimedClassifier):
        Path(args.batch_times).write_text(json.dumps(classifier.times))
    return code


if __name__ == "__main__":
    sys.exit(main())
