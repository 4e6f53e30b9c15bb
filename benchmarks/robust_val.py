"""The robustness transforms on the validation split: for choosing a training recipe.

    python benchmarks/robust_val.py model/bundled runs/redress-s7 ... [--split val] [--data DIR]

`benchmarks/accuracy.py --robustness` measures the bundled model on transformed *test* mail;
recipes are chosen on *validation*, so this applies the same transforms (HTML only, headers
stripped or rewritten, SMS dressed as a plain or an HTML email) to the `val` split and prints,
per artifact, F1, false positives and false negatives at the artifact's own thresholds, as a
markdown table. No bogofilter needed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.accuracy import (  # noqa: E402
    EMAIL_VARIANTS,
    SMS_VARIANTS,
    load_corpora,
    metrics_of_decisions,
    model_scores,
)
from benchmarks.common import DATA_DIR  # noqa: E402
from model.data import Example  # noqa: E402
from model.predictor import Predictor  # noqa: E402

# The transforms whose figures moved most for the bundled model (model card, "Robustness").
EMAIL_SETS = ("HTML only (text/plain → text/html)", "headers stripped (MIME only)",
              "headers rewritten (2025, other senders)")


def variant_sets(data: dict[str, dict[str, list[Example]]], split: str
                 ) -> dict[str, list[Example]]:
    """Set name → labelled examples: each corpus as is, then transformed."""
    sa, sms = data["spamassassin"][split], data["sms"][split]
    sets: dict[str, list[Example]] = {"SpamAssassin": sa, "SMS": sms}

    def remade(exs: list[Example], fn: Callable[[Example, int], bytes], source: str
               ) -> list[Example]:
        return [Example(f"{source}-{i}", ex.label, split, source, fn(ex, i), None)
                for i, ex in enumerate(exs)]

    for name in EMAIL_SETS:
        email_fn = EMAIL_VARIANTS[name]
        sets[f"SpamAssassin, {name}"] = remade(
            sa, lambda ex, i, f=email_fn: _or_original(f, ex.raw or b"", i), "spamassassin")
    for name, sms_fn in SMS_VARIANTS.items():
        sets[name] = remade(sms, lambda ex, i, f=sms_fn: f(ex.text or "", i), "sms")
    return sets


def _or_original(fn: Callable[[bytes, int], bytes], raw: bytes, index: int) -> bytes:
    try:
        return fn(raw, index)
    except Exception:  # noqa: BLE001 - as accuracy.py: a transform that cannot apply keeps it
        return raw


def figures(predictor: Predictor, examples: list[Example]) -> tuple[float, int, int]:
    """F1, false positives and false negatives at the artifact's own thresholds."""
    p, predicted = model_scores(predictor, examples)
    truth = [ex.label == "spam" for ex in examples]
    m = metrics_of_decisions(truth, p, [d == "spam" for d in predicted], None)
    return m["f1"], m["fp"], m["fn"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="artifact directories (or 'bundled')")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="folder with the shared data")
    args = parser.parse_args(argv)
    sets = variant_sets(load_corpora(args.data), args.split)
    predictors = [Predictor.load(m, device="cpu") for m in args.models]
    print(f"| {args.split} set (n) | " + " | ".join(args.models) + " |")
    print("|---|" + "---|" * len(predictors))
    for name, examples in sets.items():
        cells = []
        for predictor in predictors:
            f1, fp, fn = figures(predictor, examples)
            cells.append(f"{f1:.3f} ({fp} / {fn})")
        print(f"| {name} ({len(examples)}) | " + " | ".join(cells) + " |", flush=True)
    print("\nF1 (false positives / false negatives) at each artifact's own thresholds.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
