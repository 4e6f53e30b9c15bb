"""One training step (forward and backward) of the bundled model's sizes, the LSTM over packed
sequences against length groups of the padded batch, on the CPU.

    python benchmarks/train_step.py [--threads 1] [--repeats 3]

Random token ids, batches of 32 texts in three length bands; the two paths alternate twice.
Prints milliseconds per step. See docs/model-card.md, "Unpacked LSTM in training (CPU)".
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.lstm import LSTMClassifier, LSTMConfig  # noqa: E402
from model.predictor import pad_batch  # noqa: E402

BANDS = ((480, 512), (100, 140), (20, 30))


def _batch(rng: random.Random, low: int, high: int, size: int = 32) -> tuple[torch.Tensor, ...]:
    return pad_batch([[rng.randrange(2, 20_000) for _ in range(rng.randint(low, high))]
                      for _ in range(size)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LSTMClassifier(LSTMConfig(bag_logits=True, bag_bigrams=524_288, bag_dropout=0.3))
    model.train()
    rng = random.Random(0)
    batches = [_batch(rng, low, high) for low, high in BANDS]
    padded_applies = model._padded_lstm_applies  # noqa: SLF001
    for path in ("packed", "unpacked", "packed", "unpacked"):
        # The packed path is the one training takes where the unpacked one does not apply.
        model._padded_lstm_applies = (  # type: ignore[method-assign]  # noqa: SLF001
            padded_applies if path == "unpacked" else (lambda device: False))
        for ids, lengths in batches:
            model(ids, lengths).sum().backward()  # warm-up: oneDNN builds a kernel per shape
            start = time.perf_counter()
            for _ in range(args.repeats):
                model(ids, lengths).sum().backward()
            ms = (time.perf_counter() - start) / args.repeats * 1000
            print(f"{path:8} {tuple(ids.shape)} {ms:7.0f} ms per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
