"""The model shipped in model/bundled/ loads, verifies and separates obvious spam from ham."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.artifact import BUNDLED, load_artifact
from model.email import email_to_text
from model.predictor import Predictor

SPAM_EMAIL = b"""From: "Prize Center" <winner@promo-deals.biz>
To: you@example.com
Subject: CONGRATULATIONS!!! You have WON $1,000,000 - claim now
Content-Type: text/html

<html><body><p>Dear Friend, you have been SELECTED to receive a <b>FREE</b> cash prize of
$1,000,000! Click <a href="http://claim-prize-now.biz/win">here</a> to claim your money now.
This offer expires today. Order now, 100% guaranteed, no risk! To be removed from our mailing
list reply REMOVE.</p></body></html>
"""

HAM_EMAIL = b"""From: Bob <bob@example.org>
To: alice@example.org
Subject: Re: patch for the build script
Content-Type: text/plain

Hi Alice,

I looked at your patch for the build script; the change to the Makefile looks fine, but the
test in tests/run.sh still fails on my machine with python 2.2. Could you check whether the
path to the config file is right? We can talk about it at the meeting tomorrow.

Thanks,
Bob
"""


@pytest.fixture(scope="module")
def bundled() -> Predictor:
    return Predictor.load("bundled", device="cpu")


def test_bundled_artifact_is_complete_and_small() -> None:
    art = load_artifact("bundled")
    assert art.path == BUNDLED
    assert sum(f.stat().st_size for f in Path(BUNDLED).iterdir()) < 20 * 1024 * 1024
    cfg = json.loads((BUNDLED / "config.json").read_text())
    assert cfg["labels"] == ["ham", "spam"] and cfg["positive_label"] == "spam"
    for key in ("threshold", "max_tokens", "code_version", "metrics", "training", "version"):
        assert key in cfg
    assert all(len(d["sha256"]) == 64 for d in cfg["training"]["data"])


def test_bundled_scores_obvious_spam_above_ham(bundled: Predictor) -> None:
    spam, ham = bundled.predict([email_to_text(SPAM_EMAIL), email_to_text(HAM_EMAIL)])
    assert spam.scores["spam"] > ham.scores["spam"]
    assert spam.label == "spam" and ham.label == "ham"
    sms_spam, sms_ham = bundled.predict(
        [
            "URGENT! You have won a 1 week FREE membership in our £100,000 prize jackpot! "
            "Txt CLAIM to 81010 now",
            "ok see you at home later, do you want me to pick up some milk?",
        ]
    )
    assert sms_spam.scores["spam"] > sms_ham.scores["spam"]
    assert sms_ham.label == "ham"


def test_bundled_handles_empty_and_huge_text(bundled: Predictor) -> None:
    empty, huge = bundled.predict(["", "word " * 300_000])
    assert empty.label in bundled.labels and huge.label in bundled.labels
    assert len(bundled.tokenize("word " * 300_000)) == bundled.max_tokens


def test_int8_copy_agrees_with_float32(bundled: Predictor) -> None:
    """The int8 copy (`model.quantize: int8`, and `auto` on a CPU; the worker's default is
    `none`) gives the same labels on the bundled model's kinds of text, probabilities within a
    few hundredths."""
    int8 = Predictor.load("bundled", device="cpu", quantize="int8")
    assert int8.quantized and not bundled.quantized
    assert Predictor.load("bundled", device="cpu", quantize="auto").quantized
    texts = [email_to_text(SPAM_EMAIL), email_to_text(HAM_EMAIL),
             "URGENT! You have won a FREE prize! Txt CLAIM to 81010 now",
             "ok see you at home later", ""]
    for a, b in zip(bundled.predict(texts), int8.predict(texts), strict=True):
        assert a.label == b.label
        assert a.scores == pytest.approx(b.scores, abs=0.05)


def test_quantize_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="quantize must be one of"):
        Predictor.load("bundled", device="cpu", quantize="int4")
    from model import cli
    from model.predictor import QUANTIZE_MODES

    assert set(cli._QUANTIZE) == set(QUANTIZE_MODES)  # the CLI's choices, kept torch-free


def test_concurrent_predictions_equal_serial_ones(bundled: Predictor) -> None:
    """The worker's lanes call predict_ids from several threads at once (model.lanes)."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [email_to_text(HAM_EMAIL), email_to_text(SPAM_EMAIL), "see you at 5",
             "URGENT! claim your prize now"] * 8
    batches = [[bundled.tokenize(t) for t in texts[i : i + 4]] for i in range(0, len(texts), 4)]
    serial = [bundled.probabilities(b) for b in batches]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            together = list(pool.map(bundled.probabilities, batches))
            for a, b in zip(serial, together, strict=True):
                assert torch.equal(a, b)


def test_eval_for_the_other_label_of_a_binary_model_makes_the_same_decisions(
        bundled: Predictor) -> None:
    """`streamclf eval --positive-label ham`: the model's cuts are for p(spam); judged for ham,
    each decision must still be the model's own (the cut used to be applied to p(ham))."""
    from model.data import Example
    from model.evaluate import evaluate, score_examples

    texts = {"spam": ["URGENT! You have won a FREE prize! Txt CLAIM to 81010 now",
                      "Free entry to the party tonight, call now",
                      "Reply YES to receive updates"],
             "ham": ["ok see you at home later", "Sorry, I'll call later in the meeting",
                     "Congrats on the new job! Claim your drink tonight"]}
    examples = [Example(f"{label}{i}", label, "test", "sms", None, text)
                for label, group in texts.items() for i, text in enumerate(group)]
    rows = score_examples(bundled, examples)
    spam = bundled.labels.index("spam")
    # Scores between the cut and 1 - cut are where an unflipped cut decides differently.
    assert any(min(r.threshold, 1 - r.threshold) <= r.probs[spam] < max(r.threshold,
               1 - r.threshold) for r in rows), "no message that tells the two apart"
    as_ham = evaluate(bundled, rows, positive_label="ham")
    assert as_ham["tp"] == sum(r.predicted == "ham" and r.label == "ham" for r in rows)
    assert as_ham["fp"] == sum(r.predicted == "ham" and r.label == "spam" for r in rows)
    assert as_ham["accuracy"] == evaluate(bundled, rows)["accuracy"]
