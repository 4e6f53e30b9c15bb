"""The headline figures, the targets, and docs/performance.md with its plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGETS = {
    "worker_vs_offline": 0.9,
    "worker_vs_naive": 5.0,
    "passthrough_msgs_per_s": 20_000,
    "peak_rss_mb": 1536,
}


def _get(d: Any, *path: Any) -> Any:
    for key in path:
        if isinstance(d, dict):
            d = d.get(key)
        elif isinstance(d, list) and isinstance(key, int) and -len(d) <= key < len(d):
            d = d[key]
        else:
            return None
    return d


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if a and b else None


def summarize(r: dict[str, Any]) -> dict[str, Any]:
    """Headline figures and each target's verdict, all from this one run."""
    offline = _get(r, "offline", "offline_msgs_per_s")
    # The ceiling re-measured at its best settings beside each worker drain (median), when the
    # run has it: the sweep's best is the fastest of many passes, minutes before the drains.
    offline_paired = _get(r, "worker", "offline_paired", "msgs_per_s")
    reference = offline_paired or offline
    naive = _get(r, "naive", "naive_msgs_per_s")
    worker = _get(r, "worker", "worker_msgs_per_s")
    worker_one_lane = _get(r, "worker", "runs", "lanes=1", "drain", "msgs_per_s")
    crc_label = _get(r, "passthrough", "mix_crc_variant", "variant")
    worker_crc = _get(r, "worker", "runs", f"lanes=1, {crc_label}", "drain", "msgs_per_s")
    passthrough = _get(r, "passthrough", "passthrough_msgs_per_s")
    passthrough_short = _get(r, "passthrough", "passthrough_short_msgs_per_s")
    copy_loop = _get(r, "passthrough", "client_copy_loop_msgs_per_s")
    passthrough_decoding = _get(r, "passthrough", "passthrough_decoding_msgs_per_s")
    half = next((p for p in _get(r, "latency", "phases") or [] if p.get("load_fraction") == 0.5),
                {})
    # The bound uses the batches of the half-load phase itself (runs before this was recorded
    # per phase have only the whole session's: warm-up backlog and every phase).
    batch_p99 = (_get(half, "batch_times", "p99_ms")
                 or _get(r, "latency", "batch_times", "p99_ms"))
    max_wait = 20.0
    p99_bound = max_wait + 2 * batch_p99 if batch_p99 is not None else None
    rss = _get(r, "memory", "peak_rss_mb")
    offline_int8 = _get(r, "offline", "offline_int8_msgs_per_s")
    worker_int8 = _get(r, "worker", "runs", "quantize=int8", "drain", "msgs_per_s")
    s: dict[str, Any] = {
        "offline_msgs_per_s": offline,
        "offline_int8_msgs_per_s": offline_int8,
        "offline_paired_msgs_per_s": offline_paired,
        "worker_int8_msgs_per_s": worker_int8,
        "naive_msgs_per_s": naive,
        "worker_msgs_per_s": worker,
        "worker_lanes1_msgs_per_s": worker_one_lane,
        "crc_variant": crc_label,
        "worker_lanes1_crc_variant_msgs_per_s": worker_crc,
        "passthrough_crc_variant_msgs_per_s": _get(r, "passthrough", "mix_crc_variant",
                                                   "msgs_per_s"),
        "passthrough_msgs_per_s": passthrough,
        "passthrough_short_msgs_per_s": passthrough_short,
        "passthrough_decoding_msgs_per_s": passthrough_decoding,
        "decode_processes": _get(r, "passthrough", "mix_decoding", "decode_processes"),
        "client_copy_loop_msgs_per_s": copy_loop,
        "p99_at_50pct_ms": half.get("p99_ms"),
        "p99_bound_ms": p99_bound,
        "batch_p99_ms": batch_p99,
        "peak_rss_mb": rss,
    }
    checks = {
        "worker >= 0.9 x offline": (_ratio(worker, reference), TARGETS["worker_vs_offline"]),
        "worker >= 5 x naive": (_ratio(worker, naive), TARGETS["worker_vs_naive"]),
        "passthrough >= 20,000 msgs/s": (passthrough, TARGETS["passthrough_msgs_per_s"]),
    }
    targets = {name: {"value": v, "target": t, "met": v is not None and v >= t}
               for name, (v, t) in checks.items()}
    targets["p99 at 50 % load <= max_wait_ms + 2 x p99 batch time"] = {
        "value": s["p99_at_50pct_ms"], "target": p99_bound,
        "met": None if p99_bound is None or s["p99_at_50pct_ms"] is None
        else s["p99_at_50pct_ms"] <= p99_bound}
    targets["peak RSS <= 1.5 GB (100k backlog)"] = {
        "value": rss, "target": TARGETS["peak_rss_mb"],
        "met": None if rss is None else rss <= TARGETS["peak_rss_mb"]}
    s["worker_vs_offline"] = _ratio(worker, reference)
    s["worker_vs_offline_sweep_best"] = _ratio(worker, offline)
    s["worker_vs_naive"] = _ratio(worker, naive)
    s["passthrough_short_vs_copy_loop"] = _ratio(passthrough_short, copy_loop)
    s["passthrough_decoding_vs_passthrough"] = _ratio(passthrough_decoding, passthrough)
    s["worker_int8_vs_offline_int8"] = _ratio(worker_int8, offline_int8)
    s["worker_int8_vs_worker"] = _ratio(worker_int8, worker)
    s["worker_lanes1_vs_offline"] = _ratio(worker_one_lane, reference)
    s["worker_lanes1_vs_naive"] = _ratio(worker_one_lane, naive)
    s["worker_lanes1_crc_variant_vs_offline"] = _ratio(worker_crc, reference)
    s["worker_lanes1_crc_variant_vs_naive"] = _ratio(worker_crc, naive)
    s["targets"] = targets
    return s


# -- formatting -------------------------------------------------------------------------------


def _n(x: Any, digits: int = 0) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and digits:
        return f"{x:,.{digits}f}"
    return f"{x:,.0f}" if isinstance(x, (int, float)) else str(x)


def _x(x: Any) -> str:
    return "–" if x is None else f"{x:.2f}×"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def _verdict(met: Any) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


# -- plots ------------------------------------------------------------------------------------


def plots(r: dict[str, Any], img_dir: Path) -> dict[str, str]:
    """PNG files under img_dir; returns {name: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    s = r.get("summary", {})

    bars = [("offline ceiling", s.get("offline_msgs_per_s")),
            ("naive loop", s.get("naive_msgs_per_s")),
            ("worker (defaults)", s.get("worker_msgs_per_s")),
            ("worker (one lane)", s.get("worker_lanes1_msgs_per_s")),
            (f"worker (one lane, {s.get('crc_variant')})",
             s.get("worker_lanes1_crc_variant_msgs_per_s")),
            ("passthrough (mix)", s.get("passthrough_msgs_per_s")),
            (f"passthrough (mix, {s.get('decode_processes')} decode processes)",
             s.get("passthrough_decoding_msgs_per_s")),
            (f"passthrough (mix, {s.get('crc_variant')})",
             s.get("passthrough_crc_variant_msgs_per_s")),
            ("passthrough (short)", s.get("passthrough_short_msgs_per_s")),
            ("kafka-python copy loop (short)", s.get("client_copy_loop_msgs_per_s"))]
    bars = [(k, v) for k, v in bars if v]
    if bars:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.barh([k for k, _ in bars][::-1], [v for _, v in bars][::-1], color="#4477aa")
        for i, (_, v) in enumerate(bars[::-1]):
            ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
        ax.set_xscale("log")
        _plain_ticks(ax.xaxis)
        ax.set_xlim(right=max(v for _, v in bars) * 2.5)
        ax.set_xlabel("messages / s (log scale)")
        ax.set_title("Throughput on the benchmark messages")
        made["throughput"] = _save(fig, img_dir / "throughput.png")

    sweep = _get(r, "offline", "sweep") or []
    if sweep:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for q, n, w, k in sorted({(p.get("quantize", "none"), p["threads"], p.get("window", 1),
                                   p.get("lanes", 1)) for p in sweep}):
            pts = [p for p in sweep if p["threads"] == n and p.get("window", 1) == w
                   and p.get("quantize", "none") == q and p.get("lanes", 1) == k]
            order = "arrival order" if w == 1 else f"sorted over {w} batches"
            ax.plot([p["batch_size"] for p in pts], [p["msgs_per_s"] for p in pts],
                    "o-" if q == "none" else "s--",
                    label=f"{'int8' if q == 'int8' else 'float32'}, {n} thread"
                          f"{'s' if n > 1 else ''}{f', {k} lanes' if k > 1 else ''}, {order}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("messages / s")
        ax.set_title("Offline: decode + tokenize + predict")
        ax.legend()
        made["offline"] = _save(fig, img_dir / "offline_batch_size.png")

    phases = _get(r, "latency", "phases") or []
    if phases and all(p.get("p99_ms") is not None for p in phases):
        fig, ax = plt.subplots(figsize=(6, 3.2))
        x = [100 * p["load_fraction"] for p in phases]
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            ax.plot(x, [p[q] for p in phases], "o-", label=q.split("_")[0])
        ax.set_xlabel("offered load, % of the worker's throughput")
        ax.set_ylabel("end-to-end latency, ms")
        ax.set_title("Latency under load (defaults)")
        ax.legend()
        made["latency"] = _save(fig, img_dir / "latency_load.png")

    points = [p for p in _get(r, "grid", "points") or [] if p.get("p99_ms") and p.get("msgs_per_s")]
    if points:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        waits = sorted({p["max_wait_ms"] for p in points})
        for w in waits:
            pts = [p for p in points if p["max_wait_ms"] == w]
            ax.plot([p["p99_ms"] for p in pts], [p["msgs_per_s"] for p in pts], "o",
                    label=f"max_wait_ms={w:g}")
            for p in pts:
                ax.annotate(f"b{p['max_batch_size']}", (p["p99_ms"], p["msgs_per_s"]),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        _plain_ticks(ax.xaxis)
        offered = _n(_get(r, "grid", "offered_msgs_per_s"))
        ax.set_xlabel(f"p99 latency at {offered} msgs/s offered, ms")
        ax.set_ylabel("backlog throughput, msgs/s")
        ax.set_title("Batching settings: throughput against p99 (bN = max_batch_size)")
        ax.legend(fontsize=8)
        made["grid"] = _save(fig, img_dir / "batching_grid.png")
    return made


def _plain_ticks(axis: Any) -> None:
    """Plain numbers on a log axis, no crowded minor labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    axis.set_minor_formatter(NullFormatter())


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


# -- the document -----------------------------------------------------------------------------


def provided_sections(earlier: list[dict[str, Any]], now: list[str],
                      unrecorded: tuple[str, ...] = ()) -> list[tuple[dict[str, Any], list[str]]]:
    """Each earlier run (oldest first) with the sections whose figures are still its own: those
    no later run, nor the current one (`now`), measured again. A run that did not record its
    sections counts as having run `unrecorded`."""
    later = set(now)
    provided = []
    for run in reversed(earlier):  # newest first: a later run's figures win
        own = [name for name in run.get("sections") or unrecorded if name not in later]
        later |= set(own)
        provided.append((run, own))
    return provided[::-1]


def earlier_run_lines(r: dict[str, Any]) -> list[str]:
    """One paragraph per earlier run (`--only`) saying which sections' figures are its."""
    now = r.get("run", {}).get("sections") or []
    L: list[str] = []
    for earlier, own in provided_sections(r.get("reruns", []), now):
        which = f"Sections {', '.join(own)}" if own else "Other sections"
        L += [f"{which} come from an earlier run, "
              f"`{earlier.get('command', '').strip()}` ({earlier.get('started')}, load average "
              f"{' / '.join(map(str, earlier.get('loadavg_start', [])))} at start, "
              f"{' / '.join(map(str, earlier.get('loadavg_end', [])))} at end).", ""]
    return L


def write_doc(r: dict[str, Any], doc: Path) -> None:
    img_dir = doc.parent / "img" / "performance"
    made = plots(r, img_dir)
    rel = "img/performance/"
    s = r.get("summary", {})
    m = r.get("machine", {})
    run = r.get("run", {})
    L: list[str] = ["# Performance", ""]
    L += [
        "Figures from one run of the benchmark suite (`benchmarks/`), regenerated by it. "
        "Reproduce with:", "",
        "```sh", *_setup_lines(run.get("command", "")),
        *[e.get("command", "").strip() for e in r.get("reruns", [])],
        run.get("command", "streamclf bench").strip(), "```", "",
        "(`streamclf bench --quick` is a two-minute smoke test; `--only offline,levers` reruns "
        "some sections and keeps the others' figures. Every run rewrites this page and "
        "`benchmarks/results/latest.json`, a `--quick` one too: `--no-doc` leaves this page as "
        "it is, `--doc FILE` and `--json FILE` write elsewhere.)", "",
    ]
    L += earlier_run_lines(r)
    if run.get("quick"):
        L += ["> **This is a `--quick` run: small sizes, figures are indicative only.**", ""]
    L += ["## Machine", ""]
    L += _table(["", ""], [
        ["CPU", f"{m.get('cpu')} ({m.get('cores')} cores)"],
        ["memory", f"{m.get('memory_gb')} GB"],
        ["device", m.get("device")],
        ["torch", f"{m.get('torch')} (default intra-op threads: {m.get('torch_threads_default')})"],
        ["Python / kafka-python", f"{m.get('python')} / {m.get('kafka_python')} "
                                  f"(CRC32C: {m.get('kafka_python_crc32c')})"],
        ["broker", m.get("broker")],
        ["run", f"{run.get('started')}, {_n(run.get('duration_s'))} s"],
        ["load average (1/5/15 min) at start", " / ".join(map(str, run.get("loadavg_start", [])))],
        ["load average at end", " / ".join(map(str, run.get("loadavg_end", [])))],
    ])
    L += [
        "The machine is shared: other processes held CPU during the run (see the load "
        "averages; 2.0 means both cores busy). Figures that depend on both cores, especially "
        "anything using two torch threads, are sensitive to that.", "",
    ]
    msgs = r.get("messages", {})
    L += ["## Messages", "",
          f"{_n(msgs.get('count'))} messages in one fixed shuffled order "
          f"({', '.join(f'{k}: {v}' for k, v in sorted((msgs.get('by_kind') or {}).items()))}; "
          f"mean {_n(msgs.get('mean_bytes'))} bytes): the test split of the shared SpamAssassin "
          "emails (raw RFC 822) and SMS (JSON requests), plus a length sweep of plain-text "
          "messages of 8 to 2,048 words. Backlogs repeat this list with fresh keys.", ""]

    L += ["## Summary", ""]
    L += _table(["figure", "msgs/s"], [
        ["1. offline ceiling (best batch size, threads and lanes)",
         _n(s.get("offline_msgs_per_s"))],
        ["1. offline ceiling, int8 model", _n(s.get("offline_int8_msgs_per_s"))],
        ["1. offline ceiling, best settings again beside the worker drains (median)",
         _n(s.get("offline_paired_msgs_per_s"))],
        ["2. naive loop", _n(s.get("naive_msgs_per_s"))],
        ["3. worker, defaults", _n(s.get("worker_msgs_per_s"))],
        ["3. worker, `model.quantize: int8`", _n(s.get("worker_int8_msgs_per_s"))],
        ["3. worker, `model.lanes: 1`", _n(s.get("worker_lanes1_msgs_per_s"))],
        [f"3. worker, `model.lanes: 1`, {s.get('crc_variant')}",
         _n(s.get("worker_lanes1_crc_variant_msgs_per_s"))],
        ["4. passthrough (no-op model), the benchmark messages",
         _n(s.get("passthrough_msgs_per_s"))],
        [f"4. passthrough, the benchmark messages, `input.decode_processes: "
         f"{s.get('decode_processes')}`", _n(s.get("passthrough_decoding_msgs_per_s"))],
        [f"4. passthrough, the benchmark messages, {s.get('crc_variant')}",
         _n(s.get("passthrough_crc_variant_msgs_per_s"))],
        ["4. passthrough, short SMS-like messages", _n(s.get("passthrough_short_msgs_per_s"))],
        ["4. bare kafka-python copy loop, the same short messages (the client's ceiling)",
         _n(s.get("client_copy_loop_msgs_per_s"))],
    ])
    if "throughput" in made:
        L += [f"![throughput]({rel}{made['throughput']})", ""]
    L += ["### Targets", ""]
    rows = []
    for name, t in (s.get("targets") or {}).items():
        value, target = t.get("value"), t.get("target")
        fmt = _x if "x " in name and "ms" not in name else (lambda v: _n(v, 1))
        rows.append([name, fmt(value), fmt(target) if "x " in name and "ms" not in name
                     else _n(target, 1), _verdict(t.get("met"))])
    L += _table(["target", "this run", "threshold", "verdict"], rows)
    if s.get("offline_paired_msgs_per_s"):
        L += [f"worker / offline compares the worker with the ceiling measured beside its drains "
              f"(section 3); against the sweep's best (section 1) it is "
              f"{_x(s.get('worker_vs_offline_sweep_best'))}.", ""]
    L += [f"With `model.lanes: 1` the worker is at {_x(s.get('worker_lanes1_vs_offline'))} "
          f"the offline ceiling and {_x(s.get('worker_lanes1_vs_naive'))} the naive loop; "
          f"with {s.get('crc_variant')}, at "
          f"{_x(s.get('worker_lanes1_crc_variant_vs_offline'))} and "
          f"{_x(s.get('worker_lanes1_crc_variant_vs_naive'))}. With `model.quantize: int8` "
          f"the worker runs at {_x(s.get('worker_int8_vs_worker'))} the default worker's rate "
          f"and {_x(s.get('worker_int8_vs_offline_int8'))} the int8 offline ceiling (the "
          "sweep's best).", ""]

    L += _offline_section(r, made, rel)
    L += _naive_section(r)
    L += _worker_section(r)
    L += _passthrough_section(r)
    L += _latency_section(r, made, rel)
    L += _memory_section(r)
    L += _gpu_section(r)
    L += _levers_section(r)
    notes = Path(__file__).with_name("FINDINGS.md")
    if notes.exists():
        L += [notes.read_text().strip(), ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(L).rstrip() + "\n")


def _setup_lines(command: str) -> list[str]:
    """The one-off install a `--crc32c-path DIR` run needs (outside the project's venv)."""
    words = command.split()
    if "--crc32c-path" in words and words.index("--crc32c-path") + 1 < len(words):
        folder = words[words.index("--crc32c-path") + 1]
        return [f"pip install --target {folder} crc32c   # only for the crc32c comparison runs"]
    return []


def _offline_section(r: dict[str, Any], made: dict[str, str], rel: str) -> list[str]:
    o = r.get("offline") or {}
    L = ["## 1. Offline ceiling", ""]
    if "error" in o or not o:
        return L + [f"Not measured: {o.get('error', 'section not run')}", ""]
    L += ["The bundled model in-process, no Kafka: `worker.codec.decode` + tokenize + "
          "`predict_ids` over the messages, in arrival order (window 1) and sorted by token "
          "length over 8 batches at a time (window 8, what the worker does when batches queue "
          "up; with 2 lanes, batches are classified two at a time on two threads, a free lane "
          "taking the next batch, of the next window too, as the worker does). As in the "
          "worker, the next window is decoded and tokenized while the current one is "
          "classified (on its own thread also with one lane). Best "
          f"of {o.get('repeats')} passes per cell, with the float32 "
          "model and its "
          "dynamic int8 copy (`model.quantize: int8`, opt-in). The ceiling the targets use is "
          "the float32 model's, the worker's default. Batch time = predict of one batch.",
          ""]
    rows = [[p.get("quantize", "none"), p["threads"], p.get("lanes", 1), p.get("window", 1),
             p["batch_size"], _n(p["msgs_per_s"]), _n(p["batch_p50_ms"], 1),
             _n(p["batch_p99_ms"], 1)]
            for p in o.get("sweep", [])]
    L += _table(["quantize", "torch threads", "lanes", "window", "batch size", "msgs/s",
                 "batch p50 ms", "batch p99 ms"], rows)
    b = o.get("best", {})
    L += [f"Best: {_n(b.get('msgs_per_s'))} msgs/s at batch {b.get('batch_size')} with "
          f"{b.get('threads')} thread(s), {b.get('lanes', 1)} lane(s), "
          f"window {b.get('window', 1)}, quantize "
          f"{b.get('quantize', 'none')}: `offline_msgs_per_s`.",
          ""]
    if "offline" in made:
        L += [f"![offline]({rel}{made['offline']})", ""]
    sweep = o.get("length_sweep") or []
    if sweep:
        cap = _n(max(p["tokens"] for p in sweep))
        L += ["By message length (the sweep messages alone, predict only, batch 64, 1 thread); "
              f"the tokenizer keeps at most `max_tokens` ({cap} here) tokens of head and tail, "
              "so cost stops growing past that:", ""]
        L += _table(["words", "tokens (mean)", "msgs/s", "real/padded tokens"],
                    [[p["words"], _n(p["tokens"], 1), _n(p["msgs_per_s"]),
                      _n(p["padding_efficiency"], 2)] for p in sweep])
    return L


def _naive_section(r: dict[str, Any]) -> list[str]:
    n = r.get("naive") or {}
    L = ["## 2. Naive loop", ""]
    if "error" in n or not n:
        return L + [f"Not measured: {n.get('error', 'section not run')}", ""]
    return L + [
        "What a tutorial writes, with kafka-python: poll one record, decode, tokenize, pad to a "
        "fixed `max_tokens` (the LSTM runs every step), predict one, produce and wait for "
        "the acknowledgement, commit that record's offset. One torch thread (two are slower on "
        "this machine at batch 1).", "",
        f"{_n(n.get('naive_msgs_per_s'))} msgs/s over {_n(n.get('messages'))} of "
        f"{_n(n.get('of'))} messages ({_n(n.get('seconds'), 1)} s, from the first record "
        "received)" + _runs_note(n.get("runs_msgs_per_s")) + ".", ""]


def _runs_note(rates: list[float] | None) -> str:
    """The words ', the median of N runs: a, b, c' when a section ran more than once."""
    if not rates or len(rates) < 2:
        return ""
    return f"; the median of {len(rates)} runs: " + ", ".join(_n(v) for v in rates)


def _worker_section(r: dict[str, Any]) -> list[str]:
    w = r.get("worker") or {}
    L = ["## 3. The worker", ""]
    if "error" in w or not w:
        return L + [f"Not measured: {w.get('error', 'section not run')}", ""]
    times = (w.get("backlog") or 0) // max(1, _get(r, "messages", "count") or 1)
    L += [f"`benchmarks/worker_proc.py` (what `streamclf run` does) as a subprocess, draining a "
          f"pre-produced backlog of {_n(w.get('backlog'))} records (the messages, {times}×) "
          "from 3 partitions of the embedded broker. Throughput is timed "
          f"{w.get('timing')}: the output records' timestamps, first to last. The group join "
          "and model load are reported separately (spawn → ready).", ""]
    rows = []
    for name, run in (w.get("runs") or {}).items():
        d = run.get("drain", {})
        rows.append([name, _n(d.get("msgs_per_s")), _n(run.get("spawn_to_ready_s"), 1),
                     _n((run.get("worker_histograms") or {}).get("batch_size_p50_le")),
                     _n(run.get("peak_rss_kb", 0) / 1024 if run.get("peak_rss_kb") else None)])
    L += _table(["settings", "msgs/s (first→last result)", "spawn→ready s", "batch size p50 ≤",
                 "peak RSS MB"], rows)
    note = _runs_note(w.get("runs_msgs_per_s"))
    if note:
        L += [f"`worker_msgs_per_s` = {_n(w.get('worker_msgs_per_s'))} msgs/s, with the default "
              f"settings{note} (first→last result).", ""]
    paired = w.get("offline_paired") or {}
    if paired.get("msgs_per_s"):
        c = paired.get("config") or {}
        L += ["The offline ceiling was measured again just before each default drain, at the "
              f"sweep's best settings (batch {c.get('batch_size')}, {c.get('lanes')} lane(s), "
              f"window {c.get('window')}) over as many messages as a drain "
              f"({_n(paired.get('messages'))}): {_n(paired.get('msgs_per_s'))} msgs/s (median; "
              f"each pass {', '.join(_n(v) for v in paired.get('runs_msgs_per_s') or [])}). "
              "The worker / offline target compares this median with the worker's: this "
              "machine's speed drifts between minutes, and the sweep's best is the fastest of "
              "many passes.", ""]
    return L


def _passthrough_section(r: dict[str, Any]) -> list[str]:
    p = r.get("passthrough") or {}
    L = ["## 4. Passthrough (no-op classifier)", ""]
    if "error" in p or not p:
        return L + [f"Not measured: {p.get('error', 'section not run')}", ""]
    L += ["The worker with a classifier that does nothing "
          "(`benchmarks/worker_proc.py --noop`): the Kafka path's own ceiling — poll, decode, "
          "batch, encode the result, produce, acknowledge, commit.", ""]
    def runs(key: str) -> str:
        rates = _get(p, key, "runs_msgs_per_s") or []
        return ", ".join(_n(v) for v in rates) if len(rates) > 1 else ""

    L += _table(["backlog", "records", "msgs/s (median)", "each run"], [
        ["the benchmark messages, repeated", _n(_get(p, "mix", "backlog")),
         _n(p.get("passthrough_msgs_per_s")), runs("mix")],
        [f"the same, read and tokenized in `input.decode_processes: "
         f"{_get(p, 'mix_decoding', 'decode_processes')}` (each run beside one above)",
         _n(_get(p, "mix_decoding", "backlog")), _n(p.get("passthrough_decoding_msgs_per_s")),
         runs("mix_decoding")],
        ["the benchmark messages read as plain text (`input.format: text`: no email reading)",
         _n(_get(p, "mix_as_text", "backlog")), _n(_get(p, "mix_as_text", "msgs_per_s")), ""],
        ["short SMS-like JSON messages", _n(_get(p, "short", "backlog")),
         _n(p.get("passthrough_short_msgs_per_s")), runs("short")],
        ["the same short messages, bare kafka-python copy loop (no worker)",
         _n(_get(p, "copy_loop", "backlog")), _n(p.get("client_copy_loop_msgs_per_s")),
         runs("copy_loop")],
        ["short, while profiled (below)", _n(_get(p, "short_profiled", "backlog")),
         _n(_get(p, "short_profiled", "msgs_per_s")), ""],
        [f"short, `kafka.producer: {_get(p, 'short_linger', 'kafka.producer')}`",
         _n(_get(p, "short_linger", "backlog")), _n(_get(p, "short_linger", "msgs_per_s")), ""],
    ] + ([[f"the benchmark messages, {_get(p, 'mix_crc_variant', 'variant')}",
           _n(_get(p, "mix_crc_variant", "backlog")),
           _n(_get(p, "mix_crc_variant", "msgs_per_s")), ""]] if p.get("mix_crc_variant") else []))
    copy_ratio = _ratio(p.get("passthrough_short_msgs_per_s"),
                        p.get("client_copy_loop_msgs_per_s"))
    if copy_ratio is not None:
        L += ["The copy loop (`benchmarks.throughput.copy_loop`) is the least a consume → produce "
              "service does with kafka-python and the worker's client settings: poll, send one "
              "fixed result per record with an acknowledgement callback, commit after each poll; "
              "no decoding, result building, offset bookkeeping or metrics. The worker's "
              f"passthrough on the same backlog is {_x(copy_ratio)} of it.", ""]
    decoding_ratio = _ratio(p.get("passthrough_decoding_msgs_per_s"),
                            p.get("passthrough_msgs_per_s"))
    if decoding_ratio is not None:
        L += ["Reading an email (MIME, HTML to text) is most of a passthrough's work on the "
              "benchmark messages, and it holds the GIL. With `input.decode_processes` that "
              "work runs in other processes and the worker only ships values out and token ids "
              f"back: {_x(decoding_ratio)} the passthrough of the same messages here. It "
              "scales with the cores a machine has to spare; with a model that keeps every core "
              "busy (the bundled one on this CPU) it does not pay.", ""]
    prof = p.get("profile") or {}
    if prof.get("samples"):
        L += [f"Profile of a separate short-message drain (py-spy `--gil`, {prof['samples']} "
              "samples at 200 Hz of the thread holding the GIL: the Kafka path is bound by it). "
              "Share of samples by thread:", ""]
        L += _table(["thread", "% of samples"],
                    [[k, v] for k, v in prof.get("threads_pct", {}).items()])
        L += ["Hot spots, self time (the function itself):", ""]
        L += _table(["function", "% self"], [[f"`{k}`", v] for k, v in prof["self_pct"][:12]])
        inclusive = [(k, v) for k, v in prof.get("total_pct", [])
                     if not k.startswith(("threading.py", "benchmarks/worker_proc.py"))][:14]
        L += ["Inclusive (the function and what it calls):", ""]
        L += _table(["function", "% total"], [[f"`{k}`", v] for k, v in inclusive])
    elif prof:
        L += [f"Profile: {prof.get('error')}", ""]
    return L


def _latency_section(r: dict[str, Any], made: dict[str, str], rel: str) -> list[str]:
    lat = r.get("latency") or {}
    L = ["## 5. Latency", ""]
    if "error" in lat or not lat:
        return L + [f"Not measured: {lat.get('error', 'section not run')}", ""]
    L += ["One worker at the defaults (`max_batch_size` 32, `max_wait_ms` 20); after a warm-up "
          f"backlog, the messages are offered at an even pace for {_n(lat.get('phase_seconds'))} s "
          "per load, as fractions of the worker's measured throughput "
          f"({_n(lat.get('worker_msgs_per_s_basis'))} msgs/s). Latency = output record timestamp "
          "(the worker's send of the result) − input record timestamp (the load generator's "
          "send).", ""]
    rows = [[f"{100 * p['load_fraction']:.0f} %", _n(p.get("offered_msgs_per_s")),
             _n(p.get("achieved_msgs_per_s")), _n(p.get("results")), _n(p.get("p50_ms")),
             _n(p.get("p95_ms")), _n(p.get("p99_ms")), _n(p.get("max_ms")),
             _n((p.get("batch_times") or {}).get("batches")),
             _n((p.get("batch_times") or {}).get("p99_ms"), 1)]
            for p in lat.get("phases", [])]
    L += _table(["load", "offered msgs/s", "sent msgs/s", "results", "p50 ms", "p95 ms",
                 "p99 ms", "max ms", "batches", "batch p99 ms"], rows)
    bt = lat.get("batch_times") or {}
    hist = lat.get("worker_histograms") or {}
    L += ["Batch time = the model call (`predict_ids`) of one batch, timed in the worker and "
          "given to the phase during which it ended; the bound of each load uses its own phase. "
          f"Over the whole session (warm-up backlog included: {_n(bt.get('batches'))} batches, "
          f"mean size {_n(bt.get('mean_batch_size'), 1)}): p50 {_n(bt.get('p50_ms'), 1)} ms, "
          f"p99 {_n(bt.get('p99_ms'), 1)} ms. The worker's own histograms agree within their "
          f"buckets: inference p99 ≤ {hist.get('inference_p99_le_s')} s.", ""]
    if "latency" in made:
        L += [f"![latency]({rel}{made['latency']})", ""]
    var = lat.get("variants_at_50pct") or []
    half = next((p for p in lat.get("phases", []) if p.get("load_fraction") == 0.5), None)
    if var and half:
        L += ["### Variants at 50 % load", "",
              "Each in its own worker at the same offered load. *coalescing batches* is a "
              "variant built in `benchmarks/worker_proc.py` (not in `worker/`): a batch that "
              "would queue behind others for the inference thread merges into the last queued "
              "one, up to `max_batch_size`. Bound = `max_wait_ms` (20) + 2 × the p99 time of the "
              "batches that worker ran during that phase.", ""]
        half_bt = half.get("batch_times") or bt
        rows = [["defaults", _n(half.get("offered_msgs_per_s")), _n(s_backlog(r)),
                 _n(half.get("p50_ms")), _n(half.get("p99_ms")), _n(half_bt.get("p99_ms"), 1),
                 _bound(half.get("p99_ms"), half_bt.get("p99_ms"))]]
        for v in var:
            vbt = v.get("batch_times") or {}
            rows.append([v["variant"], _n(v.get("offered_msgs_per_s")),
                         _n(v.get("backlog_msgs_per_s")), _n(v.get("p50_ms")),
                         _n(v.get("p99_ms")), _n(vbt.get("p99_ms"), 1),
                         _bound(v.get("p99_ms"), vbt.get("p99_ms"))])
        L += _table(["worker", "offered msgs/s", "backlog msgs/s", "p50 ms", "p99 ms",
                     "batch p99 ms", "p99 ≤ bound?"], rows)
    g = r.get("grid") or {}
    if g.get("points"):
        base = ", ".join(f"{k}={v}" for k, v in (g.get("base") or {}).items())
        L += ["### Batching settings", "",
              "For each setting, one worker: the backlog throughput (the messages once), then "
              f"the p99 latency at {_n(g.get('offered_msgs_per_s'))} msgs/s offered (a quarter "
              "of the default worker's throughput). Every worker here runs with "
              f"`{base}` so that the fetch wait and torch threads (above) do not "
              "hide the batching settings.", ""]
        L += _table(["max_wait_ms", "max_batch_size", "backlog msgs/s", "p50 ms", "p99 ms",
                     "batch p99 ms"],
                    [[_n(p["max_wait_ms"]), p["max_batch_size"], _n(p.get("msgs_per_s")),
                      _n(p.get("p50_ms")), _n(p.get("p99_ms")), _n(p.get("batch_p99_ms"), 1)]
                     for p in g["points"]])
        if "grid" in made:
            L += [f"![grid]({rel}{made['grid']})", ""]
    return L


def s_backlog(r: dict[str, Any]) -> Any:
    return _get(r, "worker", "worker_msgs_per_s")


def _bound(p99: Any, batch_p99: Any) -> str:
    if p99 is None or batch_p99 is None:
        return "–"
    bound = 20 + 2 * batch_p99
    return f"{'yes' if p99 <= bound else 'no'} ({_n(bound)})"


def _memory_section(r: dict[str, Any]) -> list[str]:
    mem = r.get("memory") or {}
    L = ["## 6. Memory", ""]
    if "error" in mem or not mem:
        return L + [f"Not measured: {mem.get('error', 'section not run')}", ""]
    L += ["Peak RSS (`VmHWM` of the worker process, read when the backlog is drained) while "
          "draining backlogs of short SMS-like JSON messages with the bundled model.", ""]
    L += _table(["backlog", "max_in_flight", "RSS at ready MB", "peak RSS MB", "drain s"],
                [[_n(x["backlog"]), _n(x["max_in_flight"]), _n(x["rss_at_ready_mb"], 1),
                  _n(x["peak_rss_mb"], 1), _n(x["drain_s"], 1)] for x in mem.get("runs", [])])
    L += ["The worker holds at most `batching.max_in_flight` records (it pauses its partitions "
          "there), so the peak follows that setting, not the backlog.", ""]
    return L


def _gpu_section(r: dict[str, Any]) -> list[str]:
    g = r.get("gpu") or {}
    L = ["## 7. GPU", ""]
    if not g.get("measured"):
        return L + ["**Not measured yet**: this machine has no GPU "
                    f"({g.get('reason', g.get('error', 'section not run'))}). The suite runs a "
                    "batch-size sweep on CUDA, and the worker and the naive loop on it, by "
                    "itself when `torch.cuda.is_available()` (`streamclf bench --only gpu` on a "
                    "GPU machine).", ""]
    L += [f"Device: {g.get('device')}.", ""]
    L += _table(["batch size", "model msgs/s", "pipeline msgs/s", "batch p99 ms"],
                [[p["batch_size"], _n(p["model_msgs_per_s"]), _n(p["pipeline_msgs_per_s"]),
                  _n(p["batch_p99_ms"], 1)] for p in g.get("sweep", [])])
    if g.get("worker_msgs_per_s") is None:
        return L
    offline, naive = g.get("offline_msgs_per_s"), g.get("naive_msgs_per_s")

    def runs(key: str) -> str:
        return ", ".join(_n(v) for v in g.get(key) or [])

    L += [f"The worker on the GPU draining {_n(g.get('backlog'))} messages with "
          f"`{g.get('settings')}` (the GPU overlay's settings), and the same with "
          f"`input.decode_processes: {g.get('decode_processes')}`; each pair side by side. "
          "The offline ceiling is the sweep's best pipeline (reading, tokenizing and the "
          "model, one after another in one thread).", ""]
    rows = [["offline ceiling (best pipeline above)", _n(offline), "", ""],
            ["naive loop", _n(naive), "", ""]]
    for name, rate, key in (("worker", g.get("worker_msgs_per_s"), "worker_runs_msgs_per_s"),
                            ("worker, decoding processes", g.get("worker_decoding_msgs_per_s"),
                             "worker_decoding_runs_msgs_per_s")):
        rows.append([name, _n(rate), runs(key),
                     f"{_x(_ratio(rate, offline))} offline, {_x(_ratio(rate, naive))} naive"])
    L += _table(["", "msgs/s (median)", "each run", "ratios (targets: 0.9×, 20×)"], rows)
    if g.get("errors"):
        L += [f"Errors: {g['errors']}", ""]
    return L


def _levers_section(r: dict[str, Any]) -> list[str]:
    lv = r.get("levers") or {}
    L = ["## Levers (measured in the benchmarks, not in the worker)", ""]
    if "error" in lv or not lv:
        return L + [f"Not measured: {lv.get('error', 'section not run')}", ""]
    L += [f"Predict only, on the token ids of the {_n(lv.get('messages'))} messages, best of "
          "the passes.", "", "### Order within batches (batch 64)", "",
          "`sorted`: sort each batch by length before padding and restore the order after. "
          "`window`: sort 8 batches' worth of arriving records by length, then cut batches "
          "(what a worker could do with a larger buffer).", ""]
    L += _table(["threads", "order", "msgs/s", "real/padded tokens"],
                [[p["threads"], p["order"], _n(p["msgs_per_s"]), _n(p["padding_efficiency"], 2)]
                 for p in lv.get("sorting", [])])
    L += ["### Batch size (predict only, 1 torch thread)", ""]
    bs = lv.get("batch_size", [])
    sizes = sorted({p["batch_size"] for p in bs})
    threads = sorted({p["threads"] for p in bs})
    L += _table(["torch threads"] + [f"batch {b}" for b in sizes],
                [[n] + [_n(next((p["msgs_per_s"] for p in bs if p["threads"] == n
                                 and p["batch_size"] == b), None)) for b in sizes]
                 for n in threads])
    q = lv.get("quantization") or {}
    L += ["### Dynamic int8 quantization (`quantize_dynamic` on LSTM and Linear)", ""]
    L += _table(["threads", "batch", "fp32 msgs/s", "int8 msgs/s", "int8 / fp32"],
                [[p["threads"], p["batch_size"], _n(p["fp32_msgs_per_s"]),
                  _n(p["int8_msgs_per_s"]), _x(p["speedup"])] for p in q.get("speed", [])])
    if q.get("fp32") and q.get("int8"):
        rows = []
        for name in ["overall"] + sorted(q["fp32"]["by_source"]):
            a = q["fp32"]["overall"] if name == "overall" else q["fp32"]["by_source"][name]
            b = q["int8"]["overall"] if name == "overall" else q["int8"]["by_source"][name]
            rows.append([name, _n(a.get("n")), _n(a.get("f1"), 4), _n(b.get("f1"), 4),
                         f"{(b.get('f1') or 0) - (a.get('f1') or 0):+.4f}",
                         _n(a.get("roc_auc"), 4), _n(b.get("roc_auc"), 4)])
        L += ["Test split, the artifact's threshold:", ""]
        L += _table(["test set", "n", "F1 fp32", "F1 int8", "ΔF1", "AUC fp32", "AUC int8"], rows)
    return L
