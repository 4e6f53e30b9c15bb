"""benchmarks/accuracy.py: its mail transforms keep the text the model reads."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from model.email import email_to_text

ROOT = Path(__file__).resolve().parents[2]

RAW = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: Lunch on Friday\r\n"
    b"Received: from mx.example.org\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n\r\nCaf\xc3\xa9 near the office.\r\n"
)


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "accuracy_bench", ROOT / "benchmarks" / "accuracy.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["accuracy_bench"] = module
    spec.loader.exec_module(module)
    return module


def _words(text: str) -> list[str]:
    """The words of the model text outside the "Headers:" line, which a body transform changes
    (its Content-Type and Content-Transfer-Encoding headers)."""
    return [w for line in text.split("\n") if not line.startswith("Headers:")
            for w in line.split()]


@pytest.mark.parametrize(
    "name",
    [
        "HTML only (text/plain → text/html)",
        "bodies base64 (UTF-8)",
        "bodies quoted-printable (UTF-8)",
        "bodies latin-1, quoted-printable",
        "bodies UTF-16, base64",
    ],
)
def test_body_transforms_keep_the_model_text(bench, name: str) -> None:  # type: ignore[no-untyped-def]
    out = bench.EMAIL_VARIANTS[name](RAW, 0)
    assert out != RAW
    assert _words(email_to_text(out)) == _words(email_to_text(RAW))


def test_header_transforms(bench) -> None:  # type: ignore[no-untyped-def]
    stripped = email_to_text(bench.strip_headers(RAW))
    assert stripped.startswith("Subject:\n") and "Alice" not in stripped
    assert "Café near the office." in stripped
    rewritten = email_to_text(bench.rewrite_headers(RAW, 1))
    assert rewritten.startswith("Subject: Lunch on Friday\nFrom: Support Team service.example.com")


def test_sms_as_email_and_section_replacement(bench) -> None:  # type: ignore[no-untyped-def]
    text = email_to_text(bench.sms_as_email("Free entry, txt WIN to 80086", 0))
    assert text.startswith("Subject:\n") and text.rstrip().endswith("Free entry, txt WIN to 80086")
    doc = "# Card\n\n## A\n\nold\n\n## Limits\n\n- x\n"
    once = bench.replace_section(doc, "## Side", "table 1")
    assert once.index("## Side") < once.index("## Limits")
    twice = bench.replace_section(once, "## Side", "table 2")
    assert "table 1" not in twice and twice.count("## Side") == 1 and "old" in twice


def test_the_side_by_side_says_the_paired_difference_when_it_was_measured(bench) -> None:  # type: ignore[no-untyped-def]
    res = {"paired": {"spamassassin": {"versus": bench.PAIRED_BASELINE, "f1_difference": 0.0103,
                                       "ci95": [-0.0025, 0.0249]},
                      "sms": {"versus": bench.PAIRED_BASELINE, "f1_difference": 0.1376,
                              "ci95": [0.0746, 0.2088]}}}
    text = " ".join(bench.paired_text(res).split())
    assert "SpamAssassin +0.010 (-0.003 to +0.025); SMS +0.138 (+0.075 to +0.209)" in text
    assert bench.PAIRED_BASELINE in text
    assert bench.paired_text({}) == ""  # results recorded before it: no line, no error
