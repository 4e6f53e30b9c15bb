"""``streamclf train | predict | eval``: the model's command-line commands.

The worker's CLI owns the top-level parser and calls ``add_commands``. Torch is imported inside
the handlers so that ``streamclf --help`` and the worker's other commands stay fast.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# model.predictor.QUANTIZE_MODES, model.lstm.POOLINGS and model.train.BALANCES, spelled out so
# that building the parser does not import torch (a unit test keeps them equal).
_QUANTIZE = ("none", "int8", "auto")
_POOLINGS = ("max_mean", "last", "attention", "all")
_BALANCES = ("label", "corpus", "source")

__all__ = ["add_commands", "main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _error(message: str, code: int = EXIT_USAGE) -> int:
    print(f"streamclf: error: {message}", file=sys.stderr)
    return code


def _artifact_in(path: Path) -> str | None:
    """``name@version`` (or the file found) when *path* already holds a model artifact."""
    from model.artifact import CONFIG, MANIFEST

    if not path.is_dir() or not ((path / MANIFEST).exists() or (path / CONFIG).exists()):
        return None
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        return f"{config['name']}@{config['version']}"
    except (OSError, ValueError, KeyError, TypeError):
        return MANIFEST if (path / MANIFEST).exists() else CONFIG


def _existing(paths: Sequence[str]) -> str | None:
    """The first path that does not exist, if any."""
    for p in paths:
        if p != "-" and not Path(p).exists():
            return p
    return None


def _model_missing(model: str) -> str | None:
    if model == "bundled":
        return None
    return None if Path(model).is_dir() else f"model directory not found: {model}"


def _default_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train``, ``predict`` and ``eval`` on the worker's subparsers."""
    t = subparsers.add_parser(
        "train",
        help="train a model artifact",
        description="Train an LSTM classifier on labelled data (train split; val for early "
        "stopping, calibration and the threshold) and write an artifact directory.",
    )
    t.add_argument("--data", nargs="+", required=True, metavar="PATH", help="data files/dirs")
    t.add_argument("--out", required=True, metavar="DIR", help="artifact directory to write")
    t.add_argument("--force", action="store_true",
                   help="replace the model artifact --out already holds (refused otherwise)")
    t.add_argument("--epochs", type=int, default=10, help="maximum epochs (default 10)")
    t.add_argument("--seed", type=int, default=13)
    t.add_argument("--max-tokens", type=int, default=384, help="tokens per text (head+tail)")
    t.add_argument("--threads", type=int, default=_default_threads(), help="torch threads")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--weight-decay", type=float, default=1e-4,
                   help="AdamW's decoupled weight decay (default 1e-4)")
    t.add_argument("--label-smoothing", type=float, default=0.0, metavar="SHARE",
                   help="share of each target spread over all labels (default 0)")
    t.add_argument("--focal-gamma", type=float, default=0.0, metavar="GAMMA",
                   help="focal loss: each example's loss times (1 - p_true) ** GAMMA, so the "
                   "hard ones carry the gradient (default 0: plain cross-entropy)")
    t.add_argument("--vocab-size", type=int, default=20_000)
    t.add_argument("--embed-dim", type=int, default=96)
    t.add_argument("--hidden-dim", type=int, default=96)
    t.add_argument("--unidirectional", action="store_true", help="one LSTM direction only")
    t.add_argument(
        "--pooling",
        choices=_POOLINGS,
        default="max_mean",
        help="LSTM states → one vector: max- and mean-pool, last states, attention, or all "
        "four side by side (default max_mean)",
    )
    t.add_argument(
        "--no-bag-logits",
        action="store_true",
        help="LSTM head only, without the per-token logit table beside it",
    )
    t.add_argument(
        "--bag-bigrams",
        type=int,
        default=0,
        metavar="N",
        help="also learn a logit per adjacent token pair, hashed into N buckets (default 0: none)",
    )
    t.add_argument(
        "--bag-dropout",
        type=float,
        default=0.0,
        help="share of a text's tokens left out of the logit tables' sum in each training step "
        "(default 0)",
    )
    t.add_argument(
        "--token-dropout",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of a training text's tokens shown to the model as unknown in each step "
        "(default 0)",
    )
    t.add_argument(
        "--redress",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of training messages shown in another wrapper: texts as made-up emails, "
        "emails with their headers stripped or replaced (default 0; model/augment.py)",
    )
    t.add_argument(
        "--balance",
        choices=_BALANCES,
        default="label",
        help="loss weights: every label weighs the same (default), or every (corpus, label) "
        "group does, the corpus being the data source's name before '/', or every (source, "
        "label) group (source: a row's `source`, or the mail folder or file it came from)",
    )
    t.add_argument("--dropout", type=float, default=0.3)
    t.add_argument("--patience", type=int, default=2, help="early-stopping patience (epochs)")
    t.add_argument(
        "--select",
        choices=("auc", "loss"),
        default="loss",
        help="model selection on validation: loss or mean per-source ROC-AUC (default loss)",
    )
    t.add_argument(
        "--max-ham-loss", type=float, default=0.005, help="threshold target false-positive rate"
    )
    t.add_argument("--positive-label", default=None,
                   help="the label a threshold is chosen for in two-label data (default spam, "
                   "when present)")
    t.add_argument("--name", help="the model's name in results (NAME@VERSION; default: the "
                   "--out directory's name)")
    t.add_argument("--version", default="1")
    t.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "predict",
        help="classify text, an .eml file or JSON lines",
        description="Classify the input and print one JSON line per message: id, label, score, "
        "scores. Input: JSON lines (id + text or raw), one email, or plain text (one message "
        "per line).",
    )
    p.add_argument("--model", default="bundled", help="artifact directory or 'bundled'")
    p.add_argument("input", nargs="?", default="-", help="file, or - for stdin (default)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=_default_threads())
    p.add_argument("--quantize", choices=_QUANTIZE, default="none",
                   help="int8: dynamic int8 LSTM/Linear layers on CPU (default none)")
    p.set_defaults(func=cmd_predict)

    e = subparsers.add_parser(
        "eval",
        help="evaluate a model on labelled data",
        description="Metrics overall and per source: accuracy, precision, recall, F1 for the "
        "positive label, ROC-AUC, the false-positive rate (ham_loss) and the miss rate "
        "(spam_miss).",
    )
    e.add_argument("--model", default="bundled", help="artifact directory or 'bundled'")
    e.add_argument("--data", nargs="+", required=True, metavar="PATH")
    e.add_argument("--split", default="test", help="split to score, or 'all' (default test)")
    e.add_argument("--report", metavar="DIR", help="write report.md and PNG figures here")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--positive-label", default=None, help="default: the model's, else spam")
    e.add_argument("--device", default="cpu")
    e.add_argument("--threshold", type=float, default=None)
    e.add_argument("--max-tokens", type=int, default=None)
    e.add_argument("--threads", type=int, default=_default_threads())
    e.add_argument("--quantize", choices=_QUANTIZE, default="none",
                   help="score with the dynamic int8 copy (the worker's model.quantize)")
    e.add_argument("--against", metavar="MODEL",
                   help="another model (directory or 'bundled', scored as its artifact says) to "
                   "compare with on the same messages: --model's F1 minus its F1, with a paired "
                   "95%% interval")
    e.set_defaults(func=cmd_eval)


# --- handlers ------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    problem = _train_usage_problem(args)
    if problem:
        return _error(problem)
    out = Path(args.out)
    problem = _out_problem(out, args.force)
    if problem:
        return _error(problem)
    created = not out.exists()
    try:  # before hours of training, not after
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _error(f"--out {out}: cannot create the directory: {exc.strerror or exc}")
    from model.data import DataError
    from model.train import TrainOptions, train

    opts = TrainOptions(
        data=[Path(d) for d in args.data],
        out=out,
        epochs=args.epochs,
        seed=args.seed,
        max_tokens=args.max_tokens,
        threads=args.threads,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        focal_gamma=args.focal_gamma,
        vocab_size=args.vocab_size,
        embed_dim=args.embed_dim,
        hidden_dim=args.hidden_dim,
        bidirectional=not args.unidirectional,
        pooling=args.pooling,
        bag_logits=not args.no_bag_logits,
        bag_bigrams=args.bag_bigrams,
        bag_dropout=args.bag_dropout,
        token_dropout=args.token_dropout,
        redress=args.redress,
        balance=args.balance,
        dropout=args.dropout,
        patience=args.patience,
        select=args.select,
        max_ham_loss=args.max_ham_loss,
        positive_label=args.positive_label or "spam",
        require_positive=args.positive_label is not None,
        # Not the bundled model's name: results of another model must not pass for its.
        name=args.name or out.resolve().name,
        version=args.version,
        max_minutes=args.max_minutes,
        progress=not args.quiet,
    )
    try:
        train(opts)
    except (DataError, ValueError) as exc:
        _remove_if_empty(out, created)
        return _error(str(exc))
    except KeyboardInterrupt:
        _remove_if_empty(out, created)
        print(f"streamclf: train interrupted: no new model in {out}", file=sys.stderr)
        raise
    return EXIT_OK


def _train_usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the training options, before any data is read; None when nothing."""
    missing = _existing(args.data)
    if missing:
        return f"data not found: {missing}"
    for name in ("epochs", "max_tokens", "threads", "batch_size", "vocab_size", "embed_dim",
                 "hidden_dim", "patience"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1"
    if not 0 <= args.max_ham_loss < 1:
        return "--max-ham-loss must be within [0, 1)"
    if not 0 <= args.dropout < 1:
        return "--dropout must be within [0, 1)"
    # Written so that "nan" fails too: every comparison with it is false.
    if not 0 < args.lr < math.inf or (args.max_minutes is not None and not args.max_minutes > 0):
        return "--lr and --max-minutes must be positive"
    if not 0 <= args.weight_decay < math.inf:
        return "--weight-decay must be 0 or more"
    if not 0 <= args.label_smoothing < 1:
        return "--label-smoothing must be within [0, 1)"
    if not 0 <= args.focal_gamma < math.inf:
        return "--focal-gamma must be 0 or more"
    if args.bag_bigrams < 0:
        return "--bag-bigrams must be 0 (none) or a positive number of buckets"
    if not 0 <= args.bag_dropout < 1:
        return "--bag-dropout must be within [0, 1)"
    if not 0 <= args.token_dropout < 1:
        return "--token-dropout must be within [0, 1)"
    if not 0 <= args.redress <= 1:
        return "--redress must be within [0, 1]"
    return None


def _out_problem(out: Path, force: bool) -> str | None:
    """Why *out* must not receive a new model (None: it may): the shipped model's name, a model
    that only --force may replace, or someone else's files."""
    if str(out) == "bundled":  # --model bundled would load the shipped model, never this one
        return ("--out bundled: 'bundled' names the shipped model wherever a model is read "
                "(--model bundled, model.path: bundled); choose another directory")
    held = _artifact_in(out)
    if held and not force:  # a model is hard to get back once replaced
        return (f"--out {out} already holds a model artifact ({held}); "
                "pass --force to replace it, or choose another directory")
    try:  # the model's files would be mixed in with the user's, hard to tell apart afterwards
        # Hidden files (.DS_Store, a crashed save's .config.json.tmp) do not count.
        foreign = not held and out.is_dir() and any(
            not child.name.startswith(".") for child in out.iterdir())
    except OSError as exc:
        return f"--out {out}: cannot read the directory: {exc.strerror or exc}"
    if foreign:
        return (f"--out {out} holds other files and no model artifact; choose a new or empty "
                "directory")
    return None


def _remove_if_empty(out: Path, created: bool) -> None:
    """Take back the --out directory made for a training that wrote nothing into it."""
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _load_predictor(args: argparse.Namespace) -> Any:
    import torch

    from model.predictor import Predictor

    torch.set_num_threads(max(1, args.threads))
    predictor = Predictor.load(
        args.model, device=args.device, max_tokens=args.max_tokens, threshold=args.threshold,
        quantize=args.quantize,
    )
    if args.threshold is not None and not predictor.has_threshold_decision:
        raise ValueError(f"--threshold needs a two-label model with a positive label; "
                         f"{args.model} (labels {list(predictor.labels)}) gives the most "
                         "probable label")
    return predictor


def _read_input(path: str) -> bytes:
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip, e.g. `streamclf predict < rows.jsonl.gz`
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: a broken gzip file: {exc}") from exc
    return data


def _messages(path: str, data: bytes) -> Iterator[tuple[str, str]]:
    """(id, model text) pairs from JSON lines, one email, or plain text lines; the text is ""
    for a blank message (an email's text never is)."""
    from model.data import (
        example_from_row,
        holds_mbox,
        is_mbox,
        iter_examples,
        left_out_note,
        mbox_examples_from_bytes,
    )
    from model.email import email_to_text, looks_like_email

    name = "stdin" if path == "-" else Path(path).name
    if path != "-" and (Path(path).is_dir() or data.startswith(b"From ") and is_mbox(Path(path))):
        unreadable: list[str] = []
        for ex in iter_examples(path, unreadable):
            yield ex.id, _text_unless_blank(ex)
        if unreadable:  # a dangling link, no permission: named, as blank messages are
            print(f"streamclf: {left_out_note({}, unreadable)}", file=sys.stderr)
        return
    data = data.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark
    if data.lstrip().startswith(b"{"):
        for lineno, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            ex = example_from_row(row, f"{name}:{lineno}", f"{name}:{lineno}", name)
            yield ex.id, _text_unless_blank(ex)
        return
    if path == "-" and holds_mbox(data):  # `streamclf predict < inbox.mbox`
        for ex in mbox_examples_from_bytes(data, name):
            yield ex.id, _text_unless_blank(ex)
        return
    if path.lower().endswith(".eml") or looks_like_email(data):
        yield name, email_to_text(data) if data.strip() else ""
        return
    for lineno, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if line.strip():
            yield f"{name}:{lineno}", line


def cmd_predict(args: argparse.Namespace) -> int:
    if args.input != "-" and not Path(args.input).exists():
        return _error(f"input not found: {args.input}")
    problem = _model_missing(args.model)
    if problem:
        return _error(problem)
    if args.batch_size < 1:
        return _error("--batch-size must be at least 1")
    from model.artifact import ArtifactError

    try:
        predictor = _load_predictor(args)
    except (ArtifactError, ValueError) as exc:
        return _error(str(exc))
    batch: list[tuple[str, str]] = []
    try:
        messages = _messages(
            args.input, b"" if Path(args.input).is_dir() else _read_input(args.input)
        )
        for item in messages:
            if not item[1].strip():  # as the worker, which dead-letters it as `empty`
                print(f"streamclf: {item[0]}: blank, not classified", file=sys.stderr)
                continue
            batch.append(item)
            if len(batch) >= args.batch_size:
                _emit(predictor, batch)
                batch = []
        if batch:
            _emit(predictor, batch)
    except (json.JSONDecodeError, ValueError) as exc:  # DataError is a ValueError too
        if batch:  # what came before the bad line still gets its prediction
            _emit(predictor, batch)
        return _error(f"bad input: {exc}")
    except BrokenPipeError:
        return _reader_gone()
    return EXIT_OK


def _reader_gone() -> int:
    """The reader of stdout went away (`| head`): stop quietly. Python flushes stdout again at
    exit, which would raise once more."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_FAILURE


def _emit(predictor: Any, batch: list[tuple[str, str]]) -> None:
    preds = predictor.predict([text for _, text in batch])
    for (msg_id, _), pred in zip(batch, preds, strict=True):
        row = {
            "id": msg_id,
            "label": pred.label,
            "score": round(pred.score, 6),
            "scores": {k: round(v, 6) for k, v in pred.scores.items()},
        }
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _text_unless_blank(ex: Any) -> str:
    from model.data import example_text, is_blank

    return "" if is_blank(ex) else example_text(ex)


def cmd_eval(args: argparse.Namespace) -> int:
    missing = _existing(args.data)
    if missing:
        return _error(f"data not found: {missing}")
    problem = _model_missing(args.model) or (args.against and _model_missing(args.against))
    if problem:
        return _error(problem)
    from model.artifact import ArtifactError
    from model.data import LABEL_HELP, DataError, left_out_note, normalize_split
    from model.evaluate import compare, evaluate, load_eval_examples, score_examples
    from model.predictor import Predictor

    if args.report:
        from model.report import plotting_available

        if not plotting_available():
            return _error("--report needs matplotlib: pip install 'streamclf[plots]'")
        if Path(args.report).exists() and not Path(args.report).is_dir():
            return _error(f"--report {args.report}: exists and is not a directory")
    try:
        split = None if args.split == "all" else normalize_split(args.split)
    except DataError:
        return _error(f"--split {args.split!r}: use train, val, test or all")
    try:
        predictor = _load_predictor(args)
        other = Predictor.load(args.against, device=args.device) if args.against else None
        left_out: Counter[str] = Counter()
        unreadable: list[str] = []
        examples = load_eval_examples(args.data, split, left_out, unreadable)
    except (ArtifactError, DataError, ValueError) as exc:
        return _error(str(exc))
    note = left_out_note(left_out, unreadable)
    if note:
        print(f"streamclf: {note}", file=sys.stderr)
    if not examples:
        return _error(f"no labelled examples in split {args.split!r} ({LABEL_HELP}; data "
                      "without a split goes 8 in 10 by id to train, 1 to val, 1 to test)")
    for name, model in (("model", predictor), ("--against model", other)):
        if model is None:
            continue
        unknown = sorted({ex.label for ex in examples} - set(model.labels), key=str)
        if unknown:
            return _error(f"labels {unknown} in the data are not the {name}'s "
                          f"{list(model.labels)}")
    rows = score_examples(predictor, examples)
    try:
        result = evaluate(predictor, rows, args.positive_label)
    except ValueError as exc:
        return _error(str(exc))
    result["split"] = args.split
    if other is not None:
        positive = result["positive_label"]
        if positive is None or positive not in other.labels:
            return _error(f"--against compares the F1 of one label, which both models must "
                          f"have: the model's {list(predictor.labels)}, the other's "
                          f"{list(other.labels)}; name it with --positive-label")
        result["against"] = compare(rows, score_examples(other, examples), positive,
                                    f"{other.name}@{other.version}")
    if args.report:
        from model.report import write_report

        write_report(Path(args.report), result, rows, predictor)
    try:
        print(json.dumps(result, sort_keys=True) if args.json else _summary(result), flush=True)
    except BrokenPipeError:
        return _reader_gone()
    return EXIT_OK


def _summary(result: dict[str, Any]) -> str:
    """A small human-readable table."""
    lines = [f"model {result['model']}  split {result['split']}  n {result['n']}"]
    if result.get("positive_label"):
        from model.evaluate import error_rate_names  # a sentiment model has no ham

        head = ("acc", "prec", "recall", "f1", "auc", *error_rate_names(result["positive_label"]))
        lines.append(f"{'source':<16} {'n':>7}" + "".join(f" {h:>9}" for h in head)
                     + f" {'f1_ci95':>13}")
        groups = {"overall": result, **result["by_source"]}
        for name, m in groups.items():
            auc = m["roc_auc"]
            cells = [f"{m[k]:.4f}" for k in ("accuracy", "precision", "recall", "f1")]
            cells += ["n/a" if auc is None else f"{auc:.5f}",
                      f"{m['ham_loss']:.4f}", f"{m['spam_miss']:.4f}"]
            interval = "{:.3f}-{:.3f}".format(*m["f1_ci95"]) if "f1_ci95" in m else "n/a"
            lines.append(f"{name[:16]:<16} {m['n']:>7}" + "".join(f" {c:>9}" for c in cells)
                         + f" {interval:>13}")
    if "macro_f1" in result:  # more than two labels: accuracy is over all of them
        lines.append(f"accuracy {result['accuracy']:.4f}  macro F1 {result['macro_f1']:.4f}")
        lines.extend(_per_label_lines(result.get("per_label", {})))
    if "against" in result:
        versus = result["against"]
        groups = {"overall": versus, **versus["by_source"]}
        lines.append(f"F1 minus that of {versus['model']} on the same messages, paired 95% "
                     "interval:")
        lines.extend(f"{name[:16]:<16} {m['n']:>7} {m['f1_difference']:+9.4f}  "
                     f"{m['ci95'][0]:+.4f} to {m['ci95'][1]:+.4f}" for name, m in groups.items())
    return "\n".join(lines)


def _per_label_lines(per_label: dict[str, dict[str, Any]]) -> list[str]:
    """One line per label (support, precision, recall, F1): a weak label hides in the means."""
    lines = [f"{'label':<16} {'n':>7}" + "".join(f" {h:>9}" for h in ("prec", "recall", "f1"))]
    for name, m in per_label.items():
        cells = [f"{m[k]:.4f}" for k in ("precision", "recall", "f1")]
        lines.append(f"{name[:16]:<16} {m['support']:>7}" + "".join(f" {c:>9}" for c in cells))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m model.cli``) with just the model commands."""
    parser = argparse.ArgumentParser(prog="streamclf")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
