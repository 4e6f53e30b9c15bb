"""pad_batch, padding invariance of the LSTM, the decision rule and the artifact round trip."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from model import lstm as lstm_module
from model.artifact import ArtifactError, load_artifact, save_artifact
from model.lstm import POOLINGS, LSTMClassifier, LSTMConfig
from model.predictor import Predictor, decide, pad_batch, resolve_device
from model.tokenizer import Vocab

WORDS = ["free", "prize", "call", "now", "meeting", "lunch", "tomorrow", "report", "win", "cash"]


def _tiny(
    bidirectional: bool = True,
    num_labels: int = 2,
    bag_logits: bool = False,
    pooling: str = "max_mean",
    bag_bigrams: int = 0,
) -> tuple[LSTMClassifier, Vocab]:
    torch.manual_seed(0)
    vocab = Vocab(["<pad>", "<unk>", *WORDS])
    cfg = LSTMConfig(
        vocab_size=len(vocab),
        num_labels=num_labels,
        embed_dim=8,
        hidden_dim=6,
        bidirectional=bidirectional,
        bag_logits=bag_logits,
        pooling=pooling,
        bag_bigrams=bag_bigrams,
    )
    model = LSTMClassifier(cfg).eval()
    with torch.no_grad():  # trained tables are not zero; the padding row stays zero
        if model.bag is not None:
            model.bag.weight.normal_()
            model.bag.weight[cfg.pad_id] = 0.0
        if model.bigrams is not None:
            model.bigrams.weight.normal_()
    return model, vocab


def test_pad_batch_shapes_and_values() -> None:
    ids, lengths = pad_batch([[5, 6, 7], [8], []])
    assert ids.dtype == torch.long and lengths.dtype == torch.long
    assert ids.shape == (3, 3)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert lengths.tolist() == [3, 1, 1]  # the empty text reads one pad token


def test_pad_batch_caps_at_max_tokens() -> None:
    ids, lengths = pad_batch([list(range(2, 12)), [3, 4]], pad_id=0, max_tokens=4)
    assert ids.shape == (2, 4)
    assert lengths.tolist() == [4, 2]
    ids, lengths = pad_batch([[3, 4]], max_tokens=100)
    assert ids.shape == (1, 2)  # pads to the longest, not to the cap
    with pytest.raises(ValueError):
        pad_batch([[1]], max_tokens=0)


def test_pad_batch_empty_batch() -> None:
    ids, lengths = pad_batch([])
    assert ids.shape == (0, 1) and lengths.shape == (0,)


@pytest.mark.parametrize(
    ("bidirectional", "bag_logits", "pooling", "bag_bigrams"),
    [
        (True, False, "max_mean", 0),
        (False, False, "max_mean", 0),
        (True, True, "max_mean", 0),
        (True, True, "max_mean", 64),
        (True, False, "last", 0),
        (False, False, "last", 0),
        (True, False, "attention", 0),
        (True, True, "all", 0),
    ],
)
def test_scores_do_not_depend_on_batch_padding(
    bidirectional: bool, bag_logits: bool, pooling: str, bag_bigrams: int
) -> None:
    model, _ = _tiny(bidirectional, bag_logits=bag_logits, pooling=pooling, bag_bigrams=bag_bigrams)
    short = [2, 3, 4]
    alone = model(*pad_batch([short]))
    with_long = model(*pad_batch([short, list(range(2, 12)) * 5]))
    assert torch.allclose(alone[0], with_long[0], atol=1e-5)
    # Explicit extra padding with a correct length must not change anything either.
    ids = torch.tensor([short + [0] * 20])
    padded = model(ids, torch.tensor([3]))
    assert torch.allclose(alone[0], padded[0], atol=1e-5)
    # ...while the model does read the tokens (the test can fail).
    other = model(*pad_batch([[9, 10, 11]]))
    assert not torch.allclose(alone, other)


def _without_lstm(model: LSTMClassifier, ids: torch.Tensor) -> torch.Tensor:
    """The model's logits minus its LSTM head's: what the logit tables add."""
    lengths = (ids != 0).sum(dim=1)
    with torch.no_grad():
        full = model(ids, lengths)
        bag, bigrams = model.bag, model.bigrams
        model.bag, model.bigrams = None, None
        try:
            head = model(ids, lengths)
        finally:
            model.bag, model.bigrams = bag, bigrams
    return full - head


def test_bag_logits_count_each_distinct_token_once() -> None:
    model, _ = _tiny(bag_logits=True)
    assert model.bag is not None
    table = model.bag.weight
    ids = torch.tensor([[3, 4, 3, 3, 5, 0, 0], [5, 4, 3, 0, 0, 0, 0]])
    got = _without_lstm(model, ids)
    want = table[3] + table[4] + table[5]
    assert torch.allclose(got[0], want, atol=1e-5) and torch.allclose(got[1], want, atol=1e-5)


def test_bigram_logits_count_each_distinct_adjacent_pair_once() -> None:
    model, _ = _tiny(bag_bigrams=1000)
    assert model.bigrams is not None and model.bag is None
    table = model.bigrams.weight
    ids = torch.tensor([[3, 4, 3, 4, 5, 0, 0]])  # pairs (3,4) twice, (4,3), (4,5); none with pads
    buckets, valid = model.bigram_ids(ids)
    assert valid.tolist() == [[True, True, True, True, False, False]]
    b = buckets[0].tolist()
    assert b[0] == b[2] and len({b[0], b[1], b[3]}) == 3  # order matters: (3,4) ≠ (4,3)
    got = _without_lstm(model, ids)
    want = table[b[0]] + table[b[1]] + table[b[3]]
    assert torch.allclose(got[0], want, atol=1e-5)


def test_negative_bigram_buckets_are_rejected() -> None:
    with pytest.raises(ValueError, match="bag_bigrams"):
        LSTMConfig(bag_bigrams=-1)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_forward_shape(pooling: str) -> None:
    model, _ = _tiny(num_labels=3, pooling=pooling)
    logits = model(*pad_batch([[2, 3], [4, 5, 6, 7], []]))
    assert logits.shape == (3, 3)  # (B, L)


def test_last_pooling_takes_each_directions_final_state() -> None:
    model, _ = _tiny(bidirectional=True, pooling="last")
    seq = [2, 3, 4, 5]
    got = model(*pad_batch([seq, list(range(2, 12))]))[0]  # padded beside a longer text
    # By hand, on the unpadded text: the forward state after the last token and the backward
    # state after reading back to the first, then the embeddings' max-pool, then the head.
    with torch.no_grad():
        emb = model.embedding(torch.tensor([seq]))
        out, _ = model.lstm(emb)
        hidden = model.config.hidden_dim
        state = torch.cat([out[0, -1, :hidden], out[0, 0, hidden:]])
        features = torch.cat([state, emb[0].amax(dim=0)])
        want = model.head(features)
    assert torch.allclose(got, want, atol=1e-5)


def test_unknown_pooling_is_rejected() -> None:
    with pytest.raises(ValueError, match="pooling must be one of"):
        LSTMConfig(pooling="mean")
    from model import cli

    assert set(cli._POOLINGS) == set(POOLINGS)  # the CLI's choices, kept torch-free


def test_decide_threshold_and_argmax() -> None:
    labels = ("ham", "spam")
    assert decide([0.3, 0.7], labels, "spam", 0.9) == 0
    assert decide([0.05, 0.95], labels, "spam", 0.9) == 1
    assert decide([0.3, 0.7], labels, None, None) == 1
    assert decide([0.2, 0.5, 0.3], ("a", "b", "c"), "b", 0.9) == 1  # 3 labels: argmax


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError):
        resolve_device("tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError):
            resolve_device("cuda:1")


def _save(tmp_path: Path, num_labels: int = 2) -> Path:
    model, vocab = _tiny(num_labels=num_labels)
    labels = ["ham", "spam"] if num_labels == 2 else ["a", "b", "c"][:num_labels]
    meta = {
        "name": "tiny",
        "version": "7",
        "labels": labels,
        "positive_label": "spam" if num_labels == 2 else None,
        "threshold": 0.5 if num_labels == 2 else None,
        "temperature": 1.0,
        "max_tokens": 16,
    }
    return save_artifact(tmp_path / "art", meta, model.config, vocab, model.state_dict())


def test_artifact_round_trip_gives_same_predictions(tmp_path: Path) -> None:
    path = _save(tmp_path)
    model, vocab = _tiny()
    # Stored weights are float16: compare against the same rounding.
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    direct = Predictor(model, vocab, ["ham", "spam"], positive_label="spam", threshold=0.5)
    loaded = Predictor.load(path, device="cpu")
    texts = ["free prize call now", "lunch meeting tomorrow", "", "unknown words only"]
    a, b = direct.predict(texts), loaded.predict(texts)
    assert [p.label for p in a] == [p.label for p in b]
    for p, q in zip(a, b, strict=True):
        assert p.scores == pytest.approx(q.scores, abs=1e-6)
        assert p.score == p.scores[p.label]
        assert sum(p.scores.values()) == pytest.approx(1.0)
    assert (loaded.name, loaded.version, loaded.max_tokens) == ("tiny", "7", 16)
    assert loaded.labels == ("ham", "spam") and loaded.positive_label == "spam"


def test_load_overrides_threshold_and_max_tokens(tmp_path: Path) -> None:
    path = _save(tmp_path)
    p = Predictor.load(path, device="cpu", max_tokens=3, threshold=0.0)
    assert p.max_tokens == 3 and len(p.tokenize("free prize call now win")) == 3
    assert {x.label for x in p.predict(["lunch", "free"])} == {"spam"}  # threshold 0: all spam
    with pytest.raises(ValueError):
        Predictor.load(path, device="cpu", threshold=1.5)


def test_predict_ids_keeps_input_order(tmp_path: Path) -> None:
    p = Predictor.load(_save(tmp_path), device="cpu")
    seqs = [[2, 3, 4, 5, 6, 7], [8], [9, 10, 11]]
    together = p.predict_ids(seqs)
    one_by_one = [p.predict_ids([s])[0] for s in seqs]
    for a, b in zip(together, one_by_one, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-5)
    assert p.predict_ids([]) == []


@pytest.mark.parametrize("num_labels", [2, 3])
def test_warm_up_runs_forward_passes_and_changes_no_result(
    tmp_path: Path, num_labels: int
) -> None:
    """`warm_up` (the worker calls it before it reports ready) runs the model on a short text
    `passes` times, with any labels, and leaves every later result as it would have been."""
    class Counting(Predictor):
        calls: list[int] = []

        def probabilities(self, seqs: Any) -> torch.Tensor:
            self.calls.append(len(seqs))
            return super().probabilities(seqs)

    path = _save(tmp_path, num_labels=num_labels)
    cold = Predictor.load(path, device="cpu").predict(["free prize call now", "lunch"])
    warm = Counting.load(path, device="cpu")
    warm.warm_up(passes=3)
    assert len(warm.calls) == 3 and all(n > 0 for n in warm.calls)
    after = warm.predict(["free prize call now", "lunch"])
    assert [p.label for p in after] == [p.label for p in cold]
    for p, q in zip(after, cold, strict=True):
        assert p.scores == pytest.approx(q.scores, abs=1e-6)


def test_tampered_weights_are_rejected(tmp_path: Path) -> None:
    path = _save(tmp_path)
    weights = path / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[-40] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(path)


def test_missing_files_are_rejected(tmp_path: Path) -> None:
    path = _save(tmp_path)
    (path / "vocab.json").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        Predictor.load(path, device="cpu")
    with pytest.raises(ArtifactError):
        load_artifact(tmp_path / "nowhere")
    path2 = _save(tmp_path / "b")
    (path2 / "manifest.json").unlink()
    with pytest.raises(ArtifactError):
        load_artifact(path2)


def test_tampered_config_is_rejected(tmp_path: Path) -> None:
    path = _save(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["threshold"] = 0.0
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError):
        load_artifact(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": ["ham", "ham"]}, "labels repeat"),
        ({"positive_label": "junk"}, "positive_label 'junk' is not one of the labels"),
        ({"temperature": 0}, "temperature must be a positive number"),
        ({"max_tokens": 0}, "max_tokens must be a positive integer"),
        ({"thresholds": {"email": 2.0}}, "thresholds must map"),
        ({"head_fraction": None}, "head_fraction must be within"),  # was a TypeError, exit 1
    ],
)
def test_an_artifact_whose_config_cannot_serve_is_refused_at_load(
        tmp_path: Path, change: dict, message: str) -> None:
    """Written by save_artifact (so the manifest matches), but unusable: refused when loaded,
    not when the first message is classified (NaN scores, collapsed labels, a silent argmax)."""
    model, vocab = _tiny()
    meta = {"name": "tiny", "version": "1", "labels": ["ham", "spam"], "positive_label": "spam",
            "threshold": 0.5, "temperature": 1.0, "max_tokens": 16, **change}
    path = save_artifact(tmp_path / "art", meta, model.config, vocab, model.state_dict())
    with pytest.raises(ArtifactError, match=message):
        Predictor.load(path, device="cpu")


def test_weights_that_do_not_fit_the_config_are_an_artifact_error(tmp_path: Path) -> None:
    model, vocab = _tiny()
    bigger = LSTMConfig(**{**model.config.to_dict(), "hidden_dim": model.config.hidden_dim + 2})
    meta = {"name": "tiny", "version": "1", "labels": ["ham", "spam"], "positive_label": "spam"}
    path = save_artifact(tmp_path / "art", meta, bigger, vocab, model.state_dict())
    with pytest.raises(ArtifactError, match="do not fit its model config"):
        Predictor.load(path, device="cpu")


def test_a_config_declaring_huge_tables_is_refused_before_anything_is_allocated(
        tmp_path: Path) -> None:
    """Before, the declared sizes were allocated first: 300 million pair buckets beside small
    weights took 2.9 GB of memory, then failed."""
    import resource

    model, vocab = _tiny()
    huge = LSTMConfig(**{**model.config.to_dict(), "bag_bigrams": 2_000_000_000})
    meta = {"name": "tiny", "version": "1", "labels": ["ham", "spam"], "positive_label": "spam"}
    path = save_artifact(tmp_path / "art", meta, huge, vocab, model.state_dict())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ArtifactError, match="do not fit its model config: bigrams"):
        Predictor.load(path, device="cpu")
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 500_000, f"peak memory grew by {grown_kb} kB"  # the table: 16 GB


def test_a_padding_id_outside_the_vocabulary_is_an_artifact_error(tmp_path: Path) -> None:
    model, vocab = _tiny()
    odd = LSTMConfig(**{**model.config.to_dict(), "pad_id": 1_000_000})
    meta = {"name": "tiny", "version": "1", "labels": ["ham", "spam"], "positive_label": "spam"}
    path = save_artifact(tmp_path / "art", meta, odd, vocab, model.state_dict())
    with pytest.raises(ArtifactError, match="cannot build a model"):  # was an AssertionError
        Predictor.load(path, device="cpu")


def _kinds_predictor(thresholds: dict[str, float] | None, threshold: float = 0.5) -> Predictor:
    model, _ = _tiny()
    vocab = Vocab(["<pad>", "<unk>", *WORDS, "subject", "from"])
    cfg = LSTMConfig(vocab_size=len(vocab), num_labels=2, embed_dim=8, hidden_dim=6)
    torch.manual_seed(0)
    model = LSTMClassifier(cfg).eval()
    return Predictor(
        model,
        vocab,
        ["ham", "spam"],
        positive_label="spam",
        threshold=threshold,
        thresholds=thresholds,
    )


def test_kind_is_read_from_the_token_ids() -> None:
    p = _kinds_predictor(None)
    assert p.kind_of(p.tokenize("Subject: free prize\nFrom: Bob example.com\ncall now")) == "email"
    assert p.kind_of(p.tokenize("From: Bob example.com\nlunch")) == "email"
    assert p.kind_of(p.tokenize("free prize call now")) == "text"
    assert p.kind_of([]) == "text"
    assert p.threshold_for(p.tokenize("Subject: x")) == 0.5  # no per-kind thresholds: shared


def test_per_kind_thresholds_decide_each_kind() -> None:
    email_text, sms = "Subject: lunch\nmeeting tomorrow", "lunch meeting tomorrow"
    # Everything is spam for email (threshold 0) and ham for text (threshold 1).
    p = _kinds_predictor({"email": 0.0, "text": 1.0})
    ids = [p.tokenize(email_text), p.tokenize(sms)]
    assert [x.label for x in p.predict_ids(ids)] == ["spam", "ham"]
    assert [x.label for x in p.predict([email_text, sms])] == ["spam", "ham"]
    assert p.threshold_for(ids[0]) == 0.0 and p.threshold_for(ids[1]) == 1.0
    with pytest.raises(ValueError):
        _kinds_predictor({"email": 0.5})


def test_artifact_thresholds_load_and_an_explicit_threshold_overrides_them(
    tmp_path: Path,
) -> None:
    from model.artifact import update_config

    path = _save(tmp_path)
    update_config(path, {"thresholds": {"email": 0.0, "text": 1.0}})
    load_artifact(path)  # the manifest was rewritten: still verifies
    p = Predictor.load(path, device="cpu")
    assert p.thresholds == {"email": 0.0, "text": 1.0}
    assert [x.label for x in p.predict(["free prize", "lunch"])] == ["ham", "ham"]  # text: 1.0
    q = Predictor.load(path, device="cpu", threshold=0.0)
    assert q.thresholds is None
    assert {x.label for x in q.predict(["free prize", "lunch"])} == {"spam"}


def test_bigrams_seen_in_one_training_text_are_ignored() -> None:
    model, _ = _tiny(bag_bigrams=1000)
    assert model.bigrams is not None
    kept = model.learn_bigrams([[3, 4, 5], [3, 4, 6], [7, 8, 0, 0]], min_texts=2)
    assert kept == 1  # only (3, 4) is in two texts; padding pairs never count
    buckets, valid = model.bigram_ids(torch.tensor([[3, 4, 5, 7, 8]]))
    assert valid.tolist() == [[True, False, False, False]]
    got = _without_lstm(model, torch.tensor([[3, 4, 5, 7, 8]]))
    assert torch.allclose(got[0], model.bigrams.weight[buckets[0, 0]], atol=1e-5)


def test_bag_dropout_acts_in_training_only() -> None:
    with pytest.raises(ValueError, match="bag_dropout"):
        LSTMConfig(bag_dropout=1.0)
    model, _ = _tiny(bag_logits=True, bag_bigrams=1000)
    ids = torch.tensor([list(range(2, 12))])
    expected = _without_lstm(model, ids)  # eval mode: the plain sum
    model.config.bag_dropout = 0.5
    assert torch.allclose(_without_lstm(model, ids), expected, atol=1e-5)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        sums = [model._table_sum(model.bag, ids, ids != 0) for _ in range(1000)]  # type: ignore[arg-type]
    assert not torch.allclose(sums[0], sums[1])  # tokens are left out at random...
    mean = torch.stack(sums).mean(dim=0)
    assert torch.allclose(mean, model.bag.weight[2:12].sum(dim=0), atol=0.5)  # ...unbiased


@pytest.mark.parametrize(("bidirectional", "num_layers", "pooling"),
                         [(True, 1, "all"), (True, 2, "max_mean"), (False, 2, "all")])
def test_the_lstm_runs_unpacked_on_the_cpu_with_the_packed_result(
    bidirectional: bool, num_layers: int, pooling: str
) -> None:
    """On the CPU, training and inference run the LSTM on length groups of the padded batch
    (much faster than packed sequences there). It must give the packed states, and in training
    their gradients, for texts of equal length (one fused call: 96 × 3, and 150, the batch's
    longest), similar lengths (padded, the backward direction reading each text reversed
    within its length) and far-apart lengths (separate groups)."""
    torch.manual_seed(3)
    cfg = LSTMConfig(vocab_size=50, num_labels=3, embed_dim=8, hidden_dim=6,
                     num_layers=num_layers, bidirectional=bidirectional, dropout=0.0,
                     pooling=pooling, bag_logits=True, bag_bigrams=64, bag_dropout=0.0)
    model = LSTMClassifier(cfg).train()
    lengths = [96, 96, 96, 40, 37, 33, 12, 11, 3, 1, 150]
    seqs = [torch.randint(2, 50, (n,)).tolist() for n in lengths]
    ids, lens = pad_batch(seqs)
    mask = torch.arange(ids.shape[1])[None, :] < lens[:, None]
    grads = []
    for states in (model._packed_lstm, lambda x, n: model._padded_lstm(x, n, mask)):  # noqa: SLF001
        model.zero_grad()
        out = states(model.embedding(ids), lens)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.lstm.parameters()]))
    (packed, packed_grads), (unpacked, unpacked_grads) = grads
    assert torch.allclose(packed, unpacked, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4)
               for a, b in zip(packed_grads, unpacked_grads, strict=True))
    assert model._padded_lstm_applies(ids.device)  # noqa: SLF001  training takes this path
    with torch.no_grad():  # and inference, compiled, gives the same logits
        trained_path = model(ids, lens)
        compiled = model.eval()(ids, lens)
    assert torch.allclose(trained_path, compiled, atol=1e-5)
    # The backward direction matters (the test can fail): reading the padding first differs.
    if bidirectional:
        with torch.no_grad():
            naive, _ = model.lstm(model.embedding(ids))
        assert not torch.allclose(naive[4, :37], unpacked[4, :37], atol=1e-4)


def test_stacked_layers_with_dropout_train_on_packed_sequences() -> None:
    """Dropout between stacked layers is nn.LSTM's own: training with it keeps that module."""
    model = LSTMClassifier(LSTMConfig(vocab_size=50, embed_dim=8, hidden_dim=6, num_layers=2,
                                      dropout=0.3)).train()
    assert not model._padded_lstm_applies(torch.device("cpu"))  # noqa: SLF001
    assert model.eval()._padded_lstm_applies(torch.device("cpu"))  # noqa: SLF001


def _lstm_module_without_torchscript(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A second copy of model/lstm.py, loaded while torch.jit.script refuses to compile."""
    def refuse(fn: Any) -> Any:
        raise RuntimeError("no TorchScript in this build")

    monkeypatch.setattr(torch.jit, "script", refuse)
    path = Path(lstm_module.__file__)
    spec = importlib.util.spec_from_file_location("lstm_without_torchscript", path)
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, copy)  # its dataclasses look themselves up there
    spec.loader.exec_module(copy)
    return copy


@pytest.mark.parametrize("pooling", POOLINGS)
def test_cpu_inference_is_compiled_and_runs_the_same_without_torchscript(
    monkeypatch: pytest.MonkeyPatch, pooling: str
) -> None:
    """Inference on the CPU runs as one TorchScript function, so that a busy Python thread
    beside inference (the worker's main loop) delays a batch once, not at every op. Where
    TorchScript cannot compile it, the same code runs op by op, with the same logits. Runs
    with gradients (training) before inference do not break it."""
    assert isinstance(lstm_module._CPU_INFERENCE, torch.jit.ScriptFunction)
    plain = _lstm_module_without_torchscript(monkeypatch)
    assert plain._CPU_INFERENCE is plain._cpu_inference
    torch.manual_seed(5)
    cfg = LSTMConfig(vocab_size=60, num_labels=2, embed_dim=8, hidden_dim=6, dropout=0.0,
                     pooling=pooling, bag_logits=True, bag_bigrams=128)
    compiled_model = LSTMClassifier(cfg).eval()
    plain_model = plain.LSTMClassifier(plain.LSTMConfig(**cfg.to_dict())).eval()
    plain_model.load_state_dict(compiled_model.state_dict())
    seqs = [torch.randint(2, 60, (n,)).tolist() for n in (70, 64, 33, 30, 5, 1)]
    ids, lens = pad_batch(seqs)
    for _ in range(3):  # gradients flow: a compiled function would build a gradient graph
        compiled_model(ids, lens).sum().backward()
    with torch.inference_mode():
        compiled = compiled_model(ids, lens)
        assert torch.equal(compiled, plain_model(ids, lens))
    # The same as the module's own layers give, with gradients on (not the compiled path).
    assert torch.allclose(compiled, compiled_model(ids, lens).detach(), atol=1e-6)


def test_loading_a_model_leaves_torchs_python_decompositions_unimported() -> None:
    """The shape check built the model on the meta device, where the embeddings' normal_ init
    imported torch's Python decompositions (sympy and ~800 modules): 73 MB more resident memory
    in every worker. In a fresh process: other tests may have imported them already."""
    code = ("import sys; from model.predictor import Predictor; Predictor.load('bundled'); "
            "print('sympy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"


def test_the_shape_checks_normal_init_no_op_is_for_its_own_thread_only() -> None:
    """A model built on another thread while a shape check runs (a trainer, a second load) must
    get its embeddings initialised: the no-op must not reach beyond the checking thread."""
    import threading

    from model.predictor import _WithoutNormalInit

    filled: list[torch.Tensor] = []
    with _WithoutNormalInit():
        assert torch.equal(torch.nn.init.normal_(torch.zeros(4)), torch.zeros(4))
        other = threading.Thread(
            target=lambda: filled.append(torch.nn.init.normal_(torch.zeros(1000))))
        other.start()
        other.join()
    assert bool(filled[0].ne(0).any()), "another thread's normal_ was a no-op"
    assert bool(torch.nn.init.normal_(torch.zeros(1000)).ne(0).any()), "left in place"

