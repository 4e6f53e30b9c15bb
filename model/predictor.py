"""Batches of texts (or token ids) → labels and calibrated scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from model.artifact import Artifact, ArtifactError, load_artifact
from model.lstm import LSTMClassifier
from model.tokenizer import PAD_ID, UNK_ID, TextTokenizer, Vocab, tokenize

__all__ = [
    "Prediction", "Predictor", "pad_batch", "resolve_device", "decide", "KINDS", "kind_of",
    "QUANTIZE_MODES", "quantize_int8",
]

# Kinds of text with a decision threshold each. The email reader (model.email) lays a message
# out as "Subject: ..." / "From: ..." lines before the body, so a token sequence that starts with
# one of these words is read as an email; anything else is plain text (SMS, chat). Decided on the
# token ids alone, so the worker's tokenize → predict_ids path needs nothing more.
KINDS = ("email", "text")
EMAIL_FIRST_TOKENS = ("subject", "from")


def kind_of(ids: Sequence[int], email_first_ids: frozenset[int]) -> str:
    """``email`` when the first token starts the email reader's layout, else ``text``."""
    return "email" if len(ids) and ids[0] in email_first_ids else "text"


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float  # probability of the chosen label
    scores: dict[str, float]  # every label -> probability (temperature-calibrated on validation)


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int = 0, max_tokens: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence in the batch, capped at max_tokens.

    Returns (ids (B, T) long, lengths (B,) long). Empty sequences get length 1 (one pad token) so
    the LSTM never sees length 0.
    """
    if max_tokens is not None and max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    cut = [list(s[:max_tokens]) if max_tokens is not None else list(s) for s in seqs]
    lengths = [max(1, len(s)) for s in cut]
    T = max(lengths, default=1)
    ids = torch.full((len(cut), T), pad_id, dtype=torch.long)  # (B, T)
    for i, s in enumerate(cut):
        if s:
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, torch.tensor(lengths, dtype=torch.long)


QUANTIZE_MODES = ("auto", "none", "int8")


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of *model* with dynamic int8 LSTM and Linear layers (CPU only).

    Measured on the bundled model (docs/performance.md, "Levers"): slower than float32 on the
    CPU since float32 inference runs unpacked and compiled (about 0.8× at batch 64, 0.3× for
    single records), test F1 unchanged; before that, 1.3–1.4× faster at batches of 4 or more
    (docs/performance-log.md).
    """
    import warnings

    with warnings.catch_warnings():
        # torch announces the move of this API to a separate package; it works as documented.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            from torch.ao.quantization import quantize_dynamic
        except ImportError as exc:
            raise ValueError("this torch build has no dynamic quantization") from exc
        return quantize_dynamic(model, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cpu``, ``cuda``, ``cuda:N`` as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"bad device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def decide(
    probs: Sequence[float],
    labels: Sequence[str],
    positive_label: str | None,
    threshold: float | None,
) -> int:
    """Index of the chosen label: thresholded if binary with a positive label, else argmax."""
    if len(labels) == 2 and positive_label in labels and threshold is not None:
        pos = labels.index(positive_label)
        return pos if probs[pos] >= threshold else 1 - pos
    return max(range(len(probs)), key=lambda i: probs[i])


class _WithoutNormalInit(torch.overrides.TorchFunctionMode):
    """``normal_`` as a no-op, in the calling thread only (torch function modes are per thread).
    On the meta device ``normal_`` is one of torch's Python decompositions, and its first call
    imports them all (sympy and ~800 modules): 73 MB more resident memory for the worker's whole
    life, for values a shape check never reads."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in (torch.nn.init.normal_, torch.Tensor.normal_):
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def _check_shapes(art: Artifact) -> None:
    """Compare the model its config describes with the weights before allocating it: a config
    asking for 300 million pair buckets beside small weights took 2.9 GB, then failed."""
    try:
        with torch.device("meta"), _WithoutNormalInit():  # shapes only, no memory
            expected = {name: tuple(t.shape)
                        for name, t in LSTMClassifier(art.model_config).state_dict().items()}
    except (RuntimeError, TypeError, ValueError, AttributeError, AssertionError) as exc:
        raise ArtifactError(f"{art.path}: its model config cannot build a model: {exc}") from exc
    given = {name: tuple(t.shape) for name, t in art.state_dict.items()}
    wrong = sorted(name for name in expected.keys() | given.keys()
                   if expected.get(name) != given.get(name))
    if wrong:
        details = ", ".join(f"{n} {given.get(n)} (config: {expected.get(n)})" for n in wrong[:3])
        raise ArtifactError(f"{art.path}: the weights do not fit its model config: {details}")


class Predictor:
    """A loaded model ready to classify. Classifying changes no state, so several threads may
    call it at once (the worker's `model.lanes`)."""

    labels: tuple[str, ...]
    name: str
    version: str
    device: torch.device
    max_tokens: int
    threshold: float | None
    positive_label: str | None

    def __init__(
        self,
        model: torch.nn.Module,
        vocab: Vocab,
        labels: Sequence[str],
        *,
        name: str = "model",
        version: str = "0",
        device: torch.device | None = None,
        max_tokens: int = 384,
        threshold: float | None = None,
        positive_label: str | None = None,
        temperature: float = 1.0,
        head_fraction: float = 0.75,
        thresholds: dict[str, float] | None = None,
    ) -> None:
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device).eval()
        self.quantized = any(type(m).__module__.startswith("torch.ao.nn.quantized")
                             for m in self.model.modules())
        self.vocab = vocab
        self.labels = tuple(labels)
        self.name = name
        self.version = version
        self.max_tokens = int(max_tokens)
        self.threshold = threshold
        self.positive_label = positive_label
        self.temperature = float(temperature)
        self.head_fraction = head_fraction
        # Per-kind thresholds (chosen on validation) take precedence over ``threshold``.
        self.thresholds = {k: float(v) for k, v in thresholds.items()} if thresholds else None
        if self.thresholds and set(self.thresholds) != set(KINDS):
            raise ValueError(f"thresholds must give exactly {list(KINDS)}")
        self._email_first = frozenset(i for i in vocab.encode(EMAIL_FIRST_TOKENS) if i != UNK_ID)

    @property
    def has_threshold_decision(self) -> bool:
        """Whether a threshold decides (two labels, one of them positive), as in `decide`;
        else the most probable label is taken and a threshold does not apply."""
        return len(self.labels) == 2 and self.positive_label in self.labels

    @classmethod
    def load(
        cls,
        path: str | Path = "bundled",
        device: str = "auto",
        max_tokens: int | None = None,
        threshold: float | None = None,
        quantize: str = "none",
    ) -> Predictor:
        """Load a verified artifact; *max_tokens*/*threshold* override the artifact's values.

        *quantize*: ``none``; ``int8`` (dynamic int8 LSTM and Linear layers, CPU only); ``auto``
        (int8 on CPU when this torch build has it, else none).
        """
        if quantize not in QUANTIZE_MODES:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}")
        dev = resolve_device(device)
        if quantize == "int8" and dev.type != "cpu":
            raise ValueError(f"int8 quantization runs on the CPU only, not on {dev}")
        art = load_artifact(path, map_location="cpu")
        _check_shapes(art)
        try:
            model: torch.nn.Module = LSTMClassifier(art.model_config)
            model.load_state_dict(art.state_dict)  # float16 on disk → float32 parameters
        except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"{art.path}: the weights do not fit its model config: {exc}"
                                ) from exc
        broken = [name for name, tensor in art.state_dict.items()
                  if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
        if broken:  # it would score every text NaN
            raise ArtifactError(f"{art.path}: weights that are not finite numbers: "
                                f"{', '.join(broken[:5])}")
        if quantize == "int8" or (quantize == "auto" and dev.type == "cpu"):
            try:
                model = quantize_int8(model.eval())
            except ValueError:
                if quantize == "int8":
                    raise
        cfg = art.config
        if max_tokens is not None and max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be within [0, 1]")
        return cls(
            model,
            art.vocab,
            cfg["labels"],
            name=str(cfg.get("name", art.path.name)),
            version=str(cfg.get("version", "0")),
            device=dev,
            max_tokens=max_tokens or int(cfg.get("max_tokens", 384)),
            threshold=threshold if threshold is not None else cfg.get("threshold"),
            positive_label=cfg.get("positive_label"),
            temperature=float(cfg.get("temperature", 1.0)),
            head_fraction=float(cfg.get("head_fraction", 0.75)),
            # An explicit threshold overrides the artifact's per-kind ones as well.
            thresholds=None if threshold is not None else cfg.get("thresholds"),
        )

    def tokenize(self, text: str) -> list[int]:
        """Token ids of *text*: its head and tail within ``max_tokens``."""
        return self.vocab.encode(tokenize(text, self.max_tokens, self.head_fraction))

    @property
    def text_tokenizer(self) -> TextTokenizer:
        """`tokenize` as a torch-free object another process can be given."""
        return TextTokenizer(self.vocab, self.max_tokens, self.head_fraction)

    def warm_up(self, passes: int = 2) -> None:
        """Classify a short text a few times. The first forward passes are slow (TorchScript
        profiles and optimises the compiled inference: a batch of 16 took ~55 and ~28 ms, then
        9; a GPU loads its kernels), so a server spends them before it takes traffic."""
        seqs = [self.tokenize("warm up")] * 2
        for _ in range(passes):
            self.probabilities(seqs)

    def kind_of(self, ids: Sequence[int]) -> str:
        """``email`` or ``text``, from the token ids (see ``KINDS``)."""
        return kind_of(ids, self._email_first)

    def threshold_for(self, ids: Sequence[int]) -> float | None:
        """The decision threshold for one tokenized text: its kind's, else the shared one."""
        if self.thresholds:
            return self.thresholds[self.kind_of(ids)]
        return self.threshold

    def probabilities(self, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
        """Calibrated label probabilities (B, L) on the CPU, in input order."""
        if not seqs:
            return torch.empty((0, len(self.labels)))
        ids, lengths = pad_batch(seqs, PAD_ID, self.max_tokens)
        with torch.inference_mode():
            logits = self.model(ids.to(self.device), lengths.to(self.device))  # (B, L)
            return torch.softmax(logits.float() / self.temperature, dim=-1).cpu()

    def predict_ids(self, seqs: Sequence[Sequence[int]]) -> list[Prediction]:
        """Classify already-tokenized texts; results in input order."""
        out = []
        for seq, row in zip(seqs, self.probabilities(seqs).tolist(), strict=True):
            i = decide(row, self.labels, self.positive_label, self.threshold_for(seq))
            out.append(Prediction(self.labels[i], row[i], dict(zip(self.labels, row, strict=True))))
        return out

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify texts; results in input order."""
        return self.predict_ids([self.tokenize(t) for t in texts])
