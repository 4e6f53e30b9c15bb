"""The classifier: embedding → (Bi)LSTM → masked pooling → linear head, plus optionally a
per-token logit table summed over the distinct tokens of the text (``bag_logits``).

The LSTM never reads padding into a text's states (packed sequences in training; groups of
similar length at inference on the CPU, `_grouped_lstm_states`), and pooling leaves padded
positions out: a text's logits do not depend on how long the other texts in its batch are.
At inference the helpers run as TorchScript functions (`_compiled`), which do not take the
GIL back at every op.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

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
        B, T = ids.shape
        lengths = lengths.clamp(min=1, max=T)
        emb = self.dropout(self.embedding(ids))  # (B, T, E)
        mask = torch.arange(T, device=ids.device)[None, :] < lengths[:, None]  # (B, T)
        mask3 = mask.unsqueeze(-1)  # (B, T, 1)
        if self._padded_lstm_applies(ids.device):
            out = self._padded_lstm(emb, lengths, mask)
        else:
            packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True,
                                          enforce_sorted=False)
            out, _ = self.lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, D*H)
        neg = torch.finfo(out.dtype).min
        pad_bias = (~mask3).to(out.dtype) * neg  # (B, T, 1): 0 on text, lowest float on padding
        pooling = self.config.pooling
        mean = last = attended = None  # each (B, D*H)
        if pooling in ("max_mean", "all"):
            mean = out.sum(dim=1) / lengths.to(out.dtype).unsqueeze(-1)  # pads are zeros
        if pooling in ("last", "all"):
            # The forward direction's state at each text's own last token, the backward one's
            # at its first (where it ends).
            H = self.config.hidden_dim
            at_last = out[torch.arange(B, device=ids.device), lengths - 1]  # (B, D*H)
            last = (torch.cat([at_last[:, :H], out[:, 0, H:]], dim=-1)
                    if self.config.bidirectional else at_last)
        if self.attention is not None:
            scores = self.attention(out).squeeze(-1).masked_fill(~mask, neg)  # (B, T)
            weights = scores.softmax(dim=1).unsqueeze(-1)  # (B, T, 1), zero on padding
            attended = (weights * out).sum(dim=1)
        # Max-pooling comes last: at inference it overwrites `out` (nothing reads it after).
        peak = _masked_max(out, pad_bias) if pooling in ("max_mean", "all") else None
        pooled = [t for t in (peak, mean, last, attended) if t is not None]
        if self.config.pool_embeddings:
            pooled.append(_masked_max(emb, pad_bias))  # (B, E); padding embeds to zeros
        logits = self.head(self.dropout(torch.cat(pooled, dim=-1)))  # (B, L)
        if self.bag is not None:
            logits = logits + self._table_sum(self.bag, ids, ids != self.config.pad_id)
        if self.bigrams is not None and T > 1:
            pairs, valid = self.bigram_ids(ids)
            logits = logits + self._table_sum(self.bigrams, pairs, valid)
        return logits

    def _padded_lstm_applies(self, device: torch.device) -> bool:
        """Inference on the CPU with a plain float LSTM. Training keeps the packed path it was
        tuned with; an int8 copy has its own LSTM module; cuDNN runs packed sequences well."""
        return (not self.training and device.type == "cpu" and type(self.lstm) is nn.LSTM
                and self.lstm.proj_size == 0)

    def _padded_lstm(self, x: torch.Tensor, lengths: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
        """The LSTM's states (B, T, D*H), zeros on padding: the same as over packed sequences,
        computed without packing (`_grouped_lstm_states`)."""
        lstm = self.lstm
        params: list[torch.Tensor] = [w for ws in lstm.all_weights for w in ws]  # flat, in order
        return _grouped_lstm_states(x, lengths, mask, _length_groups(lengths), params,
                                    lstm.hidden_size, lstm.num_layers, lstm.bidirectional,
                                    lstm.bias, _GROUP_LENGTH_STEP)

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


F = TypeVar("F", bound=Callable[..., Any])


def _compiled(fn: F) -> F:
    """`fn` for training (where gradients flow), and `fn` compiled by TorchScript for inference
    where this torch build can compile it.

    Called from Python, every torch op releases the GIL and takes it back, waiting up to the
    switch interval whenever another thread runs Python, as the worker's main loop does beside
    the inference lanes: a batch of 16 took 20 ms alone and 127 ms beside a busy Python thread.
    A compiled function takes the GIL back once, at its end. Training keeps the plain function:
    its ops are the ones the recipe was measured with, and a compiled function that has built
    a gradient graph fails later under `torch.inference_mode`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch announces TorchScript's deprecation
        try:
            scripted = torch.jit.script(fn)
        except Exception:  # noqa: BLE001 - no TorchScript here: the plain function serves
            return fn

    @functools.wraps(fn)
    def run(*args: Any) -> Any:
        return fn(*args) if torch.is_grad_enabled() else scripted(*args)

    run.scripted = scripted  # type: ignore[attr-defined]
    return run  # type: ignore[return-value]


@_compiled
def _grouped_lstm_states(x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor,
                         groups: list[torch.Tensor], params: list[torch.Tensor],
                         hidden_size: int, num_layers: int, bidirectional: bool,
                         has_bias: bool, step: int) -> torch.Tensor:
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


# Texts whose lengths are within this factor of the group's shortest (plus a few tokens) run in
# one LSTM call: padding costs as much as text there, and each call costs ~0.1 ms of its own.
_GROUP_LENGTH_RATIO = 1.25
_GROUP_LENGTH_SLACK = 4
_GROUP_LENGTH_STEP = 32


def _length_groups(lengths: torch.Tensor) -> list[torch.Tensor]:
    """Row indices of the batch in groups of similar length (shortest first)."""
    order = torch.argsort(lengths).tolist()
    values = lengths.tolist()
    groups: list[list[int]] = []
    for i in order:
        if groups and values[i] <= values[groups[-1][0]] * _GROUP_LENGTH_RATIO + \
                _GROUP_LENGTH_SLACK:
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


@_compiled
def _pair_buckets(
    ids: torch.Tensor, buckets: int, pad_id: int, multiplier: int = _PAIR_MULTIPLIER
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket of each adjacent pair of ids (B, T-1), and which pairs hold no padding.

    A fixed multiplicative hash of the two ids: stored models keep meaning the same pairs.
    (`multiplier` is a parameter only because TorchScript cannot read module constants.)"""
    first, second = ids[:, :-1], ids[:, 1:]
    return (first * multiplier + second) % buckets, (first != pad_id) & (second != pad_id)


@_compiled
def _distinct_sum(table: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sum of `table` rows over each row's distinct valid ids (B, N) → (B, L)."""
    ids = ids.masked_fill(~valid, -1)  # invalid ids sort first and are dropped below
    ordered, _ = ids.sort(dim=1)
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]  # one count per distinct id
    keep = first & (ordered >= 0)
    return (nn.functional.embedding(ordered.clamp(min=0), table) * keep.unsqueeze(-1)).sum(dim=1)
