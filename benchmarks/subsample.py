"""A learning-curve point: the shared corpora with only a share of their `train` rows.

    python benchmarks/subsample.py --share 0.75 --out runs/lc75-data [--seed 1] [--data DIR]

Writes each `*.jsonl.gz` of the data folder to *out* with `share` of its train rows of each label
kept (drawn with *seed*) and every `val` and `test` row unchanged, so a model trained on the
result is judged on the same validation and test messages as one trained on all of train.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA_DIR  # noqa: E402


def subsample(source: Path, target: Path, share: float, seed: int) -> dict[str, int]:
    """Copy *source* to *target* without (1 - share) of each label's train rows; the counts
    of rows read and kept."""
    with gzip.open(source, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    train_ids: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if row.get("split") == "train":
            train_ids[row["label"]].append(row["id"])
    rng = random.Random(seed)
    dropped: set[str] = set()
    for ids in train_ids.values():  # labels in the order the file first names them
        ids.sort()
        rng.shuffle(ids)
        dropped.update(ids[: int(len(ids) * (1 - share))])
    kept = [row for row in rows if row["id"] not in dropped]
    with gzip.open(target, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in kept)
    return {"read": len(rows), "kept": len(kept)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--share", type=float, required=True, help="share of train rows kept")
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    if not 0 < args.share <= 1:
        parser.error("--share must be within (0, 1]")
    sources = sorted(args.data.glob("*.jsonl.gz"))
    if not sources:
        parser.error(f"no *.jsonl.gz in {args.data}")
    args.out.mkdir(parents=True, exist_ok=True)
    for source in sources:
        counts = subsample(source, args.out / source.name, args.share, args.seed)
        print(f"{source.name}: kept {counts['kept']} of {counts['read']} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
