"""Cross-validation folds: each train or val row is scored by exactly one fold model, which
neither trained nor chose anything on it; test rows are never used."""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.crossval import (
    assign_folds,
    figures,
    fold_rows,
    hindsight,
    main,
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


def test_the_hindsight_cut_is_the_best_f1_within_the_ham_loss_target() -> None:
    def row(i: int, spam: bool, p: float) -> dict:
        return {"id": f"m{i}", "corpus": "sms", "spam": spam, "p": p, "kind": "text",
                "own": p >= 0.95}

    # 300 hams: the target allows one above the cut (0.5 % of 300 = 1.5).
    hams = [row(i, False, 0.01 * (i % 50)) for i in range(297)]
    hams += [row(297, False, 0.99), row(298, False, 0.90), row(299, False, 0.80)]
    spams = [row(300 + i, True, p) for i, p in enumerate([0.995, 0.97, 0.93, 0.85, 0.7, 0.6])]
    rows = hams + spams
    decided = {r["id"]: r["hindsight"] for r in hindsight(rows)}
    # Cutting below 0.90 would let two hams through; the best allowed cut keeps 0.99 as its one
    # false positive and catches the spams down to 0.93, missing 0.85, 0.7 and 0.6.
    assert [decided[r["id"]] for r in spams] == [True, True, True, False, False, False]
    assert decided["m297"] and not decided["m298"]
    m = summarise({"r": rows}, [])["recipes"]["r"]["sms"]
    assert (m["hindsight"]["fp"], m["hindsight"]["fn"]) == (1, 3)
    assert (m["own"]["fp"], m["own"]["fn"]) == (1, 4)  # own decisions stay as given
    assert "| r | sms | best in hindsight (0.5 %) | 306 |" in markdown(
        summarise({"r": rows}, []), "r")


def test_a_run_on_one_corpus_pairs_with_a_recipe_of_an_earlier_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with gzip.open(data / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in _rows())

    def rows(corpus: str, miss: int) -> list[dict]:
        return [{"id": f"{corpus}{i}", "corpus": corpus, "spam": i < 20,
                 "p": 0.9 if 20 > i >= miss else 0.1, "kind": "text", "own": 20 > i >= miss}
                for i in range(100)]

    def keep(folder: Path, scores: list[dict]) -> None:
        # Models already trained and scored: the run reads their kept scores, trains nothing.
        for k in range(3):
            (folder / f"fold{k}").mkdir(parents=True)
            (folder / f"fold{k}" / "config.json").write_text("{}")
            os.utime(folder / f"fold{k}" / "config.json", (1, 1))  # older than its scores
            part = [r for i, r in enumerate(scores) if i % 3 == k]
            (folder / f"fold{k}.scores.json").write_text(json.dumps({"val": part, "test": part}))

    keep(tmp_path / "earlier" / "both", rows("sms", miss=0) + rows("email", miss=0))
    keep(tmp_path / "run" / "alone", rows("sms", miss=5))
    main(["--out", str(tmp_path / "run"), "--data", str(data), "--folds", "3",
          "--recipe", "alone=", "--against", str(tmp_path / "earlier" / "both")])
    summary = json.loads((tmp_path / "run" / "crossval.json").read_text())
    against = str(tmp_path / "earlier" / "both")
    assert list(summary["recipes"]) == [against, "alone"]
    assert list(summary["recipes"][against]) == ["sms"]  # the other corpus is left out
    assert summary["recipes"][against]["sms"]["own"]["f1"] == 1.0
    assert summary["paired"]["alone"]["sms"]["f1_difference"] < 0  # five more misses
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "run"), "--data", str(data), "--folds", "3",
              "--recipe", "alone=", "--against", str(tmp_path / "nowhere")])
