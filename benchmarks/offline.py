"""In-process model figures, no Kafka: the offline ceiling and the levers of the model path.

The ceiling runs what the worker runs per record (codec.decode, tokenize, predict_ids), with
tokenizing overlapped with classifying as in the worker, at each batch size, thread count and
lane count, in arrival order and sorted by length over 8 batches;
the levers time predict only, on token ids computed once, so that they show the model's share
alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch

from benchmarks.common import Message, percentile, rate

BATCH_SIZES = (16, 32, 64, 128, 256)
Ids = Sequence[Sequence[int]]


@contextmanager
def torch_threads(n: int) -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_predictor(device: str = "cpu", quantize: str = "none") -> Any:
    from model.predictor import Predictor

    return Predictor.load("bundled", device=device, quantize=quantize)


def source_records(messages: Sequence[Message]) -> list[Any]:
    from worker.codec import SourceRecord

    return [SourceRecord("bench", 0, i, 0, m.key, m.value, ()) for i, m in enumerate(messages)]


def requests_of(messages: Sequence[Message]) -> list[Any]:
    from worker import codec

    settings = codec.InputSettings()
    out = [codec.decode(r, settings) for r in source_records(messages)]
    return [r for r in out if isinstance(r, codec.Request)]


PASS_BUDGET_S = 5.0  # a pass stops early past this (two torch threads on a busy machine crawl)


WINDOWS = (1, 8)  # batches sorted by length together: 1 = arrival order; 8 = what the worker does


def pipeline_pass(predictor: Any, records: Sequence[Any], batch_size: int,
                  window: int = 1, lanes: int = 1) -> dict[str, Any]:
    """decode + tokenize + predict_ids over `records`, overlapped as the worker overlaps them;
    per-batch predict times too.

    Records go in windows of `window` batches (with `window` > 1 sorted by length together, as
    the worker does when batches queue up). A window's batches are classified on `lanes` threads
    (one lane: one inference thread, as `model.lanes: 1`) while this thread decodes and tokenizes
    the next window; as in the worker, a lane that is free takes the next window's batch without
    waiting for the rest of the window before (at most two windows are handed out at a time)."""
    from worker import codec

    settings = codec.InputSettings()
    batch_seconds: list[float] = []

    def predict(batch: Sequence[Sequence[int]]) -> None:
        t0 = time.perf_counter()
        predictor.predict_ids(batch)
        batch_seconds.append(time.perf_counter() - t0)

    done = 0
    before: list[Future[None]] = []  # the window handed out before the last one
    pending: list[Future[None]] = []
    started = time.perf_counter()
    span = batch_size * window
    with ThreadPoolExecutor(lanes) as pool:
        for start in range(0, len(records), span):
            decoded = [codec.decode(r, settings) for r in records[start : start + span]]
            seqs = [predictor.tokenize(d.text) for d in decoded if isinstance(d, codec.Request)]
            if window > 1:
                seqs.sort(key=len)
            for future in before:
                future.result()
            before = pending
            pending = [pool.submit(predict, seqs[b : b + batch_size])
                       for b in range(0, len(seqs), batch_size)]
            done += len(decoded)
            if time.perf_counter() - started > PASS_BUDGET_S:
                break
        for future in before + pending:
            future.result()
    seconds = time.perf_counter() - started
    return {"msgs_per_s": rate(done, seconds), "seconds": seconds, "messages": done,
            "batch_p50_ms": 1000 * (percentile(batch_seconds, 50) or 0),
            "batch_p99_ms": 1000 * (percentile(batch_seconds, 99) or 0)}


def best_of(repeats: int, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The fastest of `repeats` passes (other processes share this machine's cores)."""
    runs = [run() for _ in range(repeats)]
    return max(runs, key=lambda r: r["msgs_per_s"])


def ceiling(predictor: Any, messages: Sequence[Message], repeats: int,
            batch_sizes: Sequence[int] = BATCH_SIZES, threads: Sequence[int] = (1, 2),
            lanes: Sequence[int] = (1,)) -> dict:
    """Section 1: the offline ceiling at each batch size, torch thread count (one lane), lane
    count (one thread each, sorted windows) and sort window, with the float32 model (the
    worker's default, `offline_msgs_per_s`) and its int8 copy (`model.quantize: int8`,
    `offline_int8_msgs_per_s`)."""
    records = source_records(messages)
    plans = [(n, 1) for n in threads] + [(1, k) for k in lanes if k > 1]
    sweep = []
    for mode, p in (("none", predictor), ("int8", load_predictor("cpu", "int8"))):
        pipeline_pass(p, records[:128], 64)  # warm-up
        for n, k in plans:
            with torch_threads(n):
                for window in WINDOWS if k == 1 else WINDOWS[1:]:  # lanes split windows
                    for bs in batch_sizes:
                        res = best_of(repeats, lambda bs=bs, w=window, p=p, k=k: pipeline_pass(
                            p, records, bs, w, k))
                        sweep.append({"quantize": mode, "threads": n, "lanes": k,
                                      "batch_size": bs, "window": window, **res})
    best = max((r for r in sweep if r["quantize"] == "none"), key=lambda r: r["msgs_per_s"])
    best_int8 = max((r for r in sweep if r["quantize"] == "int8"), key=lambda r: r["msgs_per_s"])
    return {"messages": len(records), "repeats": repeats, "sweep": sweep, "best": best,
            "offline_msgs_per_s": best["msgs_per_s"], "best_int8": best_int8,
            "offline_int8_msgs_per_s": best_int8["msgs_per_s"]}


# -- levers -----------------------------------------------------------------------------------


def predict_in_order(predictor: Any, seqs: Ids) -> Any:
    return predictor.predict_ids(seqs)


def predict_sorted(predictor: Any, seqs: Ids) -> list[Any]:
    """Sort by length before padding, restore the input order after."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    preds = predictor.predict_ids([seqs[i] for i in order])
    out: list[Any] = [None] * len(seqs)
    for i, p in zip(order, preds, strict=True):
        out[i] = p
    return out


def padding_efficiency(batches: Sequence[Ids], cap: int) -> float:
    real = padded = 0
    for batch in batches:
        lengths = [max(1, min(cap, len(s))) for s in batch]
        real += sum(lengths)
        padded += max(lengths) * len(lengths)
    return real / padded if padded else 0.0


def model_pass(predictor: Any, ids: Ids, batch_size: int, order: str = "arrival",
               window: int = 8) -> dict[str, Any]:
    """Predict only. order: arrival | sorted (within each batch) | window (sort `window`
    batches' worth of records by length, then batch; what a larger poll buffer allows)."""
    chunks: list[list[Sequence[int]]] = []
    if order == "window":
        span = batch_size * window
        for start in range(0, len(ids), span):
            part = sorted(ids[start : start + span], key=len)
            chunks += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    else:
        chunks = [list(ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)]
    predict = predict_sorted if order == "sorted" else predict_in_order
    done = 0
    started = time.perf_counter()
    for chunk in chunks:
        predict(predictor, chunk)
        done += len(chunk)
        if time.perf_counter() - started > PASS_BUDGET_S:
            break
    seconds = time.perf_counter() - started
    return {"msgs_per_s": rate(done, seconds), "messages": done,
            "padding_efficiency": padding_efficiency(chunks, predictor.max_tokens)}


def test_metrics(predictor: Any, examples: Sequence[Any]) -> dict[str, Any]:
    from model.evaluate import evaluate, score_examples

    result = evaluate(predictor, score_examples(predictor, examples))
    keep = ("f1", "precision", "recall", "roc_auc", "n")
    return {"overall": {k: result.get(k) for k in keep},
            "by_source": {name: {k: m.get(k) for k in keep}
                          for name, m in result["by_source"].items()}}


def levers(predictor: Any, messages: Sequence[Message], repeats: int,
           examples: Sequence[Any] | None, threads: Sequence[int] = (1, 2),
           batch_sizes: Sequence[int] = BATCH_SIZES) -> dict[str, Any]:
    """Sorting, threads, int8 and batch size, each timed on the same token ids."""
    ids = [predictor.tokenize(r.text) for r in requests_of(messages)]
    model_pass(predictor, ids[:128], 64)  # warm-up
    out: dict[str, Any] = {"messages": len(ids)}

    def timed(p: Any, bs: int, order: str = "arrival", n: int = 1, seqs: Ids = ids) -> dict:
        with torch_threads(n):
            return best_of(repeats, lambda: model_pass(p, seqs, bs, order))

    out["sorting"] = [{"threads": n, "order": order, **timed(predictor, 64, order, n)}
                      for n in threads for order in ("arrival", "sorted", "window")]
    # Batch size with one thread (section 1 sweeps both thread counts on the whole pipeline).
    out["batch_size"] = [{"threads": 1, "batch_size": bs, **timed(predictor, bs, n=1)}
                         for bs in batch_sizes]
    q = load_predictor("cpu", "int8")
    rows = []
    for n in threads:
        for bs in (1, 64):
            seqs = ids[:200] if bs == 1 else ids
            fp32 = timed(predictor, bs, n=n, seqs=seqs)["msgs_per_s"]
            int8 = timed(q, bs, n=n, seqs=seqs)["msgs_per_s"]
            rows.append({"threads": n, "batch_size": bs, "fp32_msgs_per_s": fp32,
                         "int8_msgs_per_s": int8, "speedup": int8 / fp32 if fp32 else None})
    out["quantization"] = {"speed": rows}
    if examples:
        out["quantization"]["fp32"] = test_metrics(predictor, examples)
        out["quantization"]["int8"] = test_metrics(q, examples)
    return out


def length_sweep(predictor: Any, messages: Sequence[Message], repeats: int) -> list[dict]:
    """Model msgs/s by message length (the sweep messages, batch 64, 1 thread)."""
    out = []
    kinds = sorted({m.kind for m in messages if m.kind.startswith("sweep-")},
                   key=lambda k: int(k.split("-")[1]))
    for kind in kinds:
        group = [m for m in messages if m.kind == kind]
        ids = [predictor.tokenize(r.text) for r in requests_of(group)]
        with torch_threads(1):
            res = best_of(repeats, lambda ids=ids: model_pass(predictor, ids, 64))
        out.append({"words": int(kind.split("-")[1]), "messages": len(ids),
                    "tokens": sum(map(len, ids)) / max(1, len(ids)), **res})
    return out


def gpu(messages: Sequence[Message], repeats: int) -> dict[str, Any]:
    """Batch-size sweep on CUDA (runs only where torch.cuda.is_available())."""
    if not torch.cuda.is_available():
        return {"measured": False, "reason": "torch.cuda.is_available() is False on this machine"}
    predictor = load_predictor("cuda")
    records = source_records(messages)
    ids = [predictor.tokenize(r.text) for r in requests_of(messages)]
    model_pass(predictor, ids[:256], 64)
    torch.cuda.synchronize()
    sweep = []
    for bs in (16, 32, 64, 128, 256, 512, 1024):
        model = best_of(repeats, lambda bs=bs: model_pass(predictor, ids, bs))
        pipe = best_of(repeats, lambda bs=bs: pipeline_pass(predictor, records, bs))
        sweep.append({"batch_size": bs, "model_msgs_per_s": model["msgs_per_s"],
                      "pipeline_msgs_per_s": pipe["msgs_per_s"],
                      "batch_p99_ms": pipe["batch_p99_ms"]})
    return {"measured": True, "device": torch.cuda.get_device_name(0), "sweep": sweep}
