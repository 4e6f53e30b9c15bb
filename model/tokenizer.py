"""Text → normalised tokens → vocabulary ids.

One regular-expression pass, lower-cased words, and special tokens for the things whose exact
value matters less than their kind: URLs (plus their domain), email addresses, money, phone
numbers and numbers by digit count (SMS short codes have five). Work is bounded on huge input:
only the head and the tail of the text are ever scanned.

Standard library only.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "PAD",
    "UNK",
    "PAD_ID",
    "UNK_ID",
    "Vocab",
    "tokenize",
    "truncate",
    "TOKENIZER_VERSION",
]

TOKENIZER_VERSION = 1
PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
SPECIALS = (PAD, UNK, "<url>", "<email>", "<money>", "<phone>", "<caps>", "<long>")

# Characters scanned per token wanted: generous, tokens average ~6 characters in mail.
_CHARS_PER_TOKEN = 16
_MAX_WORD = 24

_TOKEN_RE = re.compile(
    r"""
    (?P<url>(?:https?://|www\.)[^\s<>"')\]]+)
  | (?P<email>[\w.+-]{1,256}@[\w-]+(?:\.[\w-]+)+)
  | (?P<money>[$£€¥]\s?\d[\d,]*(?:\.\d+)?|\d[\d,]*(?:\.\d+)?\s?(?:usd|gbp|eur|dollars?|pounds?)\b)
  | (?P<phone>\+?\d[\d-]{8,}\d)
  | (?P<num>\d+(?:[.,:/]\d+)*)
  | (?P<word>[^\W\d_]+(?:['’][^\W\d_]+)?)
  | (?P<punct>[!?%*&#@])
    """,
    re.VERBOSE | re.IGNORECASE,
)
_DOMAIN_RE = re.compile(r"^(?:https?://)?(?:[^/@]*@)?([^/:?#]+)", re.IGNORECASE)


def _url_domain(url: str) -> str:
    """The last two labels of a URL's host (``www.a.example.com`` → ``example.com``)."""
    match = _DOMAIN_RE.match(url)
    if not match:
        return ""
    labels = [lab for lab in match.group(1).lower().split(".") if lab]
    return ".".join(labels[-2:])[:40] if len(labels) >= 2 else ""


def _scan(text: str, limit: int | None) -> list[str]:
    """Tokens of *text* in order; stops after *limit* tokens."""
    out: list[str] = []
    append = out.append
    for match in _TOKEN_RE.finditer(text):
        kind = match.lastgroup
        value = match.group()
        if kind == "word":
            if len(value) > _MAX_WORD:
                append("<long>")
            else:
                if len(value) >= 3 and value.isupper():
                    append("<caps>")  # shouting is a signal in its own right
                append(value.lower())
        elif kind == "num":
            digits = sum(ch.isdigit() for ch in value)
            append(f"<num{min(digits, 7)}>")
        elif kind == "url":
            append("<url>")
            domain = _url_domain(value)
            if domain:
                append(domain)
        elif kind == "punct":
            append(value)
        else:
            append(f"<{kind}>")
        if limit is not None and len(out) >= limit:
            break
    return out


def tokenize(text: str, max_tokens: int | None = None, head_fraction: float = 0.75) -> list[str]:
    """Normalised tokens of *text*; with *max_tokens*, its head and tail within that budget.

    Only ``max_tokens * 16`` characters from each end are scanned, so million-character input
    costs no more than a long email.
    """
    if max_tokens is None:
        return _scan(text, None)
    if max_tokens <= 0:
        return []
    window = max_tokens * _CHARS_PER_TOKEN
    if len(text) <= 2 * window:
        return truncate(_scan(text, None), max_tokens, head_fraction)
    head_n = max(1, int(max_tokens * head_fraction))
    tail_n = max_tokens - head_n
    head = _scan(text[:window], head_n)[:head_n]  # "<caps>" comes with its word
    tail = _scan(text[-window:], None)[-tail_n:] if tail_n else []
    return head + tail


def truncate(seq: Sequence, max_tokens: int, head_fraction: float = 0.75) -> list:
    """Keep the first ``head_fraction`` of the budget and fill the rest from the end."""
    if len(seq) <= max_tokens:
        return list(seq)
    head_n = max(1, int(max_tokens * head_fraction))
    tail_n = max_tokens - head_n
    return list(seq[:head_n]) + (list(seq[-tail_n:]) if tail_n else [])


class Vocab:
    """Token ↔ id mapping; id 0 is padding, id 1 stands for every unknown token."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[:2]) != (PAD, UNK):
            raise ValueError("a vocabulary starts with <pad>, <unk>")
        self.itos: list[str] = list(tokens)
        self.stoi: dict[str, int] = {tok: i for i, tok in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("duplicate tokens in vocabulary")

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(
        cls, token_lists: Iterable[Sequence[str]], max_size: int = 20_000, min_freq: int = 2
    ) -> Vocab:
        """The *max_size* most frequent tokens seen at least *min_freq* times (ties by token)."""
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        ranked = sorted(
            (tok for tok, n in counts.items() if n >= min_freq and tok not in SPECIALS),
            key=lambda tok: (-counts[tok], tok),
        )
        return cls([*SPECIALS, *ranked[: max(0, max_size - len(SPECIALS))]])

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of *tokens*; unknown tokens map to ``UNK_ID``."""
        get = self.stoi.get
        return [get(tok, UNK_ID) for tok in tokens]

    def to_json(self) -> str:
        return json.dumps({"version": TOKENIZER_VERSION, "tokens": self.itos}, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str) -> Vocab:
        obj = json.loads(data)
        if not isinstance(obj, dict) or not isinstance(obj.get("tokens"), list):
            raise ValueError("vocabulary JSON must be an object with a 'tokens' list")
        if obj.get("version") != TOKENIZER_VERSION:
            raise ValueError(f"vocabulary made by tokenizer version {obj.get('version')}")
        return cls([str(tok) for tok in obj["tokens"]])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


class TextTokenizer:
    """Text → token ids for one model. Torch-free and picklable, so that a decoding process
    (`input.decode_processes`) can hold a copy of it."""

    def __init__(self, vocab: Vocab, max_tokens: int, head_fraction: float = 0.75) -> None:
        self.vocab = vocab
        self.max_tokens = max_tokens
        self.head_fraction = head_fraction

    def __call__(self, text: str) -> list[int]:
        return self.vocab.encode(tokenize(text, self.max_tokens, self.head_fraction))
