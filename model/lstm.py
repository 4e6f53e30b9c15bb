"""The classifier: embedding → (Bi)LSTM → masked pooling → linear head, plus optionally a
per-token logit table summed over the distinct tokens of the text (``bag_logits``).

The LSTM never reads padding into a text's states (groups of similar length on the CPU,
`_grouped_lstm_states`; packed sequences on the GPU), and pooling leaves padded
positions out: a text's logits do not depend on how long the other texts in its batch are.
Inference on the CPU runs as one TorchScript function of the weights (`_cpu_inference`),
which does not take the GIL back at every op; training, the GPU and int8 copies run the
module's own layers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple, Optional, TypeVar

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = ["LSTMConfig", "LSTMClassifier", "POOLINGS"]

# How the LSTM states of a text become one vector: "max_mean" = max- and mean-pool over time,
# "last" = the final state of each direction, "attention" = a learned weighting of the states,
# "all" = the four side by side.
POOLINGS = ("max_mean", "last", "attention", "all")


@dataclass
class LSTMConfig:
    vocab_size: int = 20_000  # rows of the embedding table, <pad>=0 and <unk>=1 included
    num_labels: int = 2  # size of the output layer, one logit per label
    embed_dim: int = 96  # token embedding width
    hidden_dim: int = 96  # LSTM state width per direction
    num_layers: int = 1  # stacked LSTM layers
    bidirectional: bool = True  # read the text both ways (the tail of a message matters too)
    dropout: float = 0.3  # on embeddings and on the pooled features, training only
    pooling: str = "max_mean"  # one of POOLINGS
    pool_embeddings: bool = True  # also max-pool the raw embeddings: a cheap bag-of-words path
    # A learned logit per (token, label), summed over the text's distinct tokens and added to the
    # head's logits: a linear bag-of-words beside the LSTM ("wide and deep"). Rare but telling
    # tokens (a mailer's name, a relay host) count even where pooled LSTM states blur them.
    bag_logits: bool = False
    # Hash buckets of a second table, one logit per (adjacent token pair, label), summed over the
    # text's distinct pairs like the token table ("click here", "std chgs"); 0 = none.
    bag_bigrams: int = 0
    # Share of a text's token and pair positions left out of the tables' sums in each training
    # step (scaled up to keep the expected sum): no single rare token can carry a training text.
    bag_dropout: float = 0.0
    pad_id: int = 0  # id whose embedding stays zero

    def __post_init__(self) -> None:
        for name in ("vocab_size", "num_labels", "embed_dim", "hidden_dim", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {self.pooling!r}")
        if self.bag_bigrams < 0:
            raise ValueError(f"bag_bigrams must be ≥ 0, not {self.bag_bigrams}")
        if not 0.0 <= self.bag_dropout < 1.0:
            raise ValueError(f"bag_dropout must be within [0, 1), not {self.bag_dropout}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LSTMConfig:
        """Build from a dict, rejecting unknown keys (an artifact from a newer code version)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)


class LSTMClassifier(nn.Module):
    """Token ids (B, T) and lengths (B,) → logits (B, num_labels)."""

    known_bigrams: torch.Tensor  # (bag_bigrams,) bool buffer, present when bag_bigrams > 0

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)
        self.lstm = nn.LSTM(
            c.embed_dim,
            c.hidden_dim,
            num_layers=c.num_layers,
            batch_first=True,
            bidirectional=c.bidirectional,
            dropout=c.dropout if c.num_layers > 1 else 0.0,
        )
        directions = 2 if c.bidirectional else 1
        state = directions * c.hidden_dim
        # The pooled LSTM states (two vectors for max_mean), plus optionally max-pooled embeddings
        pooled_states = {"max_mean": 2, "last": 1, "attention": 1, "all": 4}[c.pooling]
        features = pooled_states * state + (c.embed_dim if c.pool_embeddings else 0)
        self.attention: nn.Linear | None = None
        if c.pooling in ("attention", "all"):
            self.attention = nn.Linear(state, 1)  # one relevance score per position
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(features, c.num_labels)
        self.bag: nn.Embedding | None = None
        if c.bag_logits:
            self.bag = nn.Embedding(c.vocab_size, c.num_labels, padding_idx=c.pad_id)
            nn.init.zeros_(self.bag.weight)  # starts as the plain LSTM classifier
        self.bigrams: nn.Embedding | None = None
        if c.bag_bigrams:
            self.bigrams = nn.Embedding(c.bag_bigrams, c.num_labels)
            nn.init.zeros_(self.bigrams.weight)
            # Buckets of the pairs seen often enough in training (see learn_bigrams); others are
            # ignored, so that the table cannot memorise single training texts by their rare pairs.
            self.register_buffer("known_bigrams", torch.ones(c.bag_bigrams, dtype=torch.bool))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (B, T) long, lengths (B,) long with 1 ≤ length ≤ T → logits (B, L)."""
        if (not self.training and not torch.is_grad_enabled()
                and self._padded_lstm_applies(ids.device)):
            return _CPU_INFERENCE(ids, lengths, self._inference_weights())  # one compiled call
        B, T = ids.shape
        lengths = lengths.clamp(min=1, max=T)
        emb = self.dropout(self.embedding(ids))  # (B, T, E)
        mask = torch.arange(T, device=ids.device)[None, :] < lengths[:, None]  # (B, T)
        if self._padded_lstm_applies(ids.device):
            out = self._padded_lstm(emb, lengths, mask)
        else:
            out = self._packed_lstm(emb, lengths)
        scores = self.attention(out).squeeze(-1) if self.attention is not None else None
        features = _pooled_features(out, emb, lengths, mask, scores, self.config.pooling,
                                    self.config.pool_embeddings, self.config.hidden_dim,
                                    self.config.bidirectional, torch.finfo(out.dtype).min)
        logits = self.head(self.dropout(features))  # (B, L)
        if self.bag is not None:
            logits = logits + self._table_sum(self.bag, ids, ids != self.config.pad_id)
        if self.bigrams is not None and T > 1:
            pairs, valid = self.bigram_ids(ids)
            logits = logits + self._table_sum(self.bigrams, pairs, valid)
        return logits

    def _inference_weights(self) -> _InferenceWeights:
        """What `_cpu_inference` reads of this model (TorchScript takes tensors, not modules)."""
        c, lstm = self.config, self.lstm
        return _InferenceWeights(
            embedding=self.embedding.weight,
            lstm=self._flat_lstm_weights(),
            hidden_size=lstm.hidden_size, num_layers=lstm.num_layers,
            bidirectional=lstm.bidirectional, lstm_bias=lstm.bias,
            attention_weight=self.attention.weight if self.attention is not None else None,
            attention_bias=self.attention.bias if self.attention is not None else None,
            pooling=c.pooling, pool_embeddings=c.pool_embeddings,
            head_weight=self.head.weight, head_bias=self.head.bias,
            bag=self.bag.weight if self.bag is not None else None,
            bigrams=self.bigrams.weight if self.bigrams is not None else None,
            known_bigrams=self.known_bigrams if self.bigrams is not None else None,
            pad_id=c.pad_id, lowest=torch.finfo(self.embedding.weight.dtype).min,
        )

    def _flat_lstm_weights(self) -> list[torch.Tensor]:
        """The LSTM's weights in nn.LSTM's order (see `_grouped_lstm_states`)."""
        return [w for ws in self.lstm.all_weights for w in ws]

    def _padded_lstm_applies(self, device: torch.device) -> bool:
        """The CPU with a plain float LSTM, in inference and in training (backward through
        oneDNN's padded kernel is ~15× faster than through packed sequences of 512 tokens).
        Not: dropout between stacked layers in training, which only nn.LSTM applies; an int8
        copy, which has its own LSTM module; cuDNN, which runs packed sequences well."""
        lstm = self.lstm
        return (device.type == "cpu" and type(lstm) is nn.LSTM and lstm.proj_size == 0
                and not (self.training and lstm.num_layers > 1 and lstm.dropout > 0))

    def _packed_lstm(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The LSTM's states (B, T, D*H) over packed sequences, zeros on padding."""
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.size(1))[0]

    def _padded_lstm(self, x: torch.Tensor, lengths: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
        """The LSTM's states (B, T, D*H), zeros on padding: the same as over packed sequences,
        computed without packing (`_grouped_lstm_states`)."""
        lstm = self.lstm
        return _grouped_lstm_states(x, lengths, mask, _length_groups(lengths),
                                    self._flat_lstm_weights(),
                                    lstm.hidden_size, lstm.num_layers, lstm.bidirectional,
                                    lstm.bias)

    def _table_sum(
        self, table: nn.Embedding, ids: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        rate = self.config.bag_dropout
        if not (self.training and rate):
            return _distinct_sum(table.weight, ids, valid)
        # Dropping positions rather than distinct ids is simpler and nearly the same: repeated
        # tokens are few among the distinct ones that carry weight.
        kept = valid & (torch.rand(ids.shape, device=ids.device) >= rate)
        return _distinct_sum(table.weight, ids, kept) / (1.0 - rate)

    def bigram_ids(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bucket of each adjacent token pair (B, T-1), and which pairs count: no padding in
        them, and their bucket seen in training (`learn_bigrams`)."""
        buckets, unpadded = _pair_buckets(ids, self.config.bag_bigrams, self.config.pad_id)
        return buckets, unpadded & self.known_bigrams[buckets]

    @torch.no_grad()
    def learn_bigrams(self, texts: Sequence[Sequence[int]], min_texts: int = 2) -> int:
        """Keep only the pair buckets that occur in at least `min_texts` of the training texts;
        returns how many are kept."""
        buckets = self.config.bag_bigrams
        if not buckets:
            raise ValueError("this model has no bigram table (bag_bigrams = 0)")
        texts_with = torch.zeros(buckets, dtype=torch.long)
        for seq in texts:
            if len(seq) > 1:
                row = torch.tensor([list(seq)])
                pairs, unpadded = _pair_buckets(row, buckets, self.config.pad_id)
                texts_with[pairs[unpadded].unique()] += 1
        self.known_bigrams.copy_(texts_with >= min_texts)
        return int(self.known_bigrams.sum())


# Texts whose lengths are within this factor of the group's shortest (plus a few tokens) run in
# one LSTM call: padding costs as much as text there, and each call costs ~0.1 ms of its own.
_GROUP_LENGTH_RATIO = 1.25
_GROUP_LENGTH_SLACK = 4
_GROUP_LENGTH_STEP = 32


def _grouped_lstm_states(x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor,
                         groups: list[torch.Tensor], params: list[torch.Tensor],
                         hidden_size: int, num_layers: int, bidirectional: bool,
                         has_bias: bool, step: int = _GROUP_LENGTH_STEP) -> torch.Tensor:
    """An LSTM's states (B, T, D*H) over padded texts, zeros on padding, without packing.

    On the CPU, PyTorch runs packed sequences of unequal lengths step by step in its own code,
    ~5× slower per text-step here than the oneDNN kernel it uses for padded batches, whose cost
    grows with batch × padded length. So the rows of each group (texts of similar length,
    `_length_groups`) run together, padded only to their longest rounded up to a multiple of
    `step`: oneDNN builds (and caches) a kernel per batch shape, and few shapes keep that cache
    small and mostly hit. A group without padding is one fused call. Otherwise each direction
    runs on its own: padding after a text changes none of the forward direction's states, and
    the backward direction reads each text reversed within its own length, so it too starts
    on the text's last token. `params` are the LSTM's flat weights (per layer and direction:
    weight_ih, weight_hh and, with `has_bias`, bias_ih, bias_hh)."""
    B, T = x.size(0), x.size(1)
    directions = 2 if bidirectional else 1
    per_direction = 4 if has_bias else 2
    out = x.new_zeros([B, T, hidden_size * directions])
    for rows in groups:
        group_lengths = lengths.index_select(0, rows)
        padded = min(T, (int(group_lengths.max()) + step - 1) // step * step)
        seq = x.index_select(0, rows)[:, :padded]
        if bool((group_lengths == padded).all()):  # no padding: the fused call is exact
            zeros = x.new_zeros([num_layers * directions, rows.size(0), hidden_size])
            states = torch.lstm(seq, [zeros, zeros], params, has_bias, num_layers, 0.0, False,
                                bidirectional, True)[0]
        else:
            group_mask = mask.index_select(0, rows)[:, :padded]
            steps = torch.arange(padded, device=x.device).unsqueeze(0)
            flip = torch.where(group_mask, group_lengths.unsqueeze(1) - 1 - steps,
                               steps).unsqueeze(-1)  # an involution: it also flips back
            zeros = x.new_zeros([1, rows.size(0), hidden_size])
            for layer in range(num_layers):
                outs: list[torch.Tensor] = []
                for d in range(directions):
                    first = (layer * directions + d) * per_direction
                    weights = params[first:first + per_direction]
                    reads = seq if d == 0 else seq.gather(1, flip.expand(-1, -1, seq.size(2)))
                    h = torch.lstm(reads, [zeros, zeros], weights, has_bias, 1, 0.0, False,
                                   False, True)[0]
                    outs.append(h if d == 0 else h.gather(1, flip.expand(-1, -1, h.size(2))))
                seq = torch.cat(outs, dim=-1)
            states = seq * group_mask.unsqueeze(-1)  # zeros on padding (faster than masked_fill)
        out[rows, :padded] = states
    return out


def _length_groups(lengths: torch.Tensor, ratio: float = _GROUP_LENGTH_RATIO,
                   slack: int = _GROUP_LENGTH_SLACK) -> list[torch.Tensor]:
    """Row indices of the batch in groups of similar length (shortest first)."""
    order: list[int] = torch.argsort(lengths).tolist()
    values: list[int] = lengths.tolist()
    groups: list[list[int]] = []
    for i in order:
        if len(groups) > 0 and values[i] <= values[groups[-1][0]] * ratio + slack:
            groups[-1].append(i)
        else:
            groups.append([i])
    return [torch.tensor(g, dtype=torch.long, device=lengths.device) for g in groups]


def _masked_max(x: torch.Tensor, pad_bias: torch.Tensor) -> torch.Tensor:
    """Max over time of x (B, T, C) without its padding, whose values must be finite.

    Adding `pad_bias` (0 on text, the lowest float on padding) gives masked_fill's values
    several times faster on the CPU. Where no gradient flows, the bias is added to x in place:
    for a batch of 16 a fresh tensor of x's size cost ~2.7 ms, the addition in place ~0.25 ms."""
    return (x + pad_bias if x.requires_grad else x.add_(pad_bias)).amax(dim=1)


# Odd and large (2^32 / golden ratio): spreads (first, second) over the buckets; with ids below
# 2^31 the product stays far inside int64.
_PAIR_MULTIPLIER = 2_654_435_761


def _pair_buckets(
    ids: torch.Tensor, buckets: int, pad_id: int, multiplier: int = _PAIR_MULTIPLIER
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket of each adjacent pair of ids (B, T-1), and which pairs hold no padding.

    A fixed multiplicative hash of the two ids: stored models keep meaning the same pairs.
    (`multiplier` is a parameter only because TorchScript cannot read module constants.)"""
    first, second = ids[:, :-1], ids[:, 1:]
    return (first * multiplier + second) % buckets, (first != pad_id) & (second != pad_id)


def _distinct_sum(table: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sum of `table` rows over each row's distinct valid ids (B, N) → (B, L)."""
    ids = ids.masked_fill(~valid, -1)  # invalid ids sort first and are dropped below
    ordered, _ = ids.sort(dim=1)
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]  # one count per distinct id
    keep = first & (ordered >= 0)
    return (nn.functional.embedding(ordered.clamp(min=0), table) * keep.unsqueeze(-1)).sum(dim=1)


def _pooled_features(states: torch.Tensor, emb: torch.Tensor, lengths: torch.Tensor,
                     mask: torch.Tensor, scores: torch.Tensor | None, pooling: str,
                     pool_embeddings: bool, hidden_size: int, bidirectional: bool,
                     lowest: float) -> torch.Tensor:
    """The LSTM states (B, T, D*H) of each text as one vector (B, features), padding left out
    (see POOLINGS); `scores` (B, T) are the attention's per position. Where no gradient flows
    max-pooling overwrites `states` and `emb`."""
    pad_bias = (~mask.unsqueeze(-1)).to(states.dtype) * lowest  # (B, T, 1): 0 on text
    mean: torch.Tensor | None = None
    last: torch.Tensor | None = None
    attended: torch.Tensor | None = None
    if pooling in ("max_mean", "all"):
        mean = states.sum(dim=1) / lengths.to(states.dtype).unsqueeze(-1)  # pads are zeros
    if pooling in ("last", "all"):
        last = _last_states(states, lengths, hidden_size, bidirectional)
    if scores is not None:
        weights = scores.masked_fill(~mask, lowest).softmax(dim=1).unsqueeze(-1)  # 0 on padding
        attended = (weights * states).sum(dim=1)
    # Max-pooling comes last: it may overwrite `states`.
    peak = _masked_max(states, pad_bias) if pooling in ("max_mean", "all") else None
    pooled: list[torch.Tensor] = []
    for part in [peak, mean, last, attended]:
        if part is not None:
            pooled.append(part)
    if pool_embeddings:
        pooled.append(_masked_max(emb, pad_bias))  # (B, E); padding embeds to zeros
    return torch.cat(pooled, dim=-1)


def _last_states(states: torch.Tensor, lengths: torch.Tensor, hidden_size: int,
                 bidirectional: bool) -> torch.Tensor:
    """The forward direction's state at each text's own last token, the backward one's at its
    first (where it ends): (B, D*H)."""
    rows = torch.arange(states.size(0), device=states.device)
    at_last = states[rows, lengths - 1]
    if not bidirectional:
        return at_last
    return torch.cat([at_last[:, :hidden_size], states[:, 0, hidden_size:]], dim=-1)


class _InferenceWeights(NamedTuple):
    # TorchScript reads `X | None` in functions, not yet in NamedTuple fields.
    embedding: torch.Tensor
    lstm: list[torch.Tensor]  # flat, in nn.LSTM's order (see _grouped_lstm_states)
    hidden_size: int
    num_layers: int
    bidirectional: bool
    lstm_bias: bool
    attention_weight: Optional[torch.Tensor]  # noqa: UP045 (TorchScript)
    attention_bias: Optional[torch.Tensor]  # noqa: UP045 (TorchScript)
    pooling: str
    pool_embeddings: bool
    head_weight: torch.Tensor
    head_bias: torch.Tensor
    bag: Optional[torch.Tensor]  # noqa: UP045 (TorchScript)
    bigrams: Optional[torch.Tensor]  # noqa: UP045 (TorchScript)
    known_bigrams: Optional[torch.Tensor]  # noqa: UP045 (TorchScript)
    pad_id: int
    lowest: float  # the lowest value of the weights' float type


def _cpu_inference(ids: torch.Tensor, lengths: torch.Tensor,
                   w: _InferenceWeights) -> torch.Tensor:
    """`LSTMClassifier.forward` at inference on the CPU, as one function of the weights that
    TorchScript compiles (`_CPU_INFERENCE`): the same ops, without dropout."""
    T = ids.size(1)
    lengths = lengths.clamp(min=1, max=T)
    emb = nn.functional.embedding(ids, w.embedding)
    mask = torch.arange(T, device=ids.device).unsqueeze(0) < lengths.unsqueeze(1)
    states = _grouped_lstm_states(emb, lengths, mask, _length_groups(lengths), w.lstm,
                                  w.hidden_size, w.num_layers, w.bidirectional, w.lstm_bias)
    scores: torch.Tensor | None = None
    attention_weight = w.attention_weight
    if attention_weight is not None:
        scores = nn.functional.linear(states, attention_weight, w.attention_bias).squeeze(-1)
    features = _pooled_features(states, emb, lengths, mask, scores, w.pooling,
                                w.pool_embeddings, w.hidden_size, w.bidirectional, w.lowest)
    logits = nn.functional.linear(features, w.head_weight, w.head_bias)
    bag, bigrams, known = w.bag, w.bigrams, w.known_bigrams
    if bag is not None:
        logits = logits + _distinct_sum(bag, ids, ids != w.pad_id)
    if bigrams is not None and known is not None and T > 1:
        pairs, unpadded = _pair_buckets(ids, bigrams.size(0), w.pad_id)
        logits = logits + _distinct_sum(bigrams, pairs, unpadded & known[pairs])
    return logits


F = TypeVar("F", bound=Callable[..., Any])


def _script_or_plain(fn: F) -> F:
    """`fn` compiled by TorchScript, or `fn` itself where this torch build cannot compile it.

    Called from Python, every torch op releases the GIL and takes it back, waiting up to the
    switch interval whenever another thread runs Python, as the worker's main loop does beside
    the inference lanes. A compiled function takes the GIL back once, at its end: a batch of
    16 beside a busy Python thread took 127 ms op by op, 42 ms with the LSTM and the table
    sums compiled, and 22 ms with the whole inference compiled (19 ms alone).
    Compiled functions serve inference only: one that has built a gradient graph fails later
    under `torch.inference_mode`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch announces TorchScript's deprecation
        try:
            return torch.jit.script(fn)  # type: ignore[no-any-return]
        except Exception:  # noqa: BLE001 - no TorchScript here: the plain function serves
            return fn


_CPU_INFERENCE = _script_or_plain(_cpu_inference)
