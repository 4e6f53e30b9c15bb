"""Score a model on labelled data: metrics overall and per source, and an optional report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.data import Example, assigned_split, example_text, iter_examples, left_out_reason
from model.metrics import (
    binary_metrics,
    f1_difference_interval,
    f1_interval,
    macro,
    multiclass_metrics,
    roc_auc,
    seen_labels,
    wilson_interval,
)
from model.predictor import Predictor, decide

__all__ = [
    "Scored",
    "score_examples",
    "evaluate",
    "compare",
    "load_eval_examples",
    "error_rate_names",
]


@dataclass(frozen=True)
class Scored:
    """One evaluated example: truth, probabilities (in the predictor's label order), decision."""

    id: str
    source: str
    label: str
    probs: tuple[float, ...]
    predicted: str
    text: str
    threshold: float | None = None  # the threshold applied (the kind's, when the model has them)
    kind: str = "text"


def corpus_of(source: str) -> str:
    """Top-level source name: ``spamassassin/easy-ham-1`` → ``spamassassin``."""
    return source.split("/", 1)[0]


def error_rate_names(positive: str | None) -> tuple[str, str]:
    """What to call the figures stored as ham_loss and spam_miss (the false-positive and miss
    rates) for a model whose positive label is *positive*: the spam words only for spam."""
    return ("ham_loss", "spam_miss") if positive == "spam" else ("fp_rate", "miss_rate")


def load_eval_examples(paths: Sequence[str | Path], split: str | None,
                       left_out: Counter[str] | None = None,
                       unreadable: list[str] | None = None) -> list[Example]:
    """Labelled examples of *split* (None or ``all``: every one) from *paths*. Data without a
    split is split by id as `streamclf train` splits it, so its test share is never training
    data. Those of the split without a label or blank are counted in *left_out*; files below
    a folder that cannot be read, whatever their split, are named in *unreadable* (see
    `iter_examples`)."""
    out = []
    for path in paths:
        for ex in iter_examples(path, unreadable):
            if split not in (None, "all") and assigned_split(ex) != split:
                continue
            reason = left_out_reason(ex)
            if reason:
                if left_out is not None:
                    left_out[reason] += 1
                continue
            out.append(ex)
    return out


def score_examples(
    predictor: Predictor, examples: Sequence[Example], batch_size: int = 64
) -> list[Scored]:
    """Run the predictor over *examples* (batched by length), results in input order."""
    texts = [example_text(ex) for ex in examples]
    ids = [predictor.tokenize(t) for t in texts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    probs: list[list[float]] = [[] for _ in ids]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        rows = predictor.probabilities([ids[i] for i in idx]).tolist()
        for i, row in zip(idx, rows, strict=True):
            probs[i] = row
    labels = predictor.labels
    out = []
    for ex, text, seq, row in zip(examples, texts, ids, probs, strict=True):
        cut = predictor.threshold_for(seq)
        k = decide(row, labels, predictor.positive_label, cut)
        out.append(
            Scored(
                ex.id,
                ex.source,
                str(ex.label),
                tuple(row),
                labels[k],
                text[:2000],
                cut,
                predictor.kind_of(seq),
            )
        )
    return out


def _metrics(
    rows: Sequence[Scored], labels: Sequence[str], positive: str | None, threshold: float | None,
    flip: bool = False,
) -> dict[str, Any]:
    index = {name: k for k, name in enumerate(labels)}
    y = [index.get(r.label, -1) for r in rows]
    pred = [index[r.predicted] for r in rows]
    if positive is None:
        figures = multiclass_metrics(y, pred, labels)
        # Macro averages under the names every evaluation carries (the contract's --json keys).
        per, seen = figures["per_label"], seen_labels(y, pred, labels)
        aucs = [roc_auc([r.label == name for r in rows], [r.probs[k] for r in rows])
                for k, name in enumerate(labels)]
        known = [a for a in aucs if a is not None]
        return {**figures,
                "precision": macro(per, seen, "precision"),
                "recall": macro(per, seen, "recall"),
                "f1": figures["macro_f1"],
                "roc_auc": sum(known) / len(known) if known else None}
    pos = labels.index(positive)
    truth = [r.label == positive for r in rows]
    scores = [r.probs[pos] for r in rows]
    if len(labels) == 2:
        assert threshold is not None
        # A row's own cut is for the model's positive label; *threshold* is already the
        # cut for *positive* (flipped by the caller).
        own = [r.threshold for r in rows]
        cuts = [threshold if c is None else (1.0 - c if flip else c) for c in own]
        return binary_metrics(truth, scores, threshold, cuts)
    # More labels: the positive label's figures are those of the model's own decisions (the
    # most probable label), next to accuracy and per-label figures over all labels.
    decided = [1.0 if r.predicted == positive else 0.0 for r in rows]
    figures = binary_metrics(truth, decided, 0.5)
    figures["roc_auc"] = roc_auc(truth, scores)
    figures["threshold"] = None
    return {**figures, **multiclass_metrics(y, pred, labels)}


def evaluate(
    predictor: Predictor, rows: Sequence[Scored], positive_label: str | None = None
) -> dict[str, Any]:
    """Metrics overall, ``by_source`` (top-level corpus) and ``by_subsource``; overall and by
    source, 95 % intervals of F1 and the error rates (``f1_ci95``, ``ham_loss_ci95``,
    ``spam_miss_ci95``).

    Binary figures are for *positive_label* (default: the model's own, else ``spam`` when it is
    one of the labels); a model without one gets accuracy and per-label figures.
    """
    labels = predictor.labels
    positive = positive_label or predictor.positive_label
    if positive is None and "spam" in labels:
        positive = "spam"
    if positive is None and len(labels) == 2:  # sport/tech, 0/1, neg/pos: the second label
        positive = labels[1]
    if positive is not None and positive not in labels:
        raise ValueError(f"positive label {positive!r} is not one of the model's {list(labels)}")
    threshold: float | None = None
    thresholds = dict(predictor.thresholds) if predictor.thresholds else None
    flip = len(labels) == 2 and predictor.positive_label not in (None, positive)
    if len(labels) == 2:
        threshold = predictor.threshold if predictor.threshold is not None else 0.5
        if flip:  # reported as cuts on the probability of the label the figures are for
            threshold = 1.0 - threshold
            thresholds = {k: 1.0 - v for k, v in thresholds.items()} if thresholds else None
    result: dict[str, Any] = {
        "model": f"{predictor.name}@{predictor.version}",
        "positive_label": positive,
        **_metrics(rows, labels, positive, threshold, flip),
        "thresholds": thresholds,
        "by_source": {},
        "by_subsource": {},
    }
    for key, group_of in (("by_source", corpus_of), ("by_subsource", lambda s: s)):
        for name in sorted({group_of(r.source) for r in rows}):
            subset = [r for r in rows if group_of(r.source) == name]
            result[key][name] = _metrics(subset, labels, positive, threshold, flip)
    for figures in (result, *result["by_source"].values()):
        _add_intervals(figures)
    return result


def _add_intervals(figures: dict[str, Any]) -> None:
    """95 % intervals for F1 (bootstrap) and the two error rates (Wilson), when the figures
    have the positive label's counts: on a few hundred messages one message moves F1 by
    half a point, and the interval says how far a figure can be trusted."""
    if "tp" not in figures:
        return
    tp, fp, tn, fn = (figures[k] for k in ("tp", "fp", "tn", "fn"))
    figures["f1_ci95"] = list(f1_interval(tp, fp, tn, fn))
    figures["ham_loss_ci95"] = list(wilson_interval(fp, fp + tn))
    figures["spam_miss_ci95"] = list(wilson_interval(fn, fn + tp))


def compare(
    rows: Sequence[Scored], other: Sequence[Scored], positive: str, other_model: str
) -> dict[str, Any]:
    """The F1 of *rows*' decisions minus that of *other*'s, two models' verdicts on the same
    examples in the same order, overall and per source (top-level corpus), each with a paired
    bootstrap 95 % interval: the question "is my new model better?" answered as sharply as
    the data allows."""
    def paired(idx: Sequence[int]) -> dict[str, Any]:
        truth = [rows[i].label == positive for i in idx]
        diff, low, high = f1_difference_interval(
            truth,
            [rows[i].predicted == positive for i in idx],
            [other[i].predicted == positive for i in idx],
        )
        return {"n": len(idx), "f1_difference": diff, "ci95": [low, high]}

    assert [r.id for r in rows] == [r.id for r in other], "both models must score the same rows"
    result = {"model": other_model, **paired(range(len(rows))), "by_source": {}}
    for name in sorted({corpus_of(r.source) for r in rows}):
        result["by_source"][name] = paired(
            [i for i, r in enumerate(rows) if corpus_of(r.source) == name]
        )
    return result
