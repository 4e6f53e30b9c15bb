"""The learning-curve data: a share of each label's train rows, validation and test untouched."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

from benchmarks.subsample import subsample


def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_a_share_of_each_labels_train_rows_is_kept_and_nothing_else_changes(
    tmp_path: Path,
) -> None:
    rows = [{"id": f"s{i}", "label": "spam", "split": "train", "text": f"win {i}"}
            for i in range(40)]
    rows += [{"id": f"h{i}", "label": "ham", "split": "train", "text": f"hi {i}"}
             for i in range(120)]
    rows += [{"id": f"v{i}", "label": "ham", "split": "val", "text": "v"} for i in range(7)]
    rows += [{"id": f"t{i}", "label": "spam", "split": "test", "text": "t"} for i in range(5)]
    source = tmp_path / "corpus.jsonl.gz"
    with gzip.open(source, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)

    counts = subsample(source, tmp_path / "out.jsonl.gz", 0.75, seed=1)
    kept = _rows(tmp_path / "out.jsonl.gz")
    assert counts == {"read": 172, "kept": len(kept)}
    by_group = Counter((row["split"], row["label"]) for row in kept)
    assert by_group == {("train", "spam"): 30, ("train", "ham"): 90, ("val", "ham"): 7,
                        ("test", "spam"): 5}
    assert all(row in rows for row in kept)  # rows are copied, never rewritten
    assert [row["id"] for row in kept] == [row["id"] for row in rows if row in kept]  # in order

    again = subsample(source, tmp_path / "again.jsonl.gz", 0.75, seed=1)
    assert again == counts and _rows(tmp_path / "again.jsonl.gz") == kept
    subsample(source, tmp_path / "other.jsonl.gz", 0.75, seed=2)
    assert _rows(tmp_path / "other.jsonl.gz") != kept  # the seed draws the rows
