"""Seed spread: models trained alike but for the seed, each alone and averaged (an ensemble).

    python benchmarks/seeds.py model/bundled runs/seed11 runs/seed13 [--data DIR]

For each artifact, and for the mean of the artifacts' log-odds, per-kind thresholds are chosen
on the `val` split as training chooses them (best F1 with ham-loss ≤ 0.5 % in each corpus); F1,
false positives, false negatives and ROC-AUC are printed per split and corpus as a markdown
table. Nothing is chosen on `test`.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA_DIR  # noqa: E402
from model.data import Example  # noqa: E402
from model.evaluate import corpus_of, load_eval_examples, score_examples  # noqa: E402
from model.metrics import binary_metrics, choose_thresholds, logit, sigmoid  # noqa: E402
from model.predictor import Predictor  # noqa: E402

SPLITS = ("val", "test")


def log_odds(predictor: Predictor, examples: Sequence[Example]) -> tuple[list[float], list[str]]:
    """log(p / (1 − p)) of the positive label per example, and each example's kind."""
    pos = predictor.labels.index(predictor.positive_label or predictor.labels[-1])
    rows = score_examples(predictor, examples)
    return [logit(r.probs[pos], 1e-7) for r in rows], [r.kind for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="artifact directories (or 'bundled')")
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="folder with the shared data")
    args = parser.parse_args(argv)
    files = [args.data / "spamassassin.jsonl.gz", args.data / "sms_spam.jsonl.gz"]
    predictors = [Predictor.load(m, device="cpu") for m in args.models]
    examples = {s: [ex for ex in load_eval_examples(files, s) if ex.split == s] for s in SPLITS}
    scored = {s: [log_odds(p, examples[s]) for p in predictors] for s in SPLITS}

    print("| models | split / corpus | F1 | FP | FN | ROC-AUC |\n|---|---|---|---|---|---|")
    for n in range(1, len(predictors) + 1):
        for combo in itertools.combinations(range(len(predictors)), n):
            name = " + ".join(args.models[k] for k in combo)
            thresholds: dict[str, float] = {}
            for split in SPLITS:
                exs = examples[split]
                kinds = scored[split][0][1]
                p = [sigmoid(sum(scored[split][k][0][i] for k in combo) / len(combo))
                     for i in range(len(exs))]
                truth = [ex.label == "spam" for ex in exs]
                corpora = [corpus_of(ex.source) for ex in exs]
                if split == "val":
                    thresholds = choose_thresholds(truth, p, kinds, corpora, 0.005)
                cuts = [thresholds.get(k, 0.5) for k in kinds]
                for corpus in sorted(set(corpora)):
                    idx = [i for i, c in enumerate(corpora) if c == corpus]
                    m = binary_metrics([truth[i] for i in idx], [p[i] for i in idx], 0.5,
                                       [cuts[i] for i in idx])
                    print(f"| {name} | {split} / {corpus} | {m['f1']:.3f} | {m['fp']} | "
                          f"{m['fn']} | {m['roc_auc']:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
