"""Which input features could help the model? A quick linear proxy, judged on validation.

    python benchmarks/feature_proxy.py words pairs words+chars ... [--seeds 1 2] [--data DIR]

Each feature set is a logistic regression on the *presence* of hashed features, trained on the
pooled train splits (class-balanced loss, the model's own tokens of its own texts) and judged on
the validation split per corpus: ROC-AUC, and F1 (false positives / misses) at the best cut whose
ham-loss is ≤ 0.5 %. Seconds per run instead of the LSTM's minutes, so a feature family can be
ruled out before a training recipe is built on it. Features, joined with `+`:

    words   the model's tokens (512, head + tail)       pairs   adjacent token pairs
    triples adjacent token triples
    subs    character 3-5-grams inside each word        chars   character 3-5-grams of the token
            (fastText-style subwords)                           stream, across word boundaries
    structure  what the reader's text drops of an email's form: each MIME part's type, transfer
            encoding and charset, and the HTML tag names and tag@attribute names of its HTML
            parts (emails only; a plain text has none)

`--wider-normalisation` first rewrites each text so that the tokenizer also reads phone numbers
written in groups ("0844 861 85 85", 10-13 digits) as `<phone>` and bare domains ("wire3.net")
as `<url>` plus the domain: a tokenizer change judged here before any retraining.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import zlib
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.accuracy import load_corpora  # noqa: E402
from benchmarks.common import DATA_DIR  # noqa: E402
from model.data import example_text  # noqa: E402
from model.email import MAX_HTML_CHARS, parse_message  # noqa: E402
from model.metrics import choose_threshold, roc_auc  # noqa: E402
from model.tokenizer import tokenize  # noqa: E402

BUCKETS = 1 << 21
FAMILIES = ("words", "pairs", "triples", "subs", "chars", "structure")


_GROUPED_PHONE = re.compile(
    r"(?<![\w.,:/])\+?\(?\d{1,5}\)?(?:[ .-]\(?\d{2,5}\)?){2,4}(?![.,:/]?\d)")
_BARE_DOMAIN = re.compile(
    r"(?<![\w.@/-])([a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)*"
    r"\.(?:com|net|org|biz|info|co\.uk|org\.uk|uk|tv|mobi|ws|cc|us)\b)", re.IGNORECASE)


def _joined_phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return digits if 10 <= len(digits) <= 13 else match.group()


def widen_normalisation(text: str) -> str:
    """Grouped phone numbers joined (the tokenizer's `<phone>` wants 10+ digits in one run) and
    bare domains given a scheme (its `<url>` wants `http`/`www.`)."""
    return _BARE_DOMAIN.sub(r"http://\1", _GROUPED_PHONE.sub(_joined_phone, text))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.add("h:" + tag)
        self.found.update(f"h:{tag}@{name}" for name, _ in attrs)


def structure(raw: bytes | None) -> set[str]:
    """An email's form: part types, encodings, charsets, HTML tags (empty for plain text)."""
    if raw is None:
        return set()
    found = set()
    for part in parse_message(raw).walk():  # the reader's own bounded parse
        kind = part.get_content_type()
        found.add("m:" + kind)
        found.add(f"m:{kind}:{str(part.get('content-transfer-encoding', '')).strip().lower()}")
        found.add(f"m:charset:{part.get_content_charset() or ''}")
        if kind == "text/html":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                tags = _Tags()
                try:
                    tags.feed(payload[:MAX_HTML_CHARS].decode("latin-1"))
                except Exception:  # a proxy: a broken part only loses its tags
                    pass
                found |= tags.found
    return found


def _bucket(feature: str) -> int:
    return zlib.crc32(feature.encode("utf-8")) % BUCKETS


def _grams(s: str) -> list[str]:
    return [s[i:i + n] for n in (3, 4, 5) for i in range(len(s) - n + 1)]


def features(text: str, families: Sequence[str], raw: bytes | None = None) -> list[int]:
    """The sorted distinct buckets of one text's features (`raw`: the email it was read from)."""
    tokens = tokenize(text, 512)
    found: set[str] = set()
    if "structure" in families:
        found |= structure(raw)
    if "words" in families:
        found.update("w:" + t for t in tokens)
    if "pairs" in families:
        found.update(f"p:{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False))
    if "triples" in families:
        found.update(f"t:{a} {b} {c}"
                     for a, b, c in zip(tokens, tokens[1:], tokens[2:], strict=False))
    if "subs" in families:
        for t in tokens:
            if not t.startswith("<"):  # not the normalised <url>, <num3>, ... tokens
                found.update("s:" + g for g in _grams(f"<{t}>"))
    if "chars" in families:
        found.update("c:" + g for g in _grams(" ".join(tokens)))
    return sorted({_bucket(f) for f in found})


def _scores(bag: torch.nn.EmbeddingBag, bias: torch.Tensor, rows: Sequence[list[int]]
            ) -> torch.Tensor:
    flat = torch.tensor([i for r in rows for i in r], dtype=torch.long)
    offsets = torch.tensor([0] + [len(r) for r in rows[:-1]], dtype=torch.long).cumsum(0)
    return bag(flat, offsets).squeeze(1) + bias


Row = tuple[str, bool, str, bytes | None]  # corpus, is spam, model text, raw email


def run(texts: dict[str, list[Row]], families: Sequence[str], seed: int,
        epochs: int = 6) -> dict[str, tuple[float, float, int, int]]:
    """corpus → (ROC-AUC, F1, false positives, misses) on validation."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    rows = {s: [features(t, families, raw) for _, _, t, raw in texts[s]]
            for s in ("train", "val")}
    y = torch.tensor([spam for _, spam, _, _ in texts["train"]], dtype=torch.float32)
    bag = torch.nn.EmbeddingBag(BUCKETS, 1, mode="sum", sparse=True)
    torch.nn.init.zeros_(bag.weight)
    bias = torch.zeros(1, requires_grad=True)
    optimisers = [torch.optim.SparseAdam(list(bag.parameters()), lr=0.02),
                  torch.optim.Adam([bias], lr=0.02)]
    weight = torch.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean()))  # class-balanced
    order = list(range(len(y)))
    for _ in range(epochs):
        rng.shuffle(order)
        for k in range(0, len(order), 64):
            batch = order[k:k + 64]
            z = _scores(bag, bias, [rows["train"][i] for i in batch])
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(
                z, y[batch], reduction="none") * weight[batch]).mean()
            for opt in optimisers:
                opt.zero_grad()
            loss.backward()
            for opt in optimisers:
                opt.step()
    with torch.no_grad():
        p = torch.sigmoid(_scores(bag, bias, rows["val"])).tolist()
    out = {}
    for corpus in sorted({row[0] for row in texts["val"]}):
        idx = [i for i, row in enumerate(texts["val"]) if row[0] == corpus]
        truth, score = [texts["val"][i][1] for i in idx], [p[i] for i in idx]
        cut = choose_threshold(truth, score)
        tp = sum(1 for t, s in zip(truth, score, strict=True) if t and s >= cut)
        fp = sum(1 for t, s in zip(truth, score, strict=True) if not t and s >= cut)
        fn = sum(truth) - tp
        out[corpus] = (roc_auc(truth, score) or 0.0, 2 * tp / (2 * tp + fp + fn), fp, fn)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sets", nargs="+", help="feature sets, e.g. words pairs words+chars")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--wider-normalisation", action="store_true",
                        help="grouped phone numbers and bare domains normalised too")
    args = parser.parse_args(argv)
    for name in args.sets:
        unknown = set(name.split("+")) - set(FAMILIES)
        if unknown:
            parser.error(f"unknown feature family {sorted(unknown)}; choose from {FAMILIES}")
    data = load_corpora(args.data)
    rewrite = widen_normalisation if args.wider_normalisation else (lambda text: text)
    texts = {split: [(corpus, ex.label == "spam", rewrite(example_text(ex)), ex.raw)
                     for corpus in data for ex in data[corpus][split]]
             for split in ("train", "val")}
    print("| features | seed | SpamAssassin AUC | F1 (FP / FN) | SMS AUC | F1 (FP / FN) |")
    print("|---|---|---|---|---|---|")
    for name in args.sets:
        for seed in args.seeds:
            r = run(texts, name.split("+"), seed)
            cells = [f"{r[c][0]:.4f} | {r[c][1]:.3f} ({r[c][2]} / {r[c][3]})"
                     for c in ("spamassassin", "sms")]
            print(f"| {name} | {seed} | {' | '.join(cells)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
