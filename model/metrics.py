"""Classification metrics in plain Python (no numpy, no sklearn).

Binary figures are for the positive label (spam): ``ham_loss`` is the false-positive rate (share
of ham called spam, TREC's ham misclassification) and ``spam_miss`` the false-negative rate.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

__all__ = [
    "roc_auc",
    "binary_metrics",
    "choose_threshold",
    "choose_thresholds",
    "fit_temperature",
    "f1_interval",
    "f1_difference_interval",
    "wilson_interval",
    "macro",
    "multiclass_metrics",
    "seen_labels",
]


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def roc_auc(y: Sequence[bool], p: Sequence[float]) -> float | None:
    """Area under the ROC curve (ties count half); None when only one class is present."""
    pairs = sorted(zip(p, y, strict=True))
    n_pos = sum(1 for _, t in pairs if t)
    n_neg = len(pairs) - n_pos
    if not n_pos or not n_neg:
        return None
    # Mann-Whitney U with average ranks for ties.
    rank_sum = 0.0
    i = 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + j) / 2 + 1
        rank_sum += avg_rank * sum(1 for k in range(i, j + 1) if pairs[k][1])
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def binary_metrics(
    y: Sequence[bool],
    p: Sequence[float],
    threshold: float,
    cuts: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, ROC-AUC, ham_loss, spam_miss and counts at *threshold*.

    *cuts*, when given, is each example's own threshold (per-kind thresholds). The threshold
    reported is the one cut all examples were judged at (a group of SMS: the text cut), else
    *threshold*.
    """
    tp = fp = tn = fn = 0
    per_row = cuts if cuts is not None else [threshold] * len(p)
    for truth, score, cut in zip(y, p, per_row, strict=True):
        pred = score >= cut
        if pred and truth:
            tp += 1
        elif pred:
            fp += 1
        elif truth:
            fn += 1
        else:
            tn += 1
    n = tp + fp + tn + fn
    precision = _div(tp, tp + fp)
    recall = _div(tp, tp + fn)
    auc = roc_auc(y, p)
    return {
        "n": n,
        "accuracy": _div(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": _div(2 * precision * recall, precision + recall),
        "roc_auc": auc,
        "ham_loss": _div(fp, fp + tn),
        "spam_miss": _div(fn, fn + tp),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "threshold": per_row[0] if per_row and len(set(per_row)) == 1 else threshold,
    }


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a rate of *k* in *n* (95 % for z = 1.96). Unlike the normal
    approximation it stays within [0, 1] and is not empty at k = 0: 0 of 425 hams misjudged
    still allows a true rate up to 0.9 %. (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    q = k / n
    centre = (q + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(q * (1 - q) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def f1_interval(
    tp: int, fp: int, tn: int, fn: int, reps: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of F1: the examples resampled with replacement *reps*
    times (seeded, so the same counts always give the same interval). F1 depends only on the
    four counts, so each resample is a draw of n outcomes from their shares."""
    n = tp + fp + tn + fn
    if n == 0:
        return 0.0, 0.0
    rng = random.Random(seed)
    outcomes, cum = (0, 1, 2, 3), [tp, tp + fp, tp + fp + tn, n]  # tp, fp, tn, fn
    values = []
    for _ in range(reps):
        c = Counter(rng.choices(outcomes, cum_weights=cum, k=n))
        values.append(_div(2 * c[0], 2 * c[0] + c[1] + c[3]))
    return _percentile_interval(values, level)


def f1_difference_interval(
    y: Sequence[bool],
    a: Sequence[bool],
    b: Sequence[bool],
    reps: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """F1 of decisions *a* minus F1 of decisions *b* on the same examples (truth *y*), with
    a paired percentile bootstrap interval: each resample draws examples, not systems, so a
    message both get right or both get wrong does not widen it. (difference, low, high)."""
    def f1(idx: Sequence[int], d: Sequence[bool]) -> float:
        tp = sum(1 for i in idx if d[i] and y[i])
        wrong = sum(1 for i in idx if d[i] != y[i])
        return _div(2 * tp, 2 * tp + wrong)

    n = len(y)
    every = range(n)
    diff = f1(every, a) - f1(every, b)
    if n == 0:
        return diff, diff, diff
    rng = random.Random(seed)
    resampled = (rng.choices(every, k=n) for _ in range(reps))
    return (diff, *_percentile_interval([f1(idx, a) - f1(idx, b) for idx in resampled], level))


def _percentile_interval(values: list[float], level: float) -> tuple[float, float]:
    """The central *level* share of bootstrap *values*: (low, high)."""
    values = sorted(values)
    tail = (1 - level) / 2
    last = len(values) - 1
    return values[int(tail * last)], values[math.ceil((1 - tail) * last)]


def multiclass_metrics(y: Sequence[int], pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, macro F1 and per-label precision/recall/F1. The macro average is over the
    labels in *y* or *pred*: one neither in the data nor predicted has no F1 to count (as 0 it
    made a perfect score on one-label data 1/3 for three labels)."""
    per = {}
    for k, name in enumerate(labels):
        tp = sum(1 for t, q in zip(y, pred, strict=True) if t == k and q == k)
        fp = sum(1 for t, q in zip(y, pred, strict=True) if t != k and q == k)
        fn = sum(1 for t, q in zip(y, pred, strict=True) if t == k and q != k)
        precision, recall = _div(tp, tp + fp), _div(tp, tp + fn)
        f1 = _div(2 * precision * recall, precision + recall)
        per[name] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    return {
        "n": len(y),
        "accuracy": _div(sum(1 for t, q in zip(y, pred, strict=True) if t == q), len(y)),
        "macro_f1": macro(per, seen_labels(y, pred, labels), "f1"),
        "per_label": per,
    }


def seen_labels(y: Sequence[int], pred: Sequence[int], labels: Sequence[str]) -> list[str]:
    """The labels that are true or predicted for some row."""
    seen = set(y) | set(pred)
    return [name for k, name in enumerate(labels) if k in seen]


def macro(per: dict[str, dict[str, float]], names: Sequence[str], key: str) -> float:
    """The mean of *key* over the labels *names* of a per-label table."""
    return _div(sum(per[name][key] for name in names), len(names))


def choose_threshold(
    y: Sequence[bool],
    p: Sequence[float],
    groups: Sequence[str] | None = None,
    max_ham_loss: float = 0.005,
) -> float:
    """Threshold with the best F1 among those whose ham-loss is ≤ *max_ham_loss* in every group.

    The cut lies halfway (in log-odds) between the chosen score and the next lower one, so a
    little noise around a validation score does not flip its decision. Falls back to the
    strictest cut when no threshold meets the target.
    """
    groups = list(groups) if groups is not None else ["all"] * len(y)
    names = sorted(set(groups))
    neg_total = {
        g: sum(1 for t, gg in zip(y, groups, strict=True) if not t and gg == g) for g in names
    }
    pos_total = sum(1 for t in y if t)
    order = sorted(range(len(p)), key=lambda i: -p[i])
    fp = dict.fromkeys(names, 0)
    tp = 0
    best: tuple[float, float] | None = None  # (f1, score)
    i = 0
    while i < len(order):
        score = p[order[i]]
        while i < len(order) and p[order[i]] == score:  # take all tied scores together
            k = order[i]
            if y[k]:
                tp += 1
            else:
                fp[groups[k]] += 1
            i += 1
        if any(fp[g] > max_ham_loss * neg_total[g] for g in names):
            break  # lowering the cut further only adds false positives
        f1 = _div(2 * tp, tp + sum(fp.values()) + pos_total)
        if best is None or f1 >= best[0]:
            best = (f1, score)
    if best is None:
        return min(1.0, max(p, default=1.0) + 1e-6)
    below = [s for s in p if s < best[1]]
    if not below:
        return best[1]
    return sigmoid((logit(best[1]) + logit(max(below))) / 2)


def choose_thresholds(
    y: Sequence[bool],
    p: Sequence[float],
    kinds: Sequence[str],
    groups: Sequence[str] | None = None,
    max_ham_loss: float = 0.005,
) -> dict[str, float]:
    """One ``choose_threshold`` per kind (``email``/``text``), each on that kind's examples.

    Within a kind the ham-loss target holds in every group (corpus) present.
    """
    groups = list(groups) if groups is not None else ["all"] * len(y)
    out = {}
    for kind in sorted(set(kinds)):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        out[kind] = choose_threshold(
            [y[i] for i in idx], [p[i] for i in idx], [groups[i] for i in idx], max_ham_loss
        )
    return out


def logit(q: float, eps: float = 1e-12) -> float:
    """log(q / (1 - q)), with q clamped to [eps, 1 - eps] so that 0 and 1 stay finite."""
    q = min(max(q, eps), 1 - eps)
    return math.log(q / (1 - q))


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x): the probability of log-odds x (the inverse of ``logit``)."""
    return 1 / (1 + math.exp(-x))


def fit_temperature(logits: Sequence[Sequence[float]], y: Sequence[int]) -> float:
    """Temperature T minimising the NLL of softmax(logits / T) (a grid search, deterministic)."""
    if not y:
        return 1.0
    best_t, best_nll = 1.0, math.inf
    for step in range(81):
        t = math.exp(math.log(0.25) + step * (math.log(16.0) - math.log(0.25)) / 80)
        nll = 0.0
        for row, k in zip(logits, y, strict=True):
            scaled = [v / t for v in row]
            m = max(scaled)
            nll -= scaled[k] - m - math.log(sum(math.exp(v - m) for v in scaled))
        if nll < best_nll:
            best_t, best_nll = t, nll
    return best_t
