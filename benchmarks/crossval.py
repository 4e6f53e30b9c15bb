"""Cross-validation of training recipes on train + val: a sharper judge than validation alone.

    python benchmarks/crossval.py --out runs/cv --recipe bundled="" \\
        --recipe attention="--pooling attention" [--folds 8] [--jobs 2] [--data DIR]

The validation split has 292 spams; two recipes whose F1 differs by a point cannot be told
apart on it. Here the `train` and `val` rows of each corpus (never `test`) are dealt into
*folds* folds, stratified by corpus and label. Model k is trained as `streamclf train` always
trains: on all folds but two, with fold k + 1 as its validation split (early stopping,
temperature, per-kind thresholds), and then scores fold k, which it has never seen in any way.
Pooled over the folds, every train and val message is scored once, by a model that chose
nothing on it: eight to nine times the messages validation alone has. With 8 folds each model
trains on 75 % of train + val (84 % of train) and chooses on a fold the size of `val`, so the
pooled figures estimate what the recipe scores on unseen mail of these corpora.

Every recipe is trained with the bundled model's options (`BASE`) plus its own, on the same
folds with the same seed, so recipes are compared message by message: the paired bootstrap
interval of their F1 difference. Each fold model's thresholds are also re-chosen on its
validation fold for other ham-loss targets (`--ham-loss-targets`), which measures how far the
out-of-fold ham-loss lands from the target the thresholds were chosen for. `--ensemble` also
scores the mean of the recipes' log-odds, with thresholds chosen on each validation fold.
Each recipe and corpus also gets the best F1 in hindsight: one cut chosen on its pooled
held-out scores for ≤ 0.5 % ham-loss, the ceiling of any threshold rule, which tells a gap in
the ranking from a gap in the thresholds. `--data DIR` with one corpus in DIR trains and
scores that corpus alone (its folds are the same rows as with both corpora); `--against
OUT/NAME` then pairs it with a recipe of an earlier run on both corpora.

A fold whose artifact exists is not trained again, so an interrupted run resumes. Results go
to ``OUT/crossval.json`` and a markdown table to standard output.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shlex
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA_DIR  # noqa: E402
from model.evaluate import corpus_of, load_eval_examples, score_examples  # noqa: E402
from model.metrics import (  # noqa: E402
    binary_metrics,
    choose_threshold,
    choose_thresholds,
    f1_difference_interval,
    f1_interval,
    logit,
    roc_auc,
    sigmoid,
    wilson_interval,
)
from model.predictor import Predictor  # noqa: E402

# The bundled model's recipe (docs/model-card.md, "Reproduce") with the epoch settings of its
# seed-spread runs, which stop at the same best epoch in about two thirds of the time.
BASE = ("--epochs 5 --patience 2 --seed 7 --max-minutes 14 --threads 1 --max-tokens 512 "
        "--bag-bigrams 524288 --bag-dropout 0.3")


def assign_folds(rows: Sequence[dict], folds: int, seed: int) -> dict[str, int]:
    """Fold of each train or val row id (test rows get none), dealt round-robin within each
    label after a seeded shuffle, so every fold holds each label in the same share."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if row.get("split") in ("train", "val"):
            by_label[str(row["label"])].append(row["id"])
    rng = random.Random(seed)
    fold_of: dict[str, int] = {}
    for label in sorted(by_label):
        ids = sorted(by_label[label])
        rng.shuffle(ids)
        fold_of.update((i, k % folds) for k, i in enumerate(ids))
    return fold_of


def fold_rows(rows: Sequence[dict], fold_of: dict[str, int], fold: int, folds: int) -> list[dict]:
    """The rows for model *fold*: its fold as `test` (scored only), the next as `val`, the rest
    as `train`; the corpus's own test rows are left out."""
    role = {fold: "test", (fold + 1) % folds: "val"}
    return [{**row, "split": role.get(fold_of[row["id"]], "train")}
            for row in rows if row["id"] in fold_of]


def write_folds(data: Path, out: Path, folds: int, seed: int) -> list[list[Path]]:
    """Per fold, the data files written for it (one per corpus), under ``out/data/foldK``."""
    files: list[list[Path]] = [[] for _ in range(folds)]
    for source in sorted(data.glob("*.jsonl.gz")):
        with gzip.open(source, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        fold_of = assign_folds(rows, folds, seed)
        for k in range(folds):
            target = out / "data" / f"fold{k}" / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            with gzip.open(partial, "wt", encoding="utf-8") as f:
                f.writelines(json.dumps(row) + "\n" for row in fold_rows(rows, fold_of, k, folds))
            partial.replace(target)  # a run reading the folds never sees half a file
            files[k].append(target)
    return files


def train_fold(files: Sequence[Path], model_dir: Path, options: str) -> None:
    """Train one fold model with `streamclf train` (skipped when its artifact exists)."""
    if (model_dir / "config.json").exists():
        return
    command = [sys.executable, "-m", "model.cli", "train", "--data", *map(str, files),
               "--out", str(model_dir), "--force", "--quiet", *shlex.split(BASE),
               *shlex.split(options)]
    log = model_dir.with_suffix(".log")
    with log.open("w") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT,
                              cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"training {model_dir} failed ({done.returncode}); see {log}")


def score_fold(files: Sequence[Path], model_dir: Path) -> dict[str, list[dict]]:
    """The fold model's scores on its validation fold (``val``) and on the fold it holds out
    (``test``): per message truth, p(spam), kind, corpus and the model's own decision. Kept
    beside the model (``foldK.scores.json``) and read from there while the model is older."""
    kept = model_dir.with_suffix(".scores.json")
    if kept.exists() and kept.stat().st_mtime > (model_dir / "config.json").stat().st_mtime:
        return json.loads(kept.read_text())  # type: ignore[no-any-return]
    predictor = Predictor.load(model_dir, device="cpu")
    pos = predictor.labels.index("spam")

    def scored(split: str) -> list[dict]:
        rows = score_examples(predictor, load_eval_examples(files, split))
        return [{"id": r.id, "corpus": corpus_of(r.source), "spam": r.label == "spam",
                 "p": r.probs[pos], "kind": r.kind, "own": r.predicted == "spam"} for r in rows]

    result = {"val": scored("val"), "test": scored("test")}
    kept.write_text(json.dumps(result))
    return result


def mean_of(folds: Sequence[dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """Several models' scores of one fold combined by the mean of their log-odds (an
    ensemble); its own decision is made at thresholds chosen on the validation fold for a
    0.5 % ham-loss, as training chooses a model's."""
    out = {}
    for split in ("val", "test"):
        rows = [dict(r) for r in folds[0][split]]
        for r, *others in zip(rows, *(f[split] for f in folds[1:]), strict=True):
            assert all(o["id"] == r["id"] for o in others)
            z = (logit(r["p"], 1e-7) + sum(logit(o["p"], 1e-7) for o in others)) / len(folds)
            r["p"] = sigmoid(z)
        out[split] = rows
    cuts = _thresholds(out["val"], 0.005)
    for r in out["test"]:
        r["own"] = r["p"] >= cuts.get(r["kind"], 0.5)
    return out


def rechoose(fold: dict[str, list[dict]], targets: Sequence[float]) -> list[dict]:
    """The held-out rows, each with its decision (under the target's name) at thresholds
    re-chosen on the validation fold for each ham-loss target."""
    held = [dict(r) for r in fold["test"]]
    for target in targets:
        cuts = _thresholds(fold["val"], target)
        for r in held:
            r[str(target)] = r["p"] >= cuts.get(r["kind"], 0.5)
    return held


def _thresholds(val: Sequence[dict], target: float) -> dict[str, float]:
    """Per-kind thresholds chosen on scored validation rows, as training chooses them."""
    return choose_thresholds([r["spam"] for r in val], [r["p"] for r in val],
                             [r["kind"] for r in val], [r["corpus"] for r in val], target)


def figures(rows: Sequence[dict], key: str) -> dict[str, Any]:
    """F1, error counts and rates with their 95 % intervals for the decisions under *key*."""
    truth = [r["spam"] for r in rows]
    m = binary_metrics(truth, [r["p"] for r in rows], 0.5,
                       [0.0 if r[key] else 2.0 for r in rows])  # the decisions as given
    # Pooled out-of-fold scores: each fold model's own calibration, ranked together.
    m["roc_auc"] = roc_auc(truth, [r["p"] for r in rows])
    m["f1_ci95"] = f1_interval(m["tp"], m["fp"], m["tn"], m["fn"])
    m["ham_loss_ci95"] = wilson_interval(m["fp"], m["fp"] + m["tn"])
    m["spam_miss_ci95"] = wilson_interval(m["fn"], m["fn"] + m["tp"])
    return {k: m[k] for k in ("n", "f1", "f1_ci95", "precision", "recall", "tp", "fp", "tn",
                              "fn", "ham_loss", "ham_loss_ci95", "spam_miss", "spam_miss_ci95",
                              "roc_auc")}


def hindsight(rows: Sequence[dict], target: float = 0.005) -> list[dict]:
    """The rows, each with its decision (``hindsight``) at the one cut with the best F1 among
    those that keep *rows*' own ham-loss ≤ *target*, chosen on the held-out scores themselves.
    No threshold rule can do better with these scores: a recipe that misses a target here
    misses it in its ranking, not in its thresholds."""
    cut = choose_threshold([r["spam"] for r in rows], [r["p"] for r in rows],
                           max_ham_loss=target)
    return [{**r, "hindsight": r["p"] >= cut} for r in rows]


def summarise(scored: dict[str, list[dict]], targets: Sequence[float]) -> dict[str, Any]:
    """Per recipe and corpus: figures at the models' own thresholds and at each re-chosen
    target; per later recipe and corpus: its F1 minus the first recipe's, paired."""
    out: dict[str, Any] = {"recipes": {}, "paired": {}}
    first = next(iter(scored))
    for name, rows in scored.items():
        per: dict[str, Any] = {}
        for corpus in sorted({r["corpus"] for r in rows}):
            mine = [r for r in rows if r["corpus"] == corpus]
            per[corpus] = {"own": figures(mine, "own"),
                           **{str(t): figures(mine, str(t)) for t in targets},
                           "hindsight": figures(hindsight(mine), "hindsight")}
        out["recipes"][name] = per
        if name == first:
            continue
        base = {r["id"]: r for r in scored[first]}
        out["paired"][name] = {}
        for corpus in per:
            mine = [r for r in rows if r["corpus"] == corpus]
            diff, low, high = f1_difference_interval(
                [r["spam"] for r in mine], [r["own"] for r in mine],
                [base[r["id"]]["own"] for r in mine])
            out["paired"][name][corpus] = {"f1_difference": diff, "ci95": [low, high]}
    return out


def markdown(summary: dict[str, Any], first: str) -> str:
    """The summary as two markdown tables: figures per recipe, and differences to *first*."""
    lines = ["| recipe | corpus | thresholds | n | F1 (95 % interval) | FP | FN | "
             "ham loss (95 % interval) | spam miss | ROC-AUC |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, per in summary["recipes"].items():
        for corpus, by_key in per.items():
            for key, m in by_key.items():
                cut = {"own": "own (0.5 %)", "hindsight": "best in hindsight (0.5 %)"}.get(
                    key) or f"re-chosen at {float(key):.2%}"
                lo, hi = m["f1_ci95"]
                hl, hh = m["ham_loss_ci95"]
                lines.append(
                    f"| {name} | {corpus} | {cut} | {m['n']} | {m['f1']:.3f} ({lo:.3f}–{hi:.3f})"
                    f" | {m['fp']} | {m['fn']} | {m['ham_loss']:.2%} ({hl:.2%}–{hh:.2%}) | "
                    f"{m['spam_miss']:.2%} | {m['roc_auc']:.4f} |")
    if summary["paired"]:
        lines += ["", f"| recipe − {first} | corpus | F1 difference (paired 95 % interval) |",
                  "|---|---|---|"]
        for name, per in summary["paired"].items():
            for corpus, d in per.items():
                lo, hi = d["ci95"]
                lines.append(f"| {name} | {corpus} | {d['f1_difference']:+.3f} "
                             f"({lo:+.3f} to {hi:+.3f}) |")
    return "\n".join(lines)


def parse_recipe(text: str) -> tuple[str, str]:
    """``name=options`` → (name, options); the name names the runs' folder."""
    name, sep, options = text.partition("=")
    if not sep or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"expected NAME=OPTIONS (NAME: letters, digits, - or _),"
                                         f" got {text!r}")
    return name, options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=parse_recipe, action="append", required=True,
                        help="NAME=OPTIONS: `streamclf train` options added to BASE (repeat; "
                             "the first is the one the others are compared with)")
    parser.add_argument("--out", type=Path, required=True, help="folder for folds and models")
    parser.add_argument("--folds", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2, help="trainings run side by side")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fold assignment")
    parser.add_argument("--ham-loss-targets", type=float, nargs="*", default=[0.0025],
                        help="ham-loss targets thresholds are re-chosen for")
    parser.add_argument("--ensemble", action="store_true",
                        help="also score the mean of the recipes' log-odds (one more model each)")
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--against", type=Path, metavar="OUT/NAME",
                        help="a recipe of an earlier run with the same --folds and --seed, "
                             "compared with first (read from its kept scores)")
    args = parser.parse_args(argv)
    if args.folds < 3:
        parser.error("--folds must be at least 3 (one to score, one to validate, one to train)")
    recipes = dict(args.recipe)
    if len(recipes) != len(args.recipe):
        parser.error("recipe names must differ")
    kept = [args.against / f"fold{k}.scores.json" for k in range(args.folds)] if args.against \
        else []
    if not all(path.exists() for path in kept):  # said before hours of training, not after
        parser.error(f"--against {args.against}: no scores of {args.folds} fold models")
    files = write_folds(args.data, args.out, args.folds, args.seed)
    if not any(files):
        parser.error(f"no *.jsonl.gz in {args.data}")
    jobs = [(files[k], args.out / name / f"fold{k}", options)
            for name, options in recipes.items() for k in range(args.folds)]
    for _, model_dir, _ in jobs:
        model_dir.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda job: train_fold(*job), jobs))
    folds = {name: [score_fold(files[k], args.out / name / f"fold{k}")
                    for k in range(args.folds)] for name in recipes}
    if args.against:
        # Fold rows depend only on the corpus, --folds and --seed, so the earlier models held
        # out the same messages: their rows of this run's corpora pair message by message.
        corpora = {r["corpus"] for r in folds[next(iter(recipes))][0]["test"]}
        folds = {str(args.against): [
            {split: [r for r in rows if r["corpus"] in corpora] for split, rows in
             json.loads(path.read_text()).items()} for path in kept], **folds}
    if args.ensemble and len(recipes) > 1:
        folds[" + ".join(recipes)] = [mean_of([folds[name][k] for name in recipes])
                                      for k in range(args.folds)]
    scored = {name: [r for fold in per for r in rechoose(fold, args.ham_loss_targets)]
              for name, per in folds.items()}
    summary = {"folds": args.folds, "seed": args.seed, "base": BASE, "recipes_options": recipes,
               **summarise(scored, args.ham_loss_targets)}
    (args.out / "crossval.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(markdown(summary, next(iter(folds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
