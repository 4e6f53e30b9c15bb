"""Training end to end on tiny data written here: a 3-label model, and the CLI around it."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import math
import random
import re
import sys
from pathlib import Path

import pytest
import torch

from model.artifact import load_artifact
from model.cli import main as cli_main
from model.data import Example
from model.predictor import Predictor
from model.train import TrainOptions, train, weighted_loss

TOPICS = {
    "sports": "goal match team score referee league striker keeper".split(),
    "cooking": "recipe oven flour butter simmer garlic salt bake".split(),
    "tech": "kernel compiler server python database cache deploy cpu".split(),
}


def _write_data(path: Path, per_label: int = 14, seed: int = 1) -> Path:
    rng = random.Random(seed)
    rows = []
    for label, words in TOPICS.items():
        for i in range(per_label):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))
            split = "val" if i % 5 == 0 else "train"
            rows.append({"id": f"{label}-{i}", "label": label, "split": split, "text": text})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _options(data: Path, out: Path, **kw: object) -> TrainOptions:
    base: dict = dict(
        data=[data],
        out=out,
        epochs=12,
        embed_dim=16,
        hidden_dim=8,
        batch_size=8,
        lr=0.02,
        vocab_size=100,
        min_freq=1,
        max_tokens=32,
        patience=20,
        threads=1,
        progress=False,
        dropout=0.0,
    )
    base.update(kw)
    return TrainOptions(**base)


def test_three_label_model_trains_saves_loads_and_predicts(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "topics.jsonl")
    meta = train(_options(data, tmp_path / "art"))
    assert meta["labels"] == ["cooking", "sports", "tech"]
    assert meta["positive_label"] is None and meta["threshold"] is None
    assert meta["training"]["counts"]["train"] == {"sports": 11, "cooking": 11, "tech": 11}
    assert len(meta["training"]["data"][0]["sha256"]) == 64
    predictor = Predictor.load(tmp_path / "art", device="cpu")
    assert predictor.labels == ("cooking", "sports", "tech")
    preds = predictor.predict(
        [
            "striker goal team referee",  # in-vocabulary words only: the data is tiny
            "bake flour butter oven",
            "python server cache cpu",
        ]
    )
    assert [p.label for p in preds] == ["sports", "cooking", "tech"]
    assert all(set(p.scores) == set(TOPICS) for p in preds)


def test_training_is_reproducible(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "topics.jsonl")
    a = train(_options(data, tmp_path / "a", epochs=2))
    b = train(_options(data, tmp_path / "b", epochs=2))
    assert a["training"]["history"] == b["training"]["history"]
    assert (tmp_path / "a" / "weights.pt").read_bytes() == (
        tmp_path / "b" / "weights.pt"
    ).read_bytes()


def test_pair_table_with_table_dropout_is_reproducible_and_stored(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "topics.jsonl")
    opts = dict(epochs=2, bag_bigrams=256, bag_dropout=0.3)
    a = train(_options(data, tmp_path / "a", **opts))
    b = train(_options(data, tmp_path / "b", **opts))
    assert a["training"]["history"] == b["training"]["history"]
    assert (tmp_path / "a" / "weights.pt").read_bytes() == (
        tmp_path / "b" / "weights.pt"
    ).read_bytes()
    stored = json.loads((tmp_path / "a" / "config.json").read_text())["model"]
    assert stored["bag_bigrams"] == 256 and stored["bag_dropout"] == 0.3
    # The pairs seen in training travel with the artifact: the loaded model ignores the others.
    loaded = Predictor.load(tmp_path / "a", device="cpu").model
    known = loaded.known_bigrams
    assert 0 < int(known.sum()) < 256
    train(_options(data, tmp_path / "c", epochs=1, bag_bigrams=256))  # same pairs, no dropout
    assert torch.equal(Predictor.load(tmp_path / "c", device="cpu").model.known_bigrams, known)


def test_redress_is_seeded_and_recorded(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "topics.jsonl")
    a = train(_options(data, tmp_path / "a", epochs=1, redress=0.5))
    b = train(_options(data, tmp_path / "b", epochs=1, redress=0.5))
    plain = train(_options(data, tmp_path / "c", epochs=1))
    assert a["training"]["options"]["redress"] == 0.5
    assert a["training"]["history"] == b["training"]["history"]
    assert a["training"]["history"] != plain["training"]["history"]  # the texts did change


def test_corpus_balance_weighs_every_corpus_and_label_alike(tmp_path: Path) -> None:
    from model.train import _group_weights

    exs = [Example(str(i), lab, "train", src, None, "x")
           for i, (src, lab) in enumerate([("sms", "spam")] * 1 + [("sms", "ham")] * 3
                                           + [("sa/spam-1", "spam")] * 4 + [("sa/ham", "ham")] * 2)]
    y = [1 if ex.label == "spam" else 0 for ex in exs]
    w = _group_weights(exs, y)
    totals = {}
    for ex, weight in zip(exs, w.tolist(), strict=True):
        key = (ex.source.split("/")[0], ex.label)
        totals[key] = totals.get(key, 0.0) + weight
    assert len(totals) == 4
    assert all(t == pytest.approx(len(exs) / 4) for t in totals.values())
    # By source: "sa/spam-1" and "sa/ham" are groups of their own, as are the two sms labels.
    w = _group_weights(exs + [Example("x", "ham", "train", "sa/hard", None, "x")], y + [0],
                       by="source")
    assert w[-1] == pytest.approx(11 / 5)  # one hard ham weighs as much as both "sa/ham" ones
    assert w[8] == pytest.approx(11 / 10) and w[0] == pytest.approx(11 / 5)
    data = _write_data(tmp_path / "topics.jsonl")
    balanced = train(_options(data, tmp_path / "a", epochs=1, balance="corpus"))
    assert balanced["training"]["options"]["balance"] == "corpus"
    by_source = train(_options(data, tmp_path / "s", epochs=1, balance="source"))
    assert by_source["training"]["options"]["balance"] == "source"
    with pytest.raises(ValueError, match="balance must be one of"):
        train(_options(data, tmp_path / "b", epochs=1, balance="sources"))
    from model import cli
    from model.train import BALANCES

    assert cli._BALANCES == BALANCES  # the CLI's choices, kept torch-free


def test_binary_model_gets_threshold_and_eval_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(3)
    spam = "free prize win cash call claim now urgent".split()
    ham = "meeting lunch report tomorrow notes project review team".split()
    rows = []
    for i in range(60):
        label = "spam" if i % 3 == 0 else "ham"
        words = spam if label == "spam" else ham
        split = ["train", "train", "train", "val", "test"][i % 5]
        text = " ".join(rng.choice(words) for _ in range(6))
        rows.append({"id": str(i), "label": label, "split": split, "text": text, "source": "t/x"})
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    meta = train(_options(data, tmp_path / "art"))
    assert meta["positive_label"] == "spam" and 0 < meta["threshold"] <= 1
    assert meta["metrics"]["val"]["roc_auc"] == 1.0
    # One threshold per kind of text; no email in this data, so email keeps the shared one.
    assert set(meta["thresholds"]) == {"email", "text"}
    assert meta["thresholds"]["email"] == meta["threshold"]
    from model.thresholds import main as thresholds_main

    assert thresholds_main(["--model", str(tmp_path / "art"), "--data", str(data)]) == 0
    capsys.readouterr()

    code = cli_main(["eval", "--model", str(tmp_path / "art"), "--data", str(data), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "n", "ham_loss", "spam_miss"):
        assert key in result
        assert key in result["by_source"]["t"]
    assert result["n"] == 12 and result["f1"] == 1.0
    for figures in (result, result["by_source"]["t"]):
        low, high = figures["f1_ci95"]
        assert low <= figures["f1"] <= high
        assert figures["ham_loss_ci95"][0] <= figures["ham_loss"] <= figures["ham_loss_ci95"][1]
        assert 0 < figures["spam_miss_ci95"][1] < 1  # no miss in 4 spams is not a rate of 0
    code = cli_main(["eval", "--model", str(tmp_path / "art"), "--data", str(data), "--json",
                     "--positive-label", "ham"])
    assert code == 0
    as_ham = json.loads(capsys.readouterr().out)  # cuts reported on p(ham), where they apply
    assert as_ham["threshold"] == pytest.approx(1 - meta["threshold"])
    assert as_ham["thresholds"]["text"] == pytest.approx(1 - meta["thresholds"]["text"])
    assert (as_ham["tp"], as_ham["fp"]) == (result["tn"], result["fn"])
    code = cli_main(["eval", "--model", str(tmp_path / "art"), "--data", str(data), "--json",
                     "--quantize", "int8"])
    assert code == 0
    int8 = json.loads(capsys.readouterr().out)
    assert int8["n"] == 12 and int8["roc_auc"] == pytest.approx(result["roc_auc"], abs=0.05)

    if importlib.util.find_spec("matplotlib") is not None:
        report = tmp_path / "report"
        args = ["eval", "--model", str(tmp_path / "art"), "--data", str(data), "--report"]
        assert cli_main([*args, str(report)]) == 0
        capsys.readouterr()
        for name in ("report.md", "confusion.png", "roc.png", "pr.png", "scores.png"):
            assert (report / name).stat().st_size > 0
        assert "calibration.png" in (report / "report.md").read_text()

    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "free cash prize"}\n{"id": "b", "text": "lunch meeting"}\n')
    assert cli_main(["predict", "--model", str(tmp_path / "art"), str(src)]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(o["id"], o["label"]) for o in out] == [("a", "spam"), ("b", "ham")]
    assert set(out[0]["scores"]) == {"ham", "spam"}


def test_predict_reads_mbox_and_plain_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write_data(tmp_path / "topics.jsonl")
    train(_options(data, tmp_path / "art", epochs=1))
    box = tmp_path / "box"
    box.write_bytes(
        b"From a@b Mon Jan  1 00:00:00 2024\nSubject: one\n\ngoal\n"
        b"From a@b Mon Jan  1 00:00:00 2024\nSubject: two\n\noven\n"
    )
    assert cli_main(["predict", "--model", str(tmp_path / "art"), str(box)]) == 0
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == ["box:0", "box:1"]
    text = tmp_path / "lines.txt"
    text.write_text("goal team\n\npython cache\n")
    assert cli_main(["predict", "--model", str(tmp_path / "art"), str(text)]) == 0
    ids = [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()]
    assert ids == ["lines.txt:1", "lines.txt:3"]


def test_predict_splits_an_mbox_on_stdin(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # An mbox writer quotes a body line "From ..." as ">From ...".
    box = (b"From a@b Mon Jan  1 00:00:00 2024\nSubject: one\n\n>From now on, lunch at noon\n\n"
           b"From c@d Mon Jan  1 00:00:01 2024\nSubject: two\n\nWIN CASH NOW\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(box)))
    assert cli_main(["predict"]) == 0  # the bundled model; before, the mbox was one message
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == [
        "stdin:0", "stdin:1"]
    one = b"From a@b Mon Jan  1 00:00:00 2024\nSubject: one\n\nFrom now on, lunch at noon\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(one)))
    assert cli_main(["predict"]) == 0  # one mail with a separator line stays one mail
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == ["stdin"]


def test_weighted_loss_matches_the_formulas_written_out() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.5]])
    target = torch.tensor([0, 1, 1])
    w = torch.tensor([0.5, 2.0, 2.0])
    p = logits.softmax(-1)
    p_t = p[torch.arange(3), target]
    ce = -p_t.log()
    # Plain: the weighted mean nn.CrossEntropyLoss computes with class weights (0.5, 2.0).
    plain = torch.nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0]))(logits, target)
    assert torch.allclose(weighted_loss(logits, target, w), plain)
    assert torch.allclose(weighted_loss(logits, target, w), (w * ce).sum() / w.sum())
    focal = (w * (1 - p_t) ** 2 * ce).sum() / w.sum()
    assert torch.allclose(weighted_loss(logits, target, w, focal_gamma=2), focal)
    # Smoothing 0.1 over two labels: the target gets 0.95, the other label 0.05.
    p_other = p[torch.arange(3), 1 - target]
    smooth = (w * -(0.95 * p_t.log() + 0.05 * p_other.log())).sum() / w.sum()
    assert torch.allclose(weighted_loss(logits, target, w, label_smoothing=0.1), smooth)
    both = (w * (1 - p_t) ** 2 * -(0.95 * p_t.log() + 0.05 * p_other.log())).sum() / w.sum()
    assert torch.allclose(weighted_loss(logits, target, w, 0.1, 2), both)


def test_loss_shapes_are_recorded_change_training_and_refuse_bad_values(
        tmp_path: Path) -> None:
    data = _write_data(tmp_path / "topics.jsonl")
    plain = train(_options(data, tmp_path / "plain", epochs=1))
    focal = train(_options(data, tmp_path / "focal", epochs=1, focal_gamma=2.0))
    smooth = train(_options(data, tmp_path / "smooth", epochs=1, label_smoothing=0.1))
    losses = [run["training"]["history"][0]["train_loss"] for run in (plain, focal, smooth)]
    assert len(set(losses)) == 3
    assert focal["training"]["options"]["focal_gamma"] == 2.0
    assert smooth["training"]["options"]["label_smoothing"] == 0.1
    for bad in ({"focal_gamma": -1.0}, {"label_smoothing": 1.0}, {"focal_gamma": math.nan}):
        with pytest.raises(ValueError, match="label_smoothing must be within"):
            train(_options(data, tmp_path / "bad", epochs=1, **bad))


def test_token_dropout_is_seeded_recorded_and_changes_training(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "topics.jsonl")
    a = train(_options(data, tmp_path / "a", epochs=2, token_dropout=0.3))
    b = train(_options(data, tmp_path / "b", epochs=2, token_dropout=0.3))
    plain = train(_options(data, tmp_path / "plain", epochs=2))
    assert a["training"]["history"] == b["training"]["history"]
    first_loss = [run["training"]["history"][0]["train_loss"] for run in (a, plain)]
    assert first_loss[0] != first_loss[1]
    assert a["training"]["options"]["token_dropout"] == 0.3


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing.jsonl")
    assert cli_main(["train", "--data", missing, "--out", str(tmp_path / "o")]) == 2
    assert cli_main(["eval", "--model", "bundled", "--data", missing]) == 2
    assert cli_main(["eval", "--model", str(tmp_path / "nomodel"), "--data", missing]) == 2
    assert cli_main(["predict", "--model", "bundled", missing]) == 2
    assert "not found" in capsys.readouterr().err
    data = str(_write_data(tmp_path / "topics.jsonl"))
    for bad in (["--bag-bigrams", "-1"], ["--bag-dropout", "1"], ["--redress", "1.5"],
                ["--token-dropout", "1"], ["--weight-decay", "-0.1"], ["--weight-decay", "nan"],
                ["--label-smoothing", "1"], ["--focal-gamma", "-1"], ["--focal-gamma", "nan"]):
        assert cli_main(["train", "--data", data, "--out", str(tmp_path / "o"), *bad]) == 2
    err = capsys.readouterr().err
    assert "--bag-dropout must be within" in err and "--redress must be within" in err
    assert "--token-dropout must be within" in err and "--weight-decay must be 0 or more" in err
    assert "--label-smoothing must be within" in err and "--focal-gamma must be 0 or more" in err
    with pytest.raises(SystemExit) as exc:
        cli_main(["train", "--out", "x"])  # --data is required
    assert exc.value.code == 2
    for bad in (["--embed-dim", "-1"], ["--hidden-dim", "0"], ["--dropout", "1"], ["--lr", "0"],
                ["--lr", "nan"], ["--max-minutes", "nan"]):
        assert cli_main(["train", "--data", data, "--out", str(tmp_path / "o"), *bad]) == 2
    assert "--embed-dim must be at least 1" in capsys.readouterr().err


def test_cli_bad_data_exits_2_without_a_traceback(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"id": "1", "label": "ham", "text": "hi"}\n' * 50)[:40])
    assert cli_main(["eval", "--model", "bundled", "--data", str(truncated)]) == 2
    assert "cut.jsonl.gz: cannot read it" in capsys.readouterr().err
    report = tmp_path / "report.md"
    report.write_text("x")
    data = str(_write_data(tmp_path / "topics.jsonl"))
    assert cli_main(["eval", "--model", "bundled", "--data", data, "--report", str(report)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "a", "text": "see you at noon"}\n[1]\n')
    assert cli_main(["predict", "--model", "bundled", str(rows)]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["id"] == "a"  # the line before the bad one is still predicted
    assert "rows.jsonl:2: expected a JSON object" in err


def test_training_needs_two_labels(tmp_path: Path) -> None:
    data = tmp_path / "one.jsonl"
    data.write_text('{"id": "1", "label": "ham", "split": "train", "text": "a"}\n')
    with pytest.raises(ValueError, match="at least 2 labels"):
        train(_options(data, tmp_path / "o"))
    assert cli_main(["train", "--data", str(data), "--out", str(tmp_path / "o")]) == 2


def test_choose_thresholds_per_kind_and_binary_metrics_cuts() -> None:
    from model.metrics import binary_metrics, choose_thresholds

    y = [True, False, True, False]
    p = [0.9, 0.8, 0.3, 0.1]
    kinds = ["email", "email", "text", "text"]
    t = choose_thresholds(y, p, kinds, max_ham_loss=0.0)
    assert t["email"] > 0.8 and 0.1 < t["text"] <= 0.3
    m = binary_metrics(y, p, 0.5, [t[k] for k in kinds])
    assert (m["tp"], m["fp"], m["fn"]) == (2, 0, 0)
    assert binary_metrics(y, p, 0.5)["tp"] == 1  # one shared cut misses the text spam
    # The threshold reported is the cut the examples were judged at, when they share one.
    assert m["threshold"] == 0.5
    texts = binary_metrics(y[2:], p[2:], 0.5, [t["text"]] * 2)
    assert texts["threshold"] == t["text"] and texts["tp"] == 1


def test_intervals_of_f1_and_of_the_error_rates() -> None:
    from model.metrics import f1_interval, wilson_interval

    # Textbook Wilson intervals; at 0 errors the upper end stays above 0.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # The bundled model's SMS test counts: F1 0.943.
    low, high = f1_interval(tp=75, fp=2, tn=464, fn=7)
    assert 0.88 < low < 0.943 < high < 0.99
    assert f1_interval(75, 2, 464, 7) == (low, high)  # seeded: the same counts, the same interval
    assert f1_interval(75, 2, 464, 7, seed=1) != (low, high)
    low10, high10 = f1_interval(750, 20, 4640, 70)  # ten times the messages: narrower
    assert high10 - low10 < (high - low) / 2
    assert f1_interval(30, 0, 50, 0) == (1.0, 1.0)
    assert f1_interval(0, 0, 0, 0) == (0.0, 0.0)


def test_a_paired_interval_of_an_f1_difference() -> None:
    from model.metrics import f1_difference_interval

    rng = random.Random(3)
    y = [rng.random() < 0.3 for _ in range(600)]
    better = [t if rng.random() < 0.99 else not t for t in y]
    worse = [t if rng.random() < 0.80 else not t for t in y]
    diff, low, high = f1_difference_interval(y, better, worse)
    assert 0 < low < diff < high  # far apart: the interval lies above 0
    diff, low, high = f1_difference_interval(y, worse, better)
    assert low < diff < high < 0
    assert f1_difference_interval(y, better, better) == (0.0, 0.0, 0.0)
    # One message apart in 600: the difference is real on this sample but not beyond chance.
    nearly = list(better)
    nearly[y.index(True)] = False
    diff, low, high = f1_difference_interval(y, better, nearly)
    assert diff > 0 and low <= 0 < high


def test_logit_inverts_the_sigmoid_and_stays_finite_at_0_and_1() -> None:
    from model.metrics import logit

    assert logit(0.5) == 0.0
    assert logit(1 / (1 + math.exp(-2.5))) == pytest.approx(2.5)
    assert logit(0.2) == pytest.approx(-logit(0.8))
    # 0 and 1 are clamped to eps, so an ensemble of log-odds never sums an infinity.
    assert logit(1.0, 1e-7) == pytest.approx(math.log((1 - 1e-7) / 1e-7))
    assert logit(0.0) == pytest.approx(-logit(1.0)) and math.isfinite(logit(0.0))


def _spam_ham_promo(path: Path, per_label: int = 30, seed: int = 5) -> Path:
    rng = random.Random(seed)
    words = {"spam": "free prize win cash call claim now urgent".split(),
             "ham": "meeting lunch report tomorrow notes project review team".split(),
             "promo": "sale discount offer shop store coupon deal week".split()}
    rows = []
    for label, pool in words.items():
        for i in range(per_label):
            # Some words of another label, so the model makes mistakes to count.
            other = words[rng.choice([k for k in words if k != label])]
            text = " ".join(rng.choice(pool if rng.random() < 0.6 else other) for _ in range(5))
            split = ["train", "train", "train", "val", "test"][i % 5]
            rows.append({"id": f"{label}-{i}", "label": label, "split": split, "text": text})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_eval_of_three_labels_with_spam_among_them_scores_the_models_decisions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before, a spam label among three was scored at a fixed 0.5 cut on p(spam), which
    disagreed with the labels the model gives (the most probable one)."""
    data = _spam_ham_promo(tmp_path / "three.jsonl")
    train(_options(data, tmp_path / "art", epochs=3))
    assert cli_main(["eval", "--model", str(tmp_path / "art"), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    test_rows = [json.loads(line) for line in data.read_text().splitlines()]
    test_rows = [r for r in test_rows if r["split"] == "test"]
    predictor = Predictor.load(tmp_path / "art", device="cpu")
    predicted = [p.label for p in predictor.predict([r["text"] for r in test_rows])]
    truth = [r["label"] for r in test_rows]
    assert result["positive_label"] == "spam" and result["threshold"] is None
    assert result["tp"] + result["fp"] == predicted.count("spam")
    assert result["tp"] == sum(1 for t, p in zip(truth, predicted, strict=True)
                               if t == p == "spam")
    assert result["accuracy"] == pytest.approx(
        sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth))
    assert set(result["per_label"]) == {"ham", "promo", "spam"} and "macro_f1" in result
    assert cli_main(["eval", "--model", str(tmp_path / "art"), "--data", str(data),
                     "--threshold", "0.3"]) == 2  # three labels: no cut to move
    assert "--threshold needs a two-label model" in capsys.readouterr().err


def test_unsplit_mail_is_split_alike_in_train_and_eval(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before, eval kept data without a split for every --split: it scored training mail."""
    from model.data import assigned_split, iter_examples

    rng = random.Random(2)
    words = {"spam": "free prize win cash call claim now urgent".split(),
             "ham": "meeting lunch report tomorrow notes project review team".split()}
    for label, pool in words.items():
        (tmp_path / "mail" / label).mkdir(parents=True)
        for i in range(60):
            body = " ".join(rng.choice(pool) for _ in range(8))
            (tmp_path / "mail" / label / f"{i}.eml").write_text(
                f"From: a@example.org\nSubject: note {i}\n\n{body}\n")
    mail = tmp_path / "mail"
    shares = [assigned_split(ex) for ex in iter_examples(mail)]
    meta = train(_options(mail, tmp_path / "art", epochs=2))
    assert sum(meta["training"]["counts"]["train"].values()) == shares.count("train")
    assert cli_main(["eval", "--model", str(tmp_path / "art"), "--data", str(mail),
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == shares.count("test") < len(shares) // 5


def test_train_refuses_what_cannot_give_a_model_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write_data(tmp_path / "topics.jsonl")
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert cli_main(["train", "--data", str(data), "--out", str(afile)]) == 2
    assert "--out" in capsys.readouterr().err
    # An explicit positive label the data does not have.
    binary = tmp_path / "bin.jsonl"
    rows = [{"id": str(i), "label": "junk" if i % 2 else "ham", "split": "val" if i % 4 < 2
             else "train", "text": "cash" if i % 2 else "lunch"} for i in range(16)]
    binary.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code = cli_main(["train", "--data", str(binary), "--out", str(tmp_path / "o"), "--epochs", "1",
                     "--positive-label", "Spam", "--quiet"])
    assert code == 2 and "'Spam' is not one of the labels" in capsys.readouterr().err
    # No validation spam: no threshold can be chosen (before: a TypeError after training).
    rows = [{"id": str(i), "label": "spam" if i % 2 else "ham",
             "split": "val" if i % 2 == 0 and i % 4 == 0 else "train",
             "text": "cash" if i % 2 else "lunch"} for i in range(16)]
    binary.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code = cli_main(["train", "--data", str(binary), "--out", str(tmp_path / "o"), "--epochs", "1",
                     "--quiet"])
    assert code == 2 and "validation split has no 'spam' examples" in capsys.readouterr().err


def test_train_does_not_replace_a_model_without_force(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write_data(tmp_path / "topics.jsonl", per_label=5)
    out = tmp_path / "model"
    train(_options(data, out, epochs=1))
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    tiny = ["--epochs", "1", "--embed-dim", "8", "--hidden-dim", "4", "--max-tokens", "16",
            "--bag-bigrams", "0", "--quiet"]
    assert cli_main(["train", "--data", str(data), "--out", str(out), *tiny]) == 2
    err = capsys.readouterr().err
    assert "already holds a model artifact (streamclf-spam@1)" in err and "--force" in err
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before  # untouched
    assert cli_main(["train", "--data", str(data), "--out", str(out), *tiny, "--force",
                     "--weight-decay", "0.02"]) == 0
    assert {f.name: f.read_bytes() for f in out.iterdir()} != before
    recorded = json.loads((out / "config.json").read_text())["training"]["options"]
    assert recorded["weight_decay"] == 0.02  # the option reaches the training options
    assert cli_main(["eval", "--model", str(out), "--data", str(data), "--split", "val",
                     "--json"]) == 0


def test_ctrl_c_during_training_keeps_the_best_finished_epoch(tmp_path: Path) -> None:
    """Before, Ctrl-C in the middle of a long training threw away every finished epoch."""
    data = _write_data(tmp_path / "topics.jsonl")
    out = tmp_path / "model"
    lines: list[str] = []

    def press_ctrl_c_in_epoch_3(line: str) -> None:
        lines.append(line)
        if line.startswith("epoch 3/"):
            raise KeyboardInterrupt

    train(_options(data, out, epochs=12), log=press_ctrl_c_in_epoch_3)
    config = load_artifact(out).config
    assert config["training"]["interrupted"] is True
    assert config["training"]["best_epoch"] in (1, 2)
    assert [h["epoch"] for h in config["training"]["history"]] == [1, 2, 3]
    assert any(line.startswith("interrupted: keeping the best finished epoch") for line in lines)

    def press_ctrl_c_in_epoch_1(line: str) -> None:
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # nothing finished to keep
        train(_options(data, tmp_path / "none", epochs=12), log=press_ctrl_c_in_epoch_1)
    assert not (tmp_path / "none" / "config.json").exists()


def test_train_refuses_an_out_named_like_the_shipped_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, --out bundled wrote ./bundled, and eval --model bundled then judged the shipped
    spam model instead of the new one."""
    data = _write_data(tmp_path / "topics.jsonl", per_label=5)
    monkeypatch.chdir(tmp_path)
    for out in ("bundled", "./bundled", "bundled/"):
        assert cli_main(["train", "--data", str(data), "--out", out, "--epochs", "1",
                         "--quiet"]) == 2
        assert "'bundled' names the shipped model" in capsys.readouterr().err
    assert not (tmp_path / "bundled").exists()


def test_predict_reads_a_bom_gzip_and_subject_body_rows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": "a", "text": "free cash prize"}, {"id": "b", "subject": "Lunch", "body": "noon"}]
    plain = b"\xef\xbb\xbf" + b"\n".join(json.dumps(r).encode() for r in rows) + b"\n"
    for name, content in (("bom.jsonl", plain), ("rows.jsonl.gz", gzip.compress(plain)),
                          ("rows.bin", gzip.compress(plain))):
        (tmp_path / name).write_bytes(content)
        assert cli_main(["predict", str(tmp_path / name)]) == 0, name
        out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [o["id"] for o in out] == ["a", "b"], name
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"id": "c"}\n')
    assert cli_main(["predict", str(empty)]) == 2
    assert "no message" in capsys.readouterr().err


def _write_labelled_mail(mail: Path, per_label: int, seed: int) -> Path:
    """A mail folder with spam/ and ham/ subfolders of short .eml files told apart by words."""
    rng = random.Random(seed)
    words = {"spam": "free prize win cash call claim now urgent".split(),
             "ham": "meeting lunch report tomorrow notes project review team".split()}
    for label, pool in words.items():
        (mail / label).mkdir(parents=True)
        for i in range(per_label):
            body = " ".join(rng.choice(pool) for _ in range(8))
            (mail / label / f"{label}{i}.eml").write_text(
                f"From: a@example.org\nSubject: note {i}\n\n{body}\n")
    return mail


def test_blank_and_unlabelled_mail_is_left_out_and_said(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty .eml (the worker dead-letters such a value as `empty`) was trained and scored
    as a message, and mail without a label folder was dropped without a word."""
    mail = _write_labelled_mail(tmp_path / "mail", per_label=40, seed=3)
    for label in ("spam", "ham"):
        for i in range(12):  # enough that some fall in every split
            (mail / label / f"empty{i}.eml").write_bytes(b"" if i % 2 else b" \n")
    (mail / "inbox").mkdir()
    (mail / "inbox" / "0.eml").write_text("From: a@example.org\nSubject: hi\n\nlunch\n")
    from model.data import assigned_split, iter_examples

    kept = [assigned_split(ex) for ex in iter_examples(mail)
            if ex.label and ex.raw and ex.raw.strip()]
    lines: list[str] = []
    meta = train(_options(mail, tmp_path / "art", epochs=1), log=lines.append)
    counts = meta["training"]["counts"]
    assert sum(sum(c.values()) for c in counts.values()) == len(kept) - kept.count("test")
    assert "left out: 24 blank messages, 1 without a label" in lines
    assert cli_main(["eval", "--model", str(tmp_path / "art"), "--data", str(mail),
                     "--split", "all", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["n"] == 80
    assert "left out: 24 blank messages, 1 without a label" in out.err


def test_eval_summary_of_a_many_label_model_shows_each_label() -> None:
    """The README promises per-label figures for a model with more than two labels; the text
    summary showed only accuracy and macro F1, so a weak label went unseen without --json."""
    from model.cli import _summary

    per_label = {"english": {"precision": 0.7857, "recall": 1.0, "f1": 0.88, "support": 11},
                 "not spam": {"precision": 1.0, "recall": 0.75, "f1": 0.8571, "support": 12}}
    result = {"model": "langid@3", "split": "test", "n": 23, "positive_label": None,
              "accuracy": 0.87, "macro_f1": 0.8686, "per_label": per_label, "by_source": {}}
    lines = _summary(result).splitlines()
    assert "accuracy 0.8700  macro F1 0.8686" in lines
    assert "label                  n      prec    recall        f1" in lines
    assert "english               11    0.7857    1.0000    0.8800" in lines
    assert "not spam              12    1.0000    0.7500    0.8571" in lines


def test_a_trained_model_is_named_after_its_directory_by_default(tmp_path: Path) -> None:
    """Before, every model trained without --name was `streamclf-spam`: a language model served
    by the worker published results (and streamclf_model_info) as `streamclf-spam@1`."""
    data = _write_data(tmp_path / "topics.jsonl", per_label=5)
    tiny = ["--epochs", "1", "--embed-dim", "8", "--hidden-dim", "4", "--max-tokens", "16",
            "--quiet"]
    assert cli_main(["train", "--data", str(data), "--out", str(tmp_path / "topics"),
                     *tiny]) == 0
    assert json.loads((tmp_path / "topics" / "config.json").read_text())["name"] == "topics"
    assert cli_main(["train", "--data", str(data), "--out", str(tmp_path / "b"), *tiny,
                     "--name", "mine"]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["name"] == "mine"


def test_train_stopped_early_leaves_no_empty_out_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--out is created before training (to fail fast); a data error or Ctrl-C then left an
    empty directory behind, and Ctrl-C said nothing at all."""
    import model.train

    one_label = tmp_path / "one.jsonl"
    one_label.write_text("".join(json.dumps({"id": str(i), "label": "ham", "text": "a"}) + "\n"
                                 for i in range(20)))
    assert cli_main(["train", "--data", str(one_label), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(model.train, "train", interrupted)
    data = _write_data(tmp_path / "topics.jsonl", per_label=5)
    with pytest.raises(KeyboardInterrupt):
        cli_main(["train", "--data", str(data), "--out", str(tmp_path / "new" / "o")])
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "new" / "o").exists()


def test_report_of_a_many_label_model_has_a_per_label_table(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """report.md of a three-label model held accuracy, macro F1 and the confusion matrix only."""
    pytest.importorskip("matplotlib")
    data = _write_data(tmp_path / "topics.jsonl", per_label=5)
    train(_options(data, tmp_path / "art", epochs=1))
    report = tmp_path / "report"
    assert cli_main(["eval", "--model", str(tmp_path / "art"), "--data", str(data), "--split",
                     "all", "--report", str(report), "--json"]) == 0
    per_label = json.loads(capsys.readouterr().out)["per_label"]
    text = (report / "report.md").read_text()
    assert "| label | n | precision | recall | F1 |" in text
    for name, m in per_label.items():
        assert (f"| {name} | {m['support']} | {m['precision']:.4f} | {m['recall']:.4f} | "
                f"{m['f1']:.4f} |") in text


def test_macro_figures_leave_out_labels_neither_in_the_data_nor_predicted() -> None:
    """Eval of a three-label model on data holding one label, all right: macro F1 was 0.3333
    (the absent labels counted as F1 0), and so was every per-source figure of a source
    without some label."""
    from types import SimpleNamespace

    from model.evaluate import Scored, evaluate

    labels = ("english", "french", "german")
    predictor = SimpleNamespace(labels=labels, positive_label=None, thresholds=None,
                                threshold=None, name="langid", version="1")
    rows = [Scored(str(i), "s", "english", (0.8, 0.1, 0.1), "english", "t") for i in range(3)]
    rows.append(Scored("x", "t", "french", (0.1, 0.8, 0.1), "french", "t"))
    rows.append(Scored("y", "t", "french", (0.8, 0.1, 0.1), "english", "t"))
    result = evaluate(predictor, rows)  # type: ignore[arg-type]
    assert result["by_source"]["s"]["macro_f1"] == 1.0
    assert result["by_source"]["s"]["precision"] == result["by_source"]["s"]["recall"] == 1.0
    # german, neither true nor predicted anywhere, is left out; french is scored.
    assert result["macro_f1"] == pytest.approx((2 * 0.75 * 1 / 1.75 + 2 / 3) / 2)
    assert result["precision"] == pytest.approx((0.75 + 1) / 2)
    assert result["per_label"]["german"]["support"] == 0  # still listed


def test_an_explicit_positive_label_on_many_label_data_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--positive-label tech on three-label data trained a model without one, silently: no
    threshold, no positive label in the artifact."""
    data = _write_data(tmp_path / "topics.jsonl", per_label=5)
    code = cli_main(["train", "--data", str(data), "--out", str(tmp_path / "o"), "--epochs", "1",
                     "--positive-label", "tech", "--quiet"])
    assert code == 2
    assert "--positive-label needs two-label data" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_mail_given_below_its_label_folder_is_said_to_have_no_label(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--data mail/spam/cur mail/ham/cur` finds no label (folders above the one given do not
    count): the error said only "found []"."""
    for label in ("spam", "ham"):
        (tmp_path / label / "cur").mkdir(parents=True)
        for i in range(5):
            (tmp_path / label / "cur" / f"{i}.eml").write_text(f"Subject: {i}\n\nhi {label}\n")
    code = cli_main(["train", "--data", str(tmp_path / "spam" / "cur"),
                     str(tmp_path / "ham" / "cur"), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "left out: 10 without a label" in err
    assert "up to the one given" in err


def test_predict_does_not_classify_a_blank_message(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty .eml, or a JSON row with a blank text, got a label and a score from predict
    (an empty .eml read as the text "Subject:"), while the worker dead-letters it as `empty`."""
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "a", "text": "lunch tomorrow?"}\n{"id": "b", "text": "  "}\n')
    assert cli_main(["predict", "--model", "bundled", str(empty)]) == 0
    out = capsys.readouterr()
    assert out.out == "" and "empty.eml: blank, not classified" in out.err
    assert cli_main(["predict", "--model", "bundled", str(rows)]) == 0
    out = capsys.readouterr()
    assert [json.loads(line)["id"] for line in out.out.splitlines()] == ["a"]
    assert "b: blank, not classified" in out.err


def test_predict_names_the_files_of_a_folder_it_cannot_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A dangling link in a folder given to predict was skipped without a word."""
    mail = tmp_path / "mail"
    mail.mkdir()
    (mail / "1.eml").write_bytes(b"Subject: lunch\r\n\r\nlunch tomorrow?\r\n")
    (mail / "2.eml").symlink_to(tmp_path / "moved.eml")
    assert cli_main(["predict", "--model", "bundled", str(mail)]) == 0
    out = capsys.readouterr()
    assert [json.loads(line)["id"] for line in out.out.splitlines()] == ["1.eml"]
    assert f"left out: 1 unreadable file ({mail / '2.eml'}: a dangling link)" in out.err


def test_labels_that_differ_only_in_case_are_refused_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`Spam` beside `spam` trained a model with both as separate labels, without a word."""
    rows = [{"id": str(i), "label": ["spam", "ham", "Spam"][i % 3], "text": f"word{i % 3}"}
            for i in range(30)]
    rows += [{"id": "x", "label": "HAM", "text": "word1"}]
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o"
    code = cli_main(["train", "--data", str(data), "--out", str(out), "--epochs", "1",
                     "--embed-dim", "8", "--hidden-dim", "4", "--max-tokens", "16", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
    assert ("labels differ only in letter case: 'HAM' (1 example), 'ham' (10 examples); "
            "'Spam' (10 examples), 'spam' (10 examples)") in err
    assert "make them consistent" in err
    assert not out.exists()


def test_train_refuses_an_out_folder_holding_other_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--out ~/Documents` was accepted: the model's files were written among the user's."""
    data = _write_data(tmp_path / "topics.jsonl", per_label=5)
    tiny = ["--epochs", "1", "--embed-dim", "8", "--hidden-dim", "4", "--max-tokens", "16",
            "--quiet"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for force in ([], ["--force"]):  # --force replaces a model, nothing else
        assert cli_main(["train", "--data", str(data), "--out", str(mine), *tiny, *force]) == 2
        err = capsys.readouterr().err
        assert f"--out {mine} holds other files and no model artifact" in err
        assert err.count("\n") == 1
        assert [f.name for f in mine.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_text("hidden files do not count")
    assert cli_main(["train", "--data", str(data), "--out", str(empty), *tiny]) == 0
    assert (empty / "manifest.json").exists()


def test_eval_names_the_error_rates_in_spam_words_only_for_a_spam_model(
        tmp_path: Path) -> None:
    """A sentiment model's eval table and report.md called its false-positive rate `ham_loss`
    and its miss rate `spam_miss`. The JSON keys stay as they are."""
    from types import SimpleNamespace

    from model.cli import _summary
    from model.evaluate import Scored, evaluate

    for labels, columns, fp_words, miss_words in (
            (("negative", "positive"), "  fp_rate miss_rate", "false-positive rate", "miss rate"),
            (("ham", "spam"), " ham_loss spam_miss", "ham loss", "spam miss")):
        negative, positive = labels
        predictor = SimpleNamespace(labels=labels, positive_label=positive, thresholds=None,
                                    threshold=0.5, name="m", version="1")
        rows = [Scored("a", "s", positive, (0.2, 0.8), positive, "t"),
                Scored("b", "s", positive, (0.7, 0.3), negative, "t"),
                Scored("c", "s", negative, (0.9, 0.1), negative, "t"),
                Scored("d", "s", negative, (0.4, 0.6), positive, "t")]
        result = evaluate(predictor, rows)  # type: ignore[arg-type]
        assert result["ham_loss"] == result["spam_miss"] == 0.5  # JSON keys unchanged
        result["split"] = "test"
        head, row = _summary(result).splitlines()[1:3]
        assert head.endswith(f"      auc {columns}       f1_ci95")  # 95 % interval of F1
        # Right-aligned: every value ends where its heading ends (the n/a AUC too).
        assert [m.end() for m in re.finditer(r"\S+", head)][1:] == [
            m.end() for m in re.finditer(r"\S+", row)][1:]
        if importlib.util.find_spec("matplotlib") is None:
            continue
        from model.report import write_report

        write_report(tmp_path / positive, result, rows, predictor)
        text = (tmp_path / positive / "report.md").read_text()
        assert f"| ROC-AUC | {fp_words} | {miss_words} |" in text
        assert ("ham loss" in text) == (positive == "spam")
        assert ("share of `positive` messages" in text) == (positive == "positive")


def test_unreadable_files_in_a_data_folder_are_left_out_and_said(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A dangling link in a mail folder was skipped without a word by train and eval."""
    mail = _write_labelled_mail(tmp_path / "mail", per_label=20, seed=4)
    (mail / "spam" / "moved.eml").symlink_to(tmp_path / "elsewhere.eml")
    note = f"left out: 1 unreadable file ({mail}/spam/moved.eml: a dangling link)"
    lines: list[str] = []
    meta = train(_options(mail, tmp_path / "art", epochs=1), log=lines.append)
    assert note in lines
    assert meta["training"]["data"][0]["left_out"] == {"unreadable": 1}
    assert cli_main(["eval", "--model", str(tmp_path / "art"), "--data", str(mail),
                     "--split", "all", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["n"] == 40 and f"streamclf: {note}\n" in out.err


def test_eval_against_another_model_gives_the_paired_f1_difference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user who retrains asks whether the new model beats the old one on the same mail."""
    rng = random.Random(11)
    words = {"spam": "free prize win cash call claim now urgent".split(),
             "ham": "meeting lunch report tomorrow notes project review team".split()}
    rows = []
    for i in range(160):
        label = "spam" if i % 3 == 0 else "ham"
        own, other = words[label], words["ham" if label == "spam" else "spam"]
        text = " ".join(rng.choice(own if rng.random() < 0.75 else other) for _ in range(5))
        split = ["train", "train", "train", "val", "test"][i % 5]
        rows.append({"id": str(i), "label": label, "split": split, "text": text,
                     "source": "mail/x" if i % 2 else "sms/y"})
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    train(_options(data, tmp_path / "good"))
    train(_options(data, tmp_path / "weak", epochs=1, seed=2, lr=0.001, name="weak"))

    def run(*extra: str) -> dict:
        assert cli_main(["eval", "--model", str(tmp_path / "good"), "--data", str(data),
                         "--split", "all", "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    alone = run()
    assert "against" not in alone
    assert cli_main(["eval", "--model", str(tmp_path / "weak"), "--data", str(data),
                     "--split", "all", "--json"]) == 0
    weak = json.loads(capsys.readouterr().out)
    versus = run("--against", str(tmp_path / "weak"))["against"]
    assert versus["model"] == "weak@1" and versus["n"] == 160
    assert versus["f1_difference"] == pytest.approx(alone["f1"] - weak["f1"])
    low, high = versus["ci95"]
    assert 0 < low <= versus["f1_difference"] <= high  # one epoch at a low rate: far behind
    for source in ("mail", "sms"):
        assert versus["by_source"][source]["f1_difference"] == pytest.approx(
            alone["by_source"][source]["f1"] - weak["by_source"][source]["f1"])
    same = run("--against", str(tmp_path / "good"))["against"]
    assert (same["f1_difference"], same["ci95"]) == (0.0, [0.0, 0.0])

    args = ["eval", "--model", str(tmp_path / "good"), "--data", str(data), "--split", "all"]
    assert cli_main([*args, "--against", str(tmp_path / "weak")]) == 0
    assert "F1 minus that of weak@1 on the same messages" in capsys.readouterr().out
    assert cli_main([*args, "--against", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert cli_main([*args, "--against", str(tmp_path / "weak"), "--positive-label", "spam"]) == 0
    capsys.readouterr()
    topics = _write_data(tmp_path / "topics.jsonl")  # three labels, none of them spam
    train(_options(topics, tmp_path / "topics"))
    assert cli_main(["eval", "--model", str(tmp_path / "topics"), "--data", str(topics),
                     "--split", "all", "--against", str(tmp_path / "topics")]) == 2
    assert "--against compares the F1 of one label" in capsys.readouterr().err
    assert cli_main([*args, "--against", str(tmp_path / "topics")]) == 2
    assert "not the --against model's" in capsys.readouterr().err
