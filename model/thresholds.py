"""Choose per-kind decision thresholds for an existing artifact on validation data.

    python -m model.thresholds --model model/bundled --data ../shared/data/*.jsonl.gz

Scores the ``val`` split with the artifact, picks one threshold per kind of text (``email`` /
``text``, the kind read from the token ids as ``Predictor`` does) with the best F1 whose ham-loss
is ≤ ``--max-ham-loss`` in every corpus of that kind, and writes them into the artifact's
config.json (``thresholds``) together with the validation figures at those cuts. The weights, the
vocabulary, the temperature and the shared ``threshold`` are left as they are. Training
(``model.train``) chooses the same thresholds itself; this is for artifacts trained before.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.artifact import load_artifact, update_config
from model.data import example_text
from model.evaluate import corpus_of, load_eval_examples
from model.metrics import binary_metrics, choose_thresholds
from model.predictor import KINDS, Predictor

__all__ = ["choose_for_artifact", "main"]


def choose_for_artifact(
    model: str, data: Sequence[str | Path], max_ham_loss: float = 0.005, write: bool = True
) -> dict[str, Any]:
    """Per-kind thresholds chosen on the val split of *data*; written into *model* if *write*."""
    predictor = Predictor.load(model, device="cpu")
    positive = predictor.positive_label
    if positive is None or len(predictor.labels) != 2:
        raise ValueError("per-kind thresholds need a binary model with a positive label")
    examples = load_eval_examples(data, "val")  # data without a split: its val share, by id
    if not examples:
        raise ValueError("no validation examples in the data")
    ids = [predictor.tokenize(example_text(ex)) for ex in examples]
    pos = predictor.labels.index(positive)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    p = [0.0] * len(ids)
    for start in range(0, len(order), 64):
        idx = order[start : start + 64]
        rows = predictor.probabilities([ids[i] for i in idx])[:, pos].tolist()
        for i, v in zip(idx, rows, strict=True):
            p[i] = v
    truth = [ex.label == positive for ex in examples]
    kinds = [predictor.kind_of(s) for s in ids]
    groups = [corpus_of(ex.source) for ex in examples]
    shared = predictor.threshold if predictor.threshold is not None else 0.5
    chosen = choose_thresholds(truth, p, kinds, groups, max_ham_loss)
    thresholds = {k: chosen.get(k, shared) for k in KINDS}
    cuts = [thresholds[k] for k in kinds]
    val = {"all": binary_metrics(truth, p, shared, cuts)}
    for g in sorted(set(groups)):
        idx = [i for i, gg in enumerate(groups) if gg == g]
        val[g] = binary_metrics(
            [truth[i] for i in idx], [p[i] for i in idx], shared, [cuts[i] for i in idx]
        )
    record = {
        "thresholds": thresholds,
        "max_ham_loss": max_ham_loss,
        "val_kinds": {k: kinds.count(k) for k in KINDS},
        "val": val,
    }
    if write:
        config = load_artifact(model).config
        metrics = dict(config.get("metrics", {}))
        metrics["val_per_kind_thresholds"] = val
        update_config(model, {"thresholds": thresholds, "metrics": metrics})
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model.thresholds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="artifact directory (or 'bundled')")
    parser.add_argument("--data", nargs="+", required=True, metavar="PATH")
    parser.add_argument("--max-ham-loss", type=float, default=0.005)
    parser.add_argument("--dry-run", action="store_true", help="print, do not write")
    args = parser.parse_args(argv)
    try:
        record = choose_for_artifact(args.model, args.data, args.max_ham_loss, not args.dry_run)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(record, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
