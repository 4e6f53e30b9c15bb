"""Start a worker like `streamclf run`, optionally with a model slowed down on purpose.

    python tests/faults/launch_worker.py [--slow-ms N] --set key.path=value ...

The slow model is the bundled model plus a fixed delay per batch: the fault suite's stand-in for
inference slower than `max_poll_interval_ms`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from worker.cli import exit_process, setup_logging
from worker.config import load_config
from worker.stop import StopRequest, stop_on_signals


class SlowModel:
    def __init__(self, inner: Any, delay_s: float) -> None:
        self._inner = inner
        self._delay_s = delay_s
        self.name, self.version = inner.name, inner.version
        self.labels, self.max_tokens, self.device = inner.labels, inner.max_tokens, inner.device

    def tokenize(self, text: str) -> list[int]:
        return self._inner.tokenize(text)

    def predict_ids(self, seqs: Sequence[Sequence[int]]) -> Any:
        time.sleep(self._delay_s)  # the simulated slow inference itself
        return self._inner.predict_ids(seqs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow-ms", type=float, default=0.0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    stop_requested = StopRequest()
    stop_on_signals(stop_requested.set)  # before the slow imports, as `streamclf run` does

    from model.predictor import Predictor
    from worker.app import Worker

    config = load_config(None, args.overrides, environ={})
    setup_logging(config.logging.level, config.logging.format)
    classifier: Any = Predictor.load(config.model.path, device="cpu")
    if args.slow_ms > 0:
        classifier = SlowModel(classifier, args.slow_ms / 1000.0)
    exit_process(Worker(config, classifier=classifier, stop_event=stop_requested).run())


if __name__ == "__main__":
    main()
