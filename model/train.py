"""Train an LSTM classifier artifact from labelled data files.

Vocabulary from the train split only; class-weighted loss; length-bucketed batches; early stopping
on validation loss; temperature calibration and a decision threshold chosen on validation for a
target ham-loss; seeded and reproducible for a given thread count.

`train` reads top to bottom: `_prepare` (files → checked, tokenized examples and the vocabulary),
`_fit` (the epochs, `_Steps` doing the optimisation), `_calibrate` (temperature and thresholds on
validation), `_artifact_config` (what the artifact records).
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from model import email
from model.artifact import save_artifact, sha256_file
from model.augment import redress_share
from model.data import (
    LABEL_HELP,
    Example,
    assigned_split,
    example_text,
    iter_examples,
    left_out_note,
    left_out_reason,
)
from model.evaluate import corpus_of, error_rate_names
from model.lstm import LSTMClassifier, LSTMConfig
from model.metrics import (
    binary_metrics,
    choose_threshold,
    choose_thresholds,
    fit_temperature,
    multiclass_metrics,
)
from model.predictor import EMAIL_FIRST_TOKENS, KINDS, kind_of, pad_batch
from model.tokenizer import PAD_ID, TOKENIZER_VERSION, UNK_ID, Vocab, tokenize

__all__ = ["TrainOptions", "train", "load_splits"]


BALANCES = ("label", "corpus", "source")


@dataclass
class TrainOptions:
    data: list[Path]  # JSON lines / .eml / mbox / maildir inputs, pooled
    out: Path  # artifact directory to write
    epochs: int = 10  # upper bound; early stopping usually ends sooner
    seed: int = 13
    max_tokens: int = 384  # tokens per text (head + tail)
    head_fraction: float = 0.75  # share of max_tokens taken from the start of a text
    threads: int = 2  # torch intra-op threads
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    vocab_size: int = 20_000
    min_freq: int = 2
    embed_dim: int = 96
    hidden_dim: int = 96
    bidirectional: bool = True
    pooling: str = "max_mean"  # see model.lstm.POOLINGS
    pool_embeddings: bool = True
    bag_logits: bool = True
    bag_bigrams: int = 0  # hash buckets of the token-pair logit table; 0 = none
    bag_dropout: float = 0.0  # share of a text's tokens left out of the tables' sum per step
    # Share of a training text's tokens shown as <unk> in each step ("word dropout"): the model
    # cannot lean on any one word, as it must on texts whose telling words it has not seen.
    token_dropout: float = 0.0
    redress: float = 0.0  # share of training messages shown in another wrapper (model.augment)
    # Loss weights: "label" = every label weighs the same in total; "corpus" = every (corpus,
    # label) group does (corpus = the part of `source` before "/"), so a small corpus's spam
    # counts as much as a large one's; "source" = every (source, label) group does, so a small
    # source of hard cases (commercial newsletters a user asked for) counts as much as a large one.
    balance: str = "label"
    # Softened targets: a share of each target's probability spread over all labels, so the
    # tables cannot push a training text to certainty on its one-off tokens. 0 = plain targets.
    label_smoothing: float = 0.0
    # Focal loss (Lin et al. 2017): each example's loss times (1 - p_true) ** gamma, so texts
    # the model already gets right weigh little and the hard ones (newsletters, chatty spam)
    # carry the gradient. 0 = plain cross-entropy.
    focal_gamma: float = 0.0
    dropout: float = 0.3
    # Exponential moving average of the weights (per step), used for validation and the artifact:
    # smooths the epoch-to-epoch swings of the validation ranking. 0 turns it off.
    ema_decay: float = 0.998
    patience: int = 2  # epochs without validation improvement before stopping
    # Model selection: "loss" = validation cross-entropy; "auc" = mean per-source ROC-AUC of the
    # positive label. With the token table the model fits quickly and the small corpus's AUC
    # peaks early and noisily; loss picked the epoch with the better F1 (docs/model-card.md).
    select: str = "loss"
    max_ham_loss: float = 0.005  # target false-positive rate for the threshold, per source
    # One threshold per kind of text (email / plain text), each chosen on its validation examples.
    per_kind_thresholds: bool = True
    positive_label: str | None = "spam"  # ignored when absent from the data, unless required
    require_positive: bool = False  # absent from two-label data: an error, not a note
    name: str = "streamclf-spam"
    version: str = "1"
    max_minutes: float | None = None  # wall-clock budget: no epoch is started that would cross it
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def load_splits(
    paths: Sequence[Path], unreadable: list[str] | None = None
) -> tuple[dict[str, list[Example]], list[dict[str, Any]]]:
    """Labelled examples by split, and a record (path, sha256, counts) of every data file.
    Files below a folder that cannot be read are left out, counted, and named in
    *unreadable* when given."""
    splits: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    record = []
    for path in paths:
        counts: Counter[str] = Counter()
        left_out: Counter[str] = Counter()
        skipped: list[str] = []
        for ex in iter_examples(path, skipped):
            reason = left_out_reason(ex)
            if reason:
                left_out[reason] += 1
                continue
            split = assigned_split(ex)
            splits[split].append(ex)
            counts[f"{split}/{ex.label}"] += 1
        if skipped:  # files: the split of what they hold is unknown
            left_out["unreadable"] = len(skipped)
            if unreadable is not None:
                unreadable.extend(skipped)
        entry: dict[str, Any] = {"path": Path(path).name, "counts": dict(sorted(counts.items()))}
        if left_out:
            entry["left_out"] = dict(sorted(left_out.items()))
        if Path(path).is_file():
            entry["sha256"] = sha256_file(Path(path))
        record.append(entry)
    return splits, record


def _case_clashes(counts: Mapping[str | None, int]) -> str | None:
    """Labels that differ only in letter case (`Spam`, `spam`), with their example counts, or
    None. They would become separate labels; folding them silently would change what the
    model shows, so the user is asked to pick one spelling."""
    spellings: dict[str, list[str]] = {}
    for label in sorted(label for label in counts if label is not None):
        spellings.setdefault(label.casefold(), []).append(label)
    groups = [", ".join(f"{label!r} ({_examples(counts[label])})" for label in group)
              for group in spellings.values() if len(group) > 1]
    if not groups:
        return None
    return (f"labels differ only in letter case: {'; '.join(groups)}; make them consistent in "
            "the data (the model would learn each spelling as a label of its own)")


def _examples(count: int) -> str:
    return f"{count} example{'' if count == 1 else 's'}"


def code_version() -> str:
    """Package version plus the git commit of the source tree when there is one."""
    try:
        from importlib.metadata import version

        ver = version("streamclf")
    except Exception:  # noqa: BLE001 - not installed: running from a checkout
        ver = "0+unknown"
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        if not commit:
            return ver
        # Uncommitted changes to model/ make the commit alone an incomplete description.
        dirty = _git("status", "--porcelain", "--", ".")
        return f"{ver}+g{commit}" + (".dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - no git: the version alone
        return ver


def _git(*args: str) -> str:
    """Output of a git command run in this package's folder."""
    return subprocess.run(
        ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5,
        check=True,
    ).stdout.strip()


class Progress:
    """A one-line progress bar on a TTY; plain per-epoch lines otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and stream.isatty()
        self._last = 0.0

    def step(self, epoch: int, epochs: int, done: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if not self.tty or (now - self._last < 0.2 and done < total):
            return
        self._last = now
        width = 30
        fill = int(width * done / max(total, 1))
        bar = "#" * fill + "." * (width - fill)
        self.stream.write(f"\repoch {epoch}/{epochs} [{bar}] {done}/{total} loss {loss:.4f}")
        self.stream.flush()

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()


def _batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Indices grouped by similar length (little padding), batches in random order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i] + rng.random() * 8, i))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def _logits(
    model: LSTMClassifier, seqs: Sequence[list[int]], batch_size: int = 128
) -> torch.Tensor:
    """Logits (N, L) in input order, batched by length for speed."""
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = torch.empty((len(seqs), model.config.num_labels))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, lengths = pad_batch([seqs[i] for i in idx], PAD_ID)
            out[idx] = model(ids, lengths).float()
    return out


def evaluate_logits(
    logits: torch.Tensor,
    y: Sequence[int],
    labels: Sequence[str],
    positive: str | None,
    threshold: float | None,
    groups: Sequence[str],
    temperature: float = 1.0,
    cuts: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Loss, accuracy and, for a binary model, the positive-label metrics overall and by group."""
    target = torch.tensor(list(y), dtype=torch.long)
    loss = nn.functional.cross_entropy(logits / temperature, target).item()
    probs = torch.softmax(logits / temperature, dim=-1)
    if positive is None:
        pred = probs.argmax(dim=-1).tolist()
        return {"loss": loss, **multiclass_metrics(list(y), pred, labels)}
    pos = labels.index(positive)
    p = probs[:, pos].tolist()
    truth = [k == pos for k in y]
    cut = 0.5 if threshold is None else threshold
    result = {"loss": loss, **binary_metrics(truth, p, cut, cuts), "by_source": {}}
    for g in sorted(set(groups)):
        idx = [i for i, gg in enumerate(groups) if gg == g]
        result["by_source"][g] = binary_metrics(
            [truth[i] for i in idx],
            [p[i] for i in idx],
            cut,
            None if cuts is None else [cuts[i] for i in idx],
        )
    return result


def kind_thresholds(
    vocab: Vocab,
    val_ids: Sequence[Sequence[int]],
    truth: Sequence[bool],
    p_val: Sequence[float],
    val_groups: Sequence[str],
    max_ham_loss: float,
    shared: float,
) -> tuple[dict[str, float], list[float]]:
    """Per-kind thresholds (``email``/``text``, kind read from the ids as the predictor does)
    chosen on validation, and each validation example's cut. A kind absent from validation
    gets the shared threshold."""
    first = frozenset(i for i in vocab.encode(EMAIL_FIRST_TOKENS) if i != UNK_ID)
    kinds = [kind_of(ids, first) for ids in val_ids]
    chosen = choose_thresholds(truth, p_val, kinds, val_groups, max_ham_loss)
    thresholds = {k: chosen.get(k, shared) for k in KINDS}
    return thresholds, [thresholds[k] for k in kinds]


def _group_weights(examples: Sequence[Example], y: Sequence[int],
                   by: str = "corpus") -> torch.Tensor:
    """Per-example loss weights under which every (corpus, label) group weighs the same, or
    with *by* ``"source"`` every (source, label) group (``spamassassin/hard-ham-1``, …)."""
    group_of = corpus_of if by == "corpus" else (lambda source: source)
    groups = [(group_of(ex.source), label) for ex, label in zip(examples, y, strict=True)]
    counts = Counter(groups)
    return torch.tensor([len(groups) / (len(counts) * counts[g]) for g in groups])


def weighted_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                  label_smoothing: float = 0.0, focal_gamma: float = 0.0) -> torch.Tensor:
    """sum(w · loss) / sum(w) over a batch, as ``nn.CrossEntropyLoss(weight=...)`` averages,
    with one weight per example. Each example's loss is the cross-entropy against its target
    softened by *label_smoothing* (that share spread evenly over all labels), times the focal
    factor ``(1 - p_target) ** focal_gamma``."""
    loss = nn.functional.cross_entropy(logits, target, reduction="none",
                                       label_smoothing=label_smoothing)
    if focal_gamma:
        p_target = logits.softmax(-1).gather(1, target[:, None])[:, 0]
        loss = loss * (1 - p_target) ** focal_gamma
    return (loss * weights).sum() / weights.sum()


def _selection_score(val: dict[str, Any], select: str) -> float:
    """Lower is better: validation loss, or 1 - mean per-source ROC-AUC (ties broken by loss)."""
    if select == "loss":
        return float(val["loss"])
    aucs = [m["roc_auc"] for m in val["by_source"].values() if m["roc_auc"] is not None]
    if not aucs:
        return float(val["loss"])
    return 1.0 - sum(aucs) / len(aucs) + 1e-4 * float(val["loss"])


@dataclass
class _Data:
    """The examples a training run learns from and is judged on, as token ids."""

    labels: list[str]
    positive: str | None  # the label thresholds are chosen for; None: the most probable label
    vocab: Vocab
    train_ex: list[Example]
    train_ids: list[list[int]]
    y_train: list[int]
    val_ids: list[list[int]]
    y_val: list[int]
    val_groups: list[str]  # corpus of each validation example
    record: list[dict[str, Any]]  # data files: names, hashes, counts
    counts: dict[str, dict[str | None, int]]  # label counts of the train and val splits


@dataclass
class _Fit:
    """What the epochs earned: the best weights (the EMA's) and how they were found."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    history: list[dict[str, Any]]
    interrupted: bool


@dataclass
class _Decision:
    """How scores become labels, chosen on validation, and the validation metrics under it."""

    temperature: float
    threshold: float | None  # one cut for all texts (None: no positive label)
    thresholds: dict[str, float] | None  # a cut per kind of text, when chosen per kind
    metrics: dict[str, Any]


def train(opts: TrainOptions, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train, calibrate, choose the threshold and write the artifact; returns its config."""
    if opts.balance not in BALANCES:
        raise ValueError(f"balance must be one of {BALANCES}, got {opts.balance!r}")
    if not 0 <= opts.label_smoothing < 1 or not 0 <= opts.focal_gamma < math.inf:
        raise ValueError("label_smoothing must be within [0, 1) and focal_gamma 0 or more, got "
                         f"{opts.label_smoothing!r} and {opts.focal_gamma!r}")
    started = time.monotonic()
    progress = Progress(enabled=opts.progress)
    say = log or progress.line
    torch.set_num_threads(max(1, opts.threads))  # deliberate: oversubscription is very costly
    torch.manual_seed(opts.seed)

    data = _prepare(opts, say)
    config = LSTMConfig(
        vocab_size=len(data.vocab),
        num_labels=len(data.labels),
        embed_dim=opts.embed_dim,
        hidden_dim=opts.hidden_dim,
        bidirectional=opts.bidirectional,
        dropout=opts.dropout,
        pooling=opts.pooling,
        pool_embeddings=opts.pool_embeddings,
        bag_logits=opts.bag_logits,
        bag_bigrams=opts.bag_bigrams,
        bag_dropout=opts.bag_dropout,
        pad_id=PAD_ID,
    )
    model = LSTMClassifier(config)
    if opts.bag_bigrams:
        kept = model.learn_bigrams(data.train_ids, min_texts=2)
        say(f"token pairs: {kept} of {opts.bag_bigrams} buckets seen in ≥ 2 train texts")
    fit = _fit(model, data, opts, progress, say, started)
    # Calibrate on the weights as they will be stored (float16), not the float32 originals.
    model.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in fit.best_state.items()}
    )
    decision = _calibrate(model, data, opts)
    val_metrics = decision.metrics
    say(
        f"best epoch {fit.best_epoch}; temperature {decision.temperature:.3f}; "
        f"threshold {decision.threshold}; per kind {decision.thresholds}; "
        + (
            f"val f1 {val_metrics['f1']:.4f} "
            f"{error_rate_names(data.positive)[0]} {val_metrics['ham_loss']:.4f}"
            if data.positive
            else f"val acc {val_metrics['accuracy']:.4f}"
        )
    )
    elapsed = time.monotonic() - started
    meta = _artifact_config(opts, data, fit, decision, elapsed)
    save_artifact(opts.out, meta, config, data.vocab, model.state_dict())
    say(f"wrote {opts.out} in {elapsed:.0f}s")
    return meta


def _artifact_config(
    opts: TrainOptions, data: _Data, fit: _Fit, decision: _Decision, elapsed: float
) -> dict[str, Any]:
    """The artifact's `config.json`: what the predictor needs, and how the model was made."""
    return {
        "name": opts.name,
        "version": opts.version,
        "labels": data.labels,
        "positive_label": data.positive,
        "threshold": decision.threshold,
        "thresholds": decision.thresholds,
        "temperature": decision.temperature,
        "max_tokens": opts.max_tokens,
        "head_fraction": opts.head_fraction,
        # How texts were made: a model only fits texts made the same way.
        "text": {
            "tokenizer_version": TOKENIZER_VERSION,
            "email_sender_line": email.SENDER_LINE,
            "email_subject_line_always": email.SUBJECT_LINE_ALWAYS,
        },
        "code_version": code_version(),
        "metrics": {"val": decision.metrics},
        "training": {
            "data": data.record,
            "counts": data.counts,
            "best_epoch": fit.best_epoch,
            "interrupted": fit.interrupted,
            "history": fit.history,
            "seconds": round(elapsed, 1),
            "threads": opts.threads,
            "options": {
                k: v for k, v in asdict(opts).items() if k not in ("data", "out", "progress")
            },
            "vocab_sha256": hashlib.sha256(data.vocab.to_json().encode("utf-8")).hexdigest(),
        },
    }


def _prepare(opts: TrainOptions, say: Callable[[str], None]) -> _Data:
    """Read the data, check its labels and splits, tokenize, and build the vocabulary from the
    train split. Raises ValueError with what to change when the data cannot train a model."""
    unreadable: list[str] = []
    splits, data_record = load_splits(opts.data, unreadable)
    clashes = _case_clashes(Counter(ex.label for exs in splits.values() for ex in exs))
    if clashes:
        raise ValueError(clashes)
    train_ex, val_ex = splits["train"], splits["val"]
    labels = sorted({ex.label for ex in train_ex if ex.label is not None})
    note = left_out_note(sum((Counter(e.get("left_out", {})) for e in data_record), Counter()),
                         unreadable)
    if len(labels) < 2:
        raise ValueError(f"training needs at least 2 labels in the train split, found {labels} "
                         f"({LABEL_HELP})" + (f"; {note}" if note else ""))
    val_ex = [ex for ex in val_ex if ex.label in labels]
    if not val_ex:
        raise ValueError("no validation examples: give rows the split 'val', or leave the split "
                         "out (then 1 in 10 examples by id goes to val, 1 in 10 to test)")
    positive = _positive_label(opts, labels, say)
    in_val = Counter(ex.label for ex in val_ex)
    if positive is not None and not in_val[positive]:
        raise ValueError(f"the validation split has no {positive!r} examples, so no threshold "
                         f"can be chosen: give it some (its counts: {dict(in_val)})")
    missing = [label for label in labels if not in_val[label]]
    if missing:
        say(f"warning: no validation examples of {missing}: early stopping cannot judge them")
    say(f"data: {len(train_ex)} train, {len(val_ex)} val; labels {labels}")
    if note:
        say(note)
    if opts.redress:
        # Its own random stream: the batch order stays that of the same seed without it.
        plain, train_ex = train_ex, redress_share(train_ex, opts.redress, seed=opts.seed)
        redressed = sum(1 for a, b in zip(plain, train_ex, strict=True) if a is not b)
        say(f"re-dressed {redressed} training messages ({opts.redress:.0%})")

    def toks(exs: list[Example]) -> list[list[str]]:
        return [tokenize(example_text(ex), opts.max_tokens, opts.head_fraction) for ex in exs]

    t0 = time.monotonic()
    train_tok, val_tok = toks(train_ex), toks(val_ex)
    say(f"tokenized in {time.monotonic() - t0:.1f}s")
    vocab = Vocab.build(train_tok, max_size=opts.vocab_size, min_freq=opts.min_freq)
    return _Data(
        labels=labels,
        positive=positive,
        vocab=vocab,
        train_ex=train_ex,
        train_ids=[vocab.encode(t) for t in train_tok],
        y_train=[labels.index(ex.label) for ex in train_ex if ex.label is not None],
        val_ids=[vocab.encode(t) for t in val_tok],
        y_val=[labels.index(ex.label) for ex in val_ex if ex.label is not None],
        val_groups=[corpus_of(ex.source) for ex in val_ex],
        record=data_record,
        counts={s: dict(Counter(ex.label for ex in splits[s])) for s in ("train", "val")},
    )


def _positive_label(
    opts: TrainOptions, labels: list[str], say: Callable[[str], None]
) -> str | None:
    """The label a threshold is chosen for, or None: a multi-label model, or two labels without
    `opts.positive_label` (then the larger probability decides)."""
    if opts.require_positive and len(labels) != 2:  # given, it must not be ignored
        raise ValueError(f"--positive-label needs two-label data; {labels}: the model gives "
                         "the most probable label")
    positive = opts.positive_label if opts.positive_label in labels and len(labels) == 2 else None
    if opts.positive_label and positive is None and len(labels) == 2:
        if opts.require_positive:
            raise ValueError(f"--positive-label {opts.positive_label!r} is not one of the "
                             f"labels {labels}")
        say(f"note: no label {opts.positive_label!r} among {labels}: the model decides by the "
            "larger probability (--positive-label names the label a threshold is chosen for)")
    return positive


class _Steps:
    """The optimisation: class-weighted loss, AdamW with a linearly decaying rate, gradient
    clipping, and an exponential moving average of the weights (`ema`, judged and saved)."""

    def __init__(self, model: LSTMClassifier, data: _Data, opts: TrainOptions) -> None:
        self.model, self.data, self.opts = model, data, opts
        # Balanced class weights: every label contributes equally to the loss.
        counts = Counter(data.y_train)
        n, k = len(data.y_train), len(data.labels)
        self.class_weights = torch.tensor([n / (k * counts[i]) for i in range(k)])
        self.loss_fn = nn.CrossEntropyLoss(weight=self.class_weights)
        self.example_weights = (
            _group_weights(data.train_ex, data.y_train, opts.balance)
            if opts.balance != "label" else None
        )
        # The default keeps nn.CrossEntropyLoss (the same value as weighted_loss, not the same
        # bits), so the bundled recipe trains exactly as it always has.
        self.plain_loss = (self.example_weights is None and not opts.label_smoothing
                           and not opts.focal_gamma)
        self.optim = torch.optim.AdamW(model.parameters(), lr=opts.lr,
                                       weight_decay=opts.weight_decay)
        total_steps = math.ceil(len(data.train_ids) / opts.batch_size) * opts.epochs
        # Linear decay to 10 %: large early steps, settled weights by the last epoch.
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.optim, lambda step: max(0.1, 1.0 - 0.9 * step / max(1, total_steps))
        )
        self.ema = copy.deepcopy(model).eval() if opts.ema_decay > 0 else model
        self._ema_params: list[torch.Tensor] = list(self.ema.parameters())
        self._live_params: list[torch.Tensor] = list(model.parameters())
        self._lengths = [len(s) for s in data.train_ids]
        self.step = 0

    def epoch(self, epoch: int, rng: random.Random, progress: Progress) -> float:
        """One pass over the training examples in length-grouped batches; the mean loss."""
        model, data, opts = self.model, self.data, self.opts
        model.train()
        batches = _batches(self._lengths, opts.batch_size, rng)
        running, seen = 0.0, 0
        for b, idx in enumerate(batches, 1):
            ids, lens = pad_batch([data.train_ids[i] for i in idx], PAD_ID)  # (B, T), (B,)
            if opts.token_dropout:
                hide = (torch.rand(ids.shape) < opts.token_dropout) & (ids != PAD_ID)
                ids = ids.masked_fill(hide, UNK_ID)
            target = torch.tensor([data.y_train[i] for i in idx])
            logits = model(ids, lens)
            if self.plain_loss:
                loss = self.loss_fn(logits, target)
            else:
                w = (self.class_weights[target] if self.example_weights is None
                     else self.example_weights[idx])
                loss = weighted_loss(logits, target, w, opts.label_smoothing, opts.focal_gamma)
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            self.optim.step()
            self.sched.step()
            self.step += 1
            if self.ema is not model:
                # Warm-up: early averages would otherwise be dominated by the random init.
                decay = min(opts.ema_decay, (1 + self.step) / (10 + self.step))
                with torch.no_grad():
                    torch._foreach_lerp_(self._ema_params, self._live_params, 1.0 - decay)
            running += loss.item() * len(idx)
            seen += len(idx)
            progress.step(epoch, opts.epochs, b, len(batches), running / seen)
        return running / seen


def _fit(
    model: LSTMClassifier,
    data: _Data,
    opts: TrainOptions,
    progress: Progress,
    say: Callable[[str], None],
    started: float,
) -> _Fit:
    """The epochs: train, judge the weights' moving average on validation after each, keep the
    best, and stop early, at the time budget or on Ctrl-C (keeping the best finished epoch)."""
    rng = random.Random(opts.seed)
    steps = _Steps(model, data, opts)
    best_score, best_state, best_epoch, stale = math.inf, None, 0, 0
    history: list[dict[str, Any]] = []
    epoch_times: list[float] = []
    interrupted = False
    try:
        for epoch in range(1, opts.epochs + 1):
            epoch_start = time.monotonic()
            train_loss = steps.epoch(epoch, rng, progress)
            val, record, summary = _judge_epoch(steps.ema, data, epoch, opts.epochs, train_loss)
            history.append(record)
            say(f"{summary} ({time.monotonic() - started:.0f}s)")
            score = _selection_score(val, opts.select if data.positive else "loss")
            if score < best_score - 1e-5:
                best_state = {k: v.detach().clone() for k, v in steps.ema.state_dict().items()}
                best_score, best_epoch, stale = score, epoch, 0
            else:
                stale += 1
                if stale >= opts.patience:
                    say(f"early stop: no validation improvement for {stale} epochs")
                    break
            if opts.max_minutes is not None:
                # Stop unless one more epoch (as long as the slowest so far) fits the budget.
                epoch_times.append(time.monotonic() - epoch_start)
                over = time.monotonic() - started + max(epoch_times) > opts.max_minutes * 60
                if over and epoch < opts.epochs:
                    say("stopping: another epoch would exceed the time budget")
                    break
    except KeyboardInterrupt:  # Ctrl-C: keep what the finished epochs earned
        if best_state is None:
            raise
        interrupted = True
        say(f"interrupted: keeping the best finished epoch ({best_epoch}); "
            "Ctrl-C again to stop without a model")
    assert best_state is not None
    return _Fit(best_state, best_epoch, history, interrupted)


def _judge_epoch(
    ema: LSTMClassifier,
    data: _Data,
    epoch: int,
    epochs: int,
    train_loss: float,
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Validation metrics of the weights after an epoch, its history record, and its line."""
    val = evaluate_logits(
        _logits(ema, data.val_ids), data.y_val, data.labels, data.positive, None, data.val_groups
    )
    record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val["loss"]}
    summary = f"epoch {epoch}/{epochs} train loss {train_loss:.4f} "
    summary += f"val loss {val['loss']:.4f} acc {val['accuracy']:.4f}"
    if data.positive:
        record.update(val_f1=val["f1"], val_auc=val["roc_auc"])
        auc = val["roc_auc"]
        summary += f" f1@0.5 {val['f1']:.4f} auc {'n/a' if auc is None else f'{auc:.5f}'}"
        summary += "".join(
            f" {name} {m['roc_auc']:.5f}"
            for name, m in val["by_source"].items()
            if m["roc_auc"] is not None
        )
    return val, record, summary


def _calibrate(model: LSTMClassifier, data: _Data, opts: TrainOptions) -> _Decision:
    """Temperature, threshold(s) and the validation metrics at them, all from validation."""
    val_logits = _logits(model, data.val_ids)
    temperature = fit_temperature(val_logits.tolist(), data.y_val)
    threshold = None
    thresholds = None
    cuts = None
    if data.positive:
        pos = data.labels.index(data.positive)
        p_val = torch.softmax(val_logits / temperature, dim=-1)[:, pos].tolist()
        truth = [k == pos for k in data.y_val]
        threshold = choose_threshold(truth, p_val, data.val_groups, opts.max_ham_loss)
        if opts.per_kind_thresholds:
            thresholds, cuts = kind_thresholds(
                data.vocab, data.val_ids, truth, p_val, data.val_groups, opts.max_ham_loss,
                threshold,
            )
    metrics = evaluate_logits(
        val_logits, data.y_val, data.labels, data.positive, threshold, data.val_groups,
        temperature, cuts,
    )
    return _Decision(temperature, threshold, thresholds, metrics)
