"""``eval --report DIR``: report.md with figures (matplotlib, an optional dependency)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.evaluate import Scored, corpus_of

__all__ = ["plotting_available", "write_report"]


def plotting_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _curves(y: Sequence[bool], p: Sequence[float]) -> tuple[list, list, list, list]:
    """ROC (fpr, tpr) and precision-recall (recall, precision) points, cut by cut."""
    order = sorted(range(len(p)), key=lambda i: -p[i])
    pos = sum(y) or 1
    neg = (len(y) - sum(y)) or 1
    tp = fp = 0
    fpr, tpr, rec, prec = [0.0], [0.0], [0.0], [1.0]
    for i in order:
        if y[i]:
            tp += 1
        else:
            fp += 1
        fpr.append(fp / neg)
        tpr.append(tp / pos)
        rec.append(tp / pos)
        prec.append(tp / (tp + fp))
    return fpr, tpr, rec, prec


def write_report(out: Path, result: dict[str, Any], rows: Sequence[Scored], predictor: Any) -> None:
    """Write report.md, metrics.json and PNG figures into *out*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    labels = list(predictor.labels)
    positive = result.get("positive_label")
    figures = [_confusion_figure(plt, out, rows, labels)]
    worst: list[Scored] = []
    if positive is not None:
        pos = labels.index(positive)
        figures += _curve_figures(plt, out, rows, positive, pos)
        figures.append(_score_histogram(plt, out, rows, labels, result, positive, pos))
        figures.append(_calibration_figure(plt, out, rows, positive, pos))
        worst = sorted(
            (r for r in rows if r.label != r.predicted),
            key=lambda r: -abs(float(r.label == positive) - r.probs[pos]),
        )[:20]
    lines = _summary_lines(result, labels, positive)
    for title, fname in figures:
        lines += [f"## {title}", "", f"![{title}]({fname})", ""]
    if worst:
        lines += _worst_errors(worst, labels.index(positive))
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _confusion_figure(
    plt: Any, out: Path, rows: Sequence[Scored], labels: list[str]
) -> tuple[str, str]:
    """Counts of (true, predicted) label pairs, all labels."""
    index = {name: k for k, name in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for r in rows:
        if r.label in index:
            matrix[index[r.label]][index[r.predicted]] += 1
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    _save(plt, fig, out / "confusion.png")
    return "Confusion matrix", "confusion.png"


def _curve_figures(
    plt: Any, out: Path, rows: Sequence[Scored], positive: str, pos: int
) -> list[tuple[str, str]]:
    """ROC and precision-recall curves, for all messages and per corpus."""
    groups = {"all": list(rows)}
    for src in sorted({corpus_of(r.source) for r in rows}):
        groups[src] = [r for r in rows if corpus_of(r.source) == src]
    fig_roc, ax_roc = plt.subplots(figsize=(5, 4))
    fig_pr, ax_pr = plt.subplots(figsize=(5, 4))
    for name, subset in groups.items():
        fpr, tpr, rec, prec = _curves([r.label == positive for r in subset],
                                      [r.probs[pos] for r in subset])
        ax_roc.plot(fpr, tpr, label=name)
        ax_pr.plot(rec, prec, label=name)
    ax_roc.set_xscale("symlog", linthresh=0.01)  # the low false-positive end is what matters
    fpr_axis = "false-positive rate" + (" (ham loss)" if positive == "spam" else "")
    ax_roc.set(xlabel=fpr_axis, ylabel="true-positive rate")
    ax_pr.set(xlabel="recall", ylabel="precision")
    figures = []
    for fig, ax, fname, title in (
        (fig_roc, ax_roc, "roc.png", "ROC curve"),
        (fig_pr, ax_pr, "pr.png", "Precision-recall curve"),
    ):
        ax.legend()
        ax.grid(alpha=0.3)
        _save(plt, fig, out / fname)
        figures.append((title, fname))
    return figures


def _score_histogram(
    plt: Any,
    out: Path,
    rows: Sequence[Scored],
    labels: list[str],
    result: dict[str, Any],
    positive: str,
    pos: int,
) -> tuple[str, str]:
    """p(positive) per true label (log counts), with the thresholds drawn."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in labels:
        ax.hist([r.probs[pos] for r in rows if r.label == name], bins=50, alpha=0.6, label=name)
    # One line per kind of text when the model has per-kind thresholds (email, text).
    # None: more than two labels, the decision is the most probable one (no cut to draw).
    cuts = sorted((result.get("thresholds") or {"": result["threshold"]}).items())
    cuts = [(kind, cut) for kind, cut in cuts if cut is not None]
    for (kind, cut), style in zip(cuts, ("--", ":", "-.", (0, (1, 4))), strict=False):
        name = f"threshold ({kind})" if kind else "threshold"
        ax.axvline(cut, color="k", linestyle=style, label=f"{name} {cut:.3g}")
    ax.set_yscale("log")
    ax.set(xlabel=f"p({positive})", ylabel="messages")
    ax.legend()
    _save(plt, fig, out / "scores.png")
    return "Score histogram per true label", "scores.png"


def _calibration_figure(
    plt: Any, out: Path, rows: Sequence[Scored], positive: str, pos: int
) -> tuple[str, str]:
    """Reliability diagram: mean predicted p(positive) against the observed share, 10 bins."""
    bins: list[list[Scored]] = [[] for _ in range(10)]
    for r in rows:
        bins[min(9, int(r.probs[pos] * 10))].append(r)
    xs = [sum(r.probs[pos] for r in b) / len(b) for b in bins if b]
    ys = [sum(r.label == positive for r in b) / len(b) for b in bins if b]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k:", label="perfect")
    ax.plot(xs, ys, "o-", label="model")
    ax.set(xlabel=f"predicted p({positive})", ylabel="observed share")
    ax.legend()
    _save(plt, fig, out / "calibration.png")
    return "Calibration (reliability diagram)", "calibration.png"


def _summary_lines(result: dict[str, Any], labels: list[str], positive: str | None) -> list[str]:
    """The report's head: what was evaluated, how it decides, and the metrics table."""
    lines = [
        f"# Evaluation of {result['model']}",
        "",
        f"Split: `{result.get('split')}`, {result['n']} messages.",
        "",
    ]
    if positive is None:
        lines.append(f"Accuracy {result['accuracy']:.4f}, macro F1 {result['macro_f1']:.4f}.")
        return [*lines, "", *_per_label_table(result.get("per_label", {})), ""]
    if result["threshold"] is None:
        lines += [
            f"Positive label `{positive}` against the rest, as decided (the most probable of "
            f"{len(labels)} labels). Accuracy over all labels {result['accuracy']:.4f}, macro "
            f"F1 {result['macro_f1']:.4f}.",
            "",
        ]
    else:
        lines += [
            f"Positive label `{positive}`, threshold {result['threshold']:.6g}"
            + (
                " (per kind: "
                + ", ".join(f"{k} {v:.6g}" for k, v in result["thresholds"].items())
                + ")."
                if result.get("thresholds")
                else "."
            ),
            "",
        ]
    # The JSON's ham_loss and spam_miss in prose, spam words for spam only (error_rate_names).
    fp_words, miss_words = ("ham loss", "spam miss") if positive == "spam" else (
        "false-positive rate", "miss rate")
    if positive != "spam":
        lines += [
            f"False-positive rate: the share of messages not `{positive}` that were given "
            f"`{positive}`; miss rate: the share of `{positive}` messages given another label.",
            "",
        ]
    lines += [
        f"| group | n | accuracy | precision | recall | F1 (95 % interval) | ROC-AUC | "
        f"{fp_words} | {miss_words} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in {"overall": result, **result["by_source"]}.items():
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.5f}"
        f1 = f"{m['f1']:.4f}" + (" ({:.3f}–{:.3f})".format(*m["f1_ci95"]) if "f1_ci95" in m
                                 else "")
        lines.append(
            f"| {name} | {m['n']} | {m['accuracy']:.4f} | {m['precision']:.4f} | "
            f"{m['recall']:.4f} | {f1} | {auc} | {m['ham_loss']:.4f} "
            f"({m['fp']}) | {m['spam_miss']:.4f} ({m['fn']}) |"
        )
    lines += [
        "",
        "Intervals: F1 by bootstrap over the messages (1,000 resamples), the error rates by "
        "Wilson's score interval, both 95 % (`*_ci95` in metrics.json). They say how far the "
        "figures can move on another sample of the same size.",
    ]
    return [*lines, ""]


def _worst_errors(worst: Sequence[Scored], pos: int) -> list[str]:
    """The misclassified messages furthest from their true label, with the start of each."""
    lines = ["## Worst errors", "", "| id | source | true | p | text |", "|---|---|---|---|---|"]
    for r in worst:
        snippet = " ".join(r.text.split())[:160].replace("|", "\\|")
        lines.append(f"| {r.id} | {r.source} | {r.label} | {r.probs[pos]:.4f} | {snippet} |")
    return lines


def _per_label_table(per_label: dict[str, dict[str, Any]]) -> list[str]:
    """Support, precision, recall and F1 of each label: a weak label hides in the means."""
    lines = ["| label | n | precision | recall | F1 |", "|---|---|---|---|---|"]
    for name, m in per_label.items():
        cell = name.replace("|", "\\|")  # a label is any text
        lines.append(f"| {cell} | {m['support']} | {m['precision']:.4f} | {m['recall']:.4f} | "
                     f"{m['f1']:.4f} |")
    return lines
