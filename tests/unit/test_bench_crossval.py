"""Cross-validation folds: each train or val row is scored by exactly one fold model, which
neither trained nor chose anything on it; test rows are never used."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.crossval import (
    assign_folds,
    figures,
    fold_rows,
    markdown,
    mean_of,
    parse_recipe,
    rechoose,
    summarise,
    write_folds,
)


def _rows() -> list[dict]:
    rows = [{"id": f"s{i}", "label": "spam", "split": "train", "text": f"win {i}"}
            for i in range(40)]
    rows += [{"id": f"h{i}", "label": "ham", "split": "train", "text": f"hi {i}"}
             for i in range(100)]
    rows += [{"id": f"v{i}", "label": "ham" if i % 3 else "spam", "split": "val", "text": "v"}
             for i in range(20)]
    rows += [{"id": f"t{i}", "label": "spam", "split": "test", "text": "t"} for i in range(9)]
    return rows


def test_folds_are_stratified_seeded_and_leave_test_rows_out() -> None:
    rows = _rows()
    fold_of = assign_folds(rows, 4, seed=1)
    assert set(fold_of) == {r["id"] for r in rows if r["split"] != "test"}
    per_fold = Counter((fold_of[r["id"]], r["label"]) for r in rows if r["id"] in fold_of)
    spams = [per_fold[(k, "spam")] for k in range(4)]
    hams = [per_fold[(k, "ham")] for k in range(4)]
    assert max(spams) - min(spams) <= 1 and max(hams) - min(hams) <= 1
    assert assign_folds(rows, 4, seed=1) == fold_of
    assert assign_folds(rows, 4, seed=2) != fold_of  # the seed deals the rows


def test_each_fold_model_scores_one_fold_validates_on_the_next_and_trains_on_the_rest() -> None:
    rows = _rows()
    fold_of = assign_folds(rows, 4, seed=1)
    scored_by: Counter[str] = Counter()
    for k in range(4):
        mine = fold_rows(rows, fold_of, k, 4)
        assert len(mine) == len(fold_of)
        for row in mine:
            fold = fold_of[row["id"]]
            expected = "test" if fold == k else "val" if fold == (k + 1) % 4 else "train"
            assert row["split"] == expected
            scored_by[row["id"]] += row["split"] == "test"
        assert {r["id"]: r["text"] for r in mine} == {r["id"]: r["text"] for r in rows
                                                       if r["id"] in fold_of}
    assert set(scored_by.values()) == {1}  # every train/val row held out exactly once
    assert rows == _rows()  # the corpus rows are not rewritten in place


def test_fold_files_are_written_per_corpus(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with gzip.open(data / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in _rows())
    files = write_folds(data, tmp_path / "out", 3, seed=1)
    assert [p.relative_to(tmp_path / "out").as_posix() for fold in files for p in fold] == [
        f"data/fold{k}/corpus.jsonl.gz" for k in range(3)]
    with gzip.open(files[2][0], "rt", encoding="utf-8") as f:
        splits = Counter(json.loads(line)["split"] for line in f)
    assert sum(splits.values()) == 160 and set(splits) == {"train", "val", "test"}


def test_figures_and_the_paired_difference_follow_the_decisions() -> None:
    def row(i: int, spam: bool, own: bool, p: float) -> dict:
        return {"id": f"m{i}", "corpus": "sms", "spam": spam, "p": p, "kind": "text",
                "own": own, "0.005": own}

    truth = [True] * 20 + [False] * 80
    good = [row(i, t, t, 0.9 if t else 0.1) for i, t in enumerate(truth)]
    poor = [row(i, t, t and i % 2 == 0, 0.9 if t else 0.1) for i, t in enumerate(truth)]
    m = figures(good, "own")
    assert (m["tp"], m["fp"], m["fn"], m["f1"], m["roc_auc"]) == (20, 0, 0, 1.0, 1.0)
    m = figures(poor, "own")
    assert (m["tp"], m["fn"], m["spam_miss"]) == (10, 10, 0.5)
    assert m["f1_ci95"][0] < m["f1"] < m["f1_ci95"][1]

    summary = summarise({"good": good, "poor": poor}, [0.005])
    assert summary["recipes"]["poor"]["sms"]["0.005"]["f1"] == m["f1"]
    paired = summary["paired"]["poor"]["sms"]
    assert paired["f1_difference"] == pytest.approx(m["f1"] - 1.0)
    assert paired["ci95"][1] < 0  # ten more misses in 100 messages: worse beyond chance
    table = markdown(summary, "good")
    assert "| poor | sms | own (0.5 %) | 100 | 0.667" in table
    assert "| poor | sms | -0.333" in table


def test_a_recipe_is_a_name_and_options() -> None:
    assert parse_recipe("big=--embed-dim 128") == ("big", "--embed-dim 128")
    assert parse_recipe("bundled=") == ("bundled", "")
    for bad in ("no-options", "=--lr 1", "a b=--lr 1"):
        with pytest.raises(Exception, match="NAME=OPTIONS"):
            parse_recipe(bad)


def test_thresholds_are_re_chosen_on_the_validation_fold_and_an_ensemble_averages_log_odds(
) -> None:
    def rows(ps: list[float], spam: list[bool]) -> list[dict]:
        return [{"id": f"m{i}", "corpus": "sms", "spam": s, "p": p, "kind": "text", "own": False}
                for i, (p, s) in enumerate(zip(ps, spam, strict=True))]

    spam = [False] * 6 + [True] * 4
    val = rows([0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.6, 0.8, 0.9, 0.95], spam)
    held = rows([0.1, 0.2, 0.3, 0.65, 0.72, 0.8, 0.2, 0.85, 0.9, 0.95], spam)
    fold = {"val": val, "test": held}
    decided = rechoose(fold, [0.005])
    # No validation ham may reach the cut, so it lies between the ham at 0.7 and the spam at
    # 0.8: the held-out ham at 0.8 is a false positive, the spam at 0.2 a miss.
    assert [r["0.005"] for r in decided] == [False] * 5 + [True, False, True, True, True]
    assert decided[5] == held[5] | {"0.005": True} and "0.005" not in held[5]  # copied

    other = {"val": rows([0.9, 0.2, 0.3, 0.4, 0.5, 0.1, 0.6, 0.8, 0.9, 0.95], spam),
             "test": rows([0.9, 0.2, 0.3, 0.65, 0.72, 0.8, 0.2, 0.85, 0.9, 0.95], spam)}
    both = mean_of([fold, other])
    assert both["test"][0]["p"] == pytest.approx(0.5)  # log-odds of 0.1 and 0.9 cancel
    assert both["test"][3]["p"] == pytest.approx(0.65)
    assert fold["test"][0]["p"] == 0.1  # the models' own rows are left as they were
    # The mean's validation hams reach 0.5 at most, its spams start at 0.6: the cut lies
    # between, so the held-out hams at 0.65, 0.72 and 0.8 are now false positives.
    assert [r["own"] for r in both["test"]] == [False] * 3 + [True] * 3 + [False] + [True] * 3
