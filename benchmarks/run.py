"""The benchmark suite: `streamclf bench [--quick] [--only NAME,...] [--json FILE]`.

Sections (all on the same messages, in one run): offline, levers, naive, worker, passthrough,
latency, grid, memory, gpu. Writes the figures as JSON (default benchmarks/results/latest.json)
and docs/performance.md with its plots under docs/img/performance/.
With --only, the other sections' figures are kept from the existing JSON file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

SECTIONS = ("offline", "levers", "naive", "worker", "passthrough", "latency", "grid", "memory",
            "gpu")
DEFAULT_JSON = common.ROOT / "benchmarks" / "results" / "latest.json"
DEFAULT_DOC = common.ROOT / "docs" / "performance.md"
LINGER = "{linger_ms: 50, batch_size: 1048576}"
# Runs of the same code differ by up to ±10 % (worker, naive loop) and ±20 % (passthrough) on
# this shared machine: these sections run several times and report the median.
PASSTHROUGH_RUNS = 3  # unprofiled passthrough runs per backlog
WORKER_RUNS = 3  # worker drains with the default settings
NAIVE_RUNS = 3
GPU_WORKER_SETTINGS = {"model.device": "cuda", "batching.max_batch_size": 256}  # the GPU overlay's


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="streamclf bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (a smoke test, under 2 minutes)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"results file (default {DEFAULT_JSON.relative_to(common.ROOT)})")
    parser.add_argument("--only", default="",
                        help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC,
                        help="markdown report to write (default docs/performance.md)")
    parser.add_argument("--no-doc", action="store_true", help="write the JSON only")
    parser.add_argument("--doc-only", action="store_true",
                        help="rewrite the report from the JSON file, measure nothing")
    parser.add_argument("--crc32c-path", type=Path,
                        help="without the `crc32c` package installed: a folder holding it "
                        "(pip install --target DIR crc32c) for the CRC32C comparison runs")
    parser.add_argument("--data", type=Path, default=common.DATA_DIR,
                        help="folder with the shared data")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    return args


class Suite:
    """Runs the sections in order; each reads what earlier ones found from `self.results`."""

    def __init__(self, args: argparse.Namespace, results: dict[str, Any]) -> None:
        self.args = args
        self.quick = args.quick
        self.results = results
        self.repeats = 1 if args.quick else 2
        self.messages = common.load_messages(args.data, quick=args.quick)
        self.log_dir = Path(tempfile.mkdtemp(prefix="streamclf-bench-logs-"))
        self._predictor: Any = None
        self.bootstrap = ""

    @property
    def predictor(self) -> Any:
        if self._predictor is None:
            from benchmarks.offline import load_predictor

            self._predictor = load_predictor("cpu")
        return self._predictor

    def worker_rate(self) -> float:
        """The worker's backlog throughput at the default settings (measured if missing)."""
        rate = (self.results.get("worker") or {}).get("worker_msgs_per_s")
        if not rate:
            self.results["worker"] = self.worker()
            rate = self.results["worker"]["worker_msgs_per_s"]
        return float(rate)

    def crc_variant(self) -> tuple[str, dict[str, str]] | None:
        """The other CRC32C implementation for kafka-python, as (label, env) for a subprocess.

        With the `crc32c` package installed, a folder holding a `crc32c` module that fails to
        import goes first on PYTHONPATH (kafka-python then falls back to pure Python); without
        it, --crc32c-path supplies the package."""
        if importlib.util.find_spec("crc32c"):
            stub = self.log_dir / "no-crc32c"
            stub.mkdir(exist_ok=True)
            (stub / "crc32c.py").write_text("raise ImportError('hidden by the benchmark')\n")
            return "pure-Python CRC32C", {"PYTHONPATH": str(stub)}
        path = self.args.crc32c_path
        if path is not None and (path / "crc32c").exists():
            return "crc32c C package", {"PYTHONPATH": str(path)}
        return None

    # -- sections -------------------------------------------------------------------------------

    def offline(self) -> dict[str, Any]:
        from benchmarks.offline import BATCH_SIZES, ceiling, length_sweep

        sizes = (16, 64) if self.quick else BATCH_SIZES
        threads = (1,) if self.quick else (1, 2)
        out = ceiling(self.predictor, self.messages, self.repeats, sizes, threads, lanes=(1, 2))
        out["length_sweep"] = length_sweep(self.predictor, self.messages, self.repeats)
        return out

    def levers(self) -> dict[str, Any]:
        from benchmarks.offline import levers
        from model.evaluate import load_eval_examples

        paths = [self.args.data / "spamassassin.jsonl.gz", self.args.data / "sms_spam.jsonl.gz"]
        examples = load_eval_examples(paths, "test")
        if self.quick:
            return levers(self.predictor, self.messages, 1, examples[::12], (1,), (16, 64))
        return levers(self.predictor, self.messages, self.repeats, examples)

    def naive(self) -> dict[str, Any]:
        from benchmarks.throughput import naive

        runs = [naive(self.bootstrap, self.messages, self.predictor,
                      limit_s=8 if self.quick else 30)
                for _ in range(1 if self.quick else NAIVE_RUNS)]
        rates = [run["naive_msgs_per_s"] for run in runs]
        return {**runs[rates.index(median(rates))], "runs_msgs_per_s": rates}

    def worker(self) -> dict[str, Any]:
        from benchmarks.offline import source_records
        from benchmarks.throughput import session

        times = 1 if self.quick else 3  # a backlog of a few seconds' work
        backlog = common.repeated(self.messages, times, "b")
        repeats = 1 if self.quick else WORKER_RUNS
        variants = {"default": {}} if self.quick else {
            "default": {}, "lanes=1": {"model.lanes": 1},
            "quantize=int8": {"model.quantize": "int8"}}
        variants.update({f"default, run {k}": {} for k in range(2, repeats + 1)})
        best = (self.results.get("offline") or {}).get("best")
        records = source_records(list(self.messages) * times)  # the drain's messages, in-process
        paired: list[dict[str, Any]] = []
        runs = {}
        for name, settings in variants.items():
            if name.startswith("default") and best and not self.quick:
                paired.append(self.paired_ceiling(best, records))
            runs[name] = session(self.bootstrap, settings, backlog, log_dir=self.log_dir)
        defaults = [run for name, run in runs.items() if name.startswith("default")]
        crc = self.crc_variant()
        if crc:
            runs[f"lanes=1, {crc[0]}"] = session(self.bootstrap, {"model.lanes": 1}, backlog,
                                                 log_dir=self.log_dir, env=crc[1])
        for run in runs.values():
            run.pop("settings", None)
        rate, rates = median_rate(defaults)
        out = {
            "backlog": len(backlog),
            "worker_msgs_per_s": rate,
            "runs_msgs_per_s": rates,
            "timing": "from the first result to the last (group join and model load excluded)",
            "runs": runs,
        }
        if paired:
            ceiling_rates = [p["msgs_per_s"] for p in paired]
            out["offline_paired"] = {
                "msgs_per_s": median(ceiling_rates), "runs_msgs_per_s": ceiling_rates,
                "config": {k: best.get(k) for k in ("threads", "lanes", "batch_size", "window")},
                "messages": paired[0]["messages"]}
        return out

    def paired_ceiling(self, best: dict[str, Any], records: list[Any]) -> dict[str, Any]:
        """One offline pass at the ceiling's best settings over as many messages as a drain,
        run just before that drain: the machine's speed drifts by minutes, and the sweep's best
        is the fastest of many passes, so the ratio compares medians measured side by side."""
        from benchmarks.offline import pipeline_pass, torch_threads

        with torch_threads(best.get("threads", 1)):
            return pipeline_pass(self.predictor, records, best["batch_size"],
                                 best.get("window", 1), best.get("lanes", 1))

    def passthrough(self) -> dict[str, Any]:
        from benchmarks.throughput import copy_loop, session
        from worker.app import available_cores

        mix = common.repeated(self.messages, 1 if self.quick else 5, "b")
        short = common.short_messages(10_000 if self.quick else 50_000, self.args.data)
        # Runs of the same code differ by up to ±20 % on a shared machine: report the median of
        # several unprofiled runs (each a fresh worker and topic), and profile a separate run.
        repeats = 1 if self.quick else PASSTHROUGH_RUNS
        # The mix again with its reading in `input.decode_processes` (one per core), each run
        # beside one without, as the machine's speed drifts by minutes.
        processes = available_cores()
        on_mix, on_mix_decoding = self.side_by_side(
            [{}, {"input.decode_processes": processes}], mix, repeats, noop=True)
        on_short = [session(self.bootstrap, {}, short, noop=True, log_dir=self.log_dir)
                    for _ in range(repeats)]
        # The client's own ceiling on the same backlog: a bare kafka-python copy loop.
        copies = [copy_loop(self.bootstrap, short) for _ in range(repeats)]
        profiled = session(self.bootstrap, {}, short, noop=True, log_dir=self.log_dir,
                           profile_s=3 if self.quick else 8)
        # The same messages with `input.format: text`: no email reading, so what is left is the
        # Kafka path on these record sizes (emails are KBs, results ~250 bytes). Four times the
        # backlog: it drains in well under a second otherwise.
        mix_long = mix if self.quick else common.repeated(self.messages, 20, "b")
        as_text = session(self.bootstrap, {"input.format": "text"}, mix_long, noop=True,
                          log_dir=self.log_dir)
        # A lever: fewer, larger produce batches (fewer sender wake-ups per record).
        linger = {} if self.quick else session(self.bootstrap, {"kafka.producer": LINGER},
                                               short, noop=True, log_dir=self.log_dir)
        out = {}
        crc = self.crc_variant()
        if crc:
            other = session(self.bootstrap, {}, mix, noop=True, log_dir=self.log_dir, env=crc[1])
            out["mix_crc_variant"] = {"backlog": len(mix), "variant": crc[0], **other["drain"]}
        mix_rate, mix_runs = median_rate(on_mix)
        decoding_rate, decoding_runs = median_rate(on_mix_decoding)
        short_rate, short_runs = median_rate(on_short)
        copy_rate, copy_runs = median_rate([{"drain": c} for c in copies])
        return {
            **out,
            "passthrough_msgs_per_s": mix_rate,
            "passthrough_short_msgs_per_s": short_rate,
            "client_copy_loop_msgs_per_s": copy_rate,
            "passthrough_decoding_msgs_per_s": decoding_rate,
            "mix": {"backlog": len(mix), "msgs_per_s": mix_rate, "runs_msgs_per_s": mix_runs},
            "mix_decoding": {"backlog": len(mix), "decode_processes": processes,
                             "msgs_per_s": decoding_rate, "runs_msgs_per_s": decoding_runs},
            "short": {"backlog": len(short), "msgs_per_s": short_rate,
                      "runs_msgs_per_s": short_runs},
            "mix_as_text": {"backlog": len(mix_long), **as_text.get("drain", {})},
            "copy_loop": {"backlog": len(short), "msgs_per_s": copy_rate,
                          "runs_msgs_per_s": copy_runs,
                          "errors": [c["error"] for c in copies if "error" in c]},
            "short_profiled": {"backlog": len(short), **profiled.get("drain", {})},
            "short_linger": {"backlog": len(short), "kafka.producer": LINGER,
                             **linger.get("drain", {})},
            "profile": profiled.get("profile") or {"error": "py-spy not installed"},
        }

    def latency(self) -> dict[str, Any]:
        from benchmarks.latency import VARIANTS, load_sweep, variants

        seconds = 3 if self.quick else 8
        out = load_sweep(self.bootstrap, self.messages, self.worker_rate(),
                         phase_seconds=seconds, log_dir=self.log_dir)
        names = list(VARIANTS)[-1:] if self.quick else list(VARIANTS)
        out["variants_at_50pct"] = variants(self.bootstrap, self.messages, self.worker_rate(),
                                            phase_seconds=seconds, log_dir=self.log_dir,
                                            names=names)
        return out

    def grid(self) -> dict[str, Any]:
        from benchmarks.latency import grid

        waits, sizes = ((5, 50), (64,)) if self.quick else ((5, 20, 50), (16, 64, 256))
        offered = round(0.25 * self.worker_rate(), 1)  # well below every setting's capacity
        points = grid(self.bootstrap, self.messages, offered, waits, sizes,
                      phase_seconds=2 if self.quick else 5, log_dir=self.log_dir)
        from benchmarks.latency import GRID_BASE

        return {"offered_msgs_per_s": offered, "base": GRID_BASE, "points": points}

    def memory(self) -> dict[str, Any]:
        from benchmarks.memory import peak_rss

        if self.quick:
            return peak_rss(self.bootstrap, (20_000,), big_in_flight=None, log_dir=self.log_dir)
        return peak_rss(self.bootstrap, (10_000, 100_000), log_dir=self.log_dir)

    def side_by_side(self, variants: list[dict[str, Any]], backlog: list[tuple[bytes, bytes]],
                     runs: int, **options: Any) -> list[list[dict[str, Any]]]:
        """`runs` sessions of each settings variant, one of each in turn (the machine's speed
        drifts by minutes); the sessions per variant."""
        from benchmarks.throughput import session

        out: list[list[dict[str, Any]]] = [[] for _ in variants]
        for _ in range(runs):
            for sessions, settings in zip(out, variants, strict=True):
                sessions.append(session(self.bootstrap, settings, backlog, log_dir=self.log_dir,
                                        **options))
        return out

    def gpu(self) -> dict[str, Any]:
        from benchmarks.offline import gpu, load_predictor
        from benchmarks.throughput import naive
        from worker.app import available_cores

        out = gpu(self.messages, self.repeats)
        if not out.get("measured"):
            return out
        # The worker as the GPU overlay runs it (deploy/k8s/overlays/gpu), then with its reading
        # in processes on the spare cores: with the model on the GPU, reading emails is most of
        # what is left on the CPU.
        on_gpu = dict(GPU_WORKER_SETTINGS)
        processes = max(1, available_cores() - 2)
        decoding = {**on_gpu, "input.decode_processes": processes}
        backlog = common.repeated(self.messages, 1 if self.quick else 10, "b")
        plain, spread = self.side_by_side([on_gpu, decoding], backlog,
                                          1 if self.quick else WORKER_RUNS)
        naive_run = naive(self.bootstrap, self.messages, load_predictor("cuda"),
                          limit_s=8 if self.quick else 30)
        worker_rate, worker_runs = median_rate(plain)
        decoding_rate, decoding_runs = median_rate(spread)
        out.update({
            "offline_msgs_per_s": max(p["pipeline_msgs_per_s"] for p in out["sweep"]),
            "naive_msgs_per_s": naive_run["naive_msgs_per_s"],
            "worker_msgs_per_s": worker_rate, "worker_runs_msgs_per_s": worker_runs,
            "worker_decoding_msgs_per_s": decoding_rate,
            "worker_decoding_runs_msgs_per_s": decoding_runs,
            "decode_processes": processes, "backlog": len(backlog), "settings": on_gpu,
            "errors": [r["error"] for r in plain + spread if "error" in r],
        })
        return out


def still_providing(earlier: list[dict[str, Any]], now: list[str]) -> list[dict[str, Any]]:
    """The earlier runs (oldest first) whose figures are still in the results: a run all of
    whose sections were measured again by a later run drops out."""
    from benchmarks.report import provided_sections

    return [run for run, own in provided_sections(earlier, now, SECTIONS) if own]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.doc_only:
        from benchmarks.report import write_doc

        write_doc(json.loads(args.json.read_text()), args.doc)
        return 0
    results: dict[str, Any] = {}
    if args.only and args.json.exists():
        results = json.loads(args.json.read_text())  # keep the sections not rerun
    from worker.broker import EmbeddedBroker

    started = time.monotonic()
    if args.only and "run" in results:
        earlier = [*results.get("reruns", []), results.pop("run")]
        results["reruns"] = still_providing(earlier, args.sections)
    results["run"] = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "streamclf bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "sections": args.sections,
        "loadavg_start": common.loadavg(),
    }
    results["machine"] = common.machine_info()
    suite = Suite(args, results)
    results["messages"] = message_summary(suite.messages)
    failed = []
    with EmbeddedBroker() as broker:
        suite.bootstrap = broker.bootstrap
        for name in SECTIONS:
            if name not in args.sections:
                continue
            section: Callable[[], dict[str, Any]] = getattr(suite, name)
            t0 = time.monotonic()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            try:
                results[name] = section()
            except Exception as exc:  # one broken section must not lose the others
                traceback.print_exc()
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                failed.append(name)
            results[name]["section_s"] = round(time.monotonic() - t0, 1)
            print(f"[bench] {name}: {results[name]['section_s']} s", file=sys.stderr, flush=True)
    results["run"]["loadavg_end"] = common.loadavg()
    results["run"]["duration_s"] = round(time.monotonic() - started, 1)
    from benchmarks.report import summarize, write_doc

    results["summary"] = summarize(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"[bench] wrote {args.json}", file=sys.stderr)
    if not args.no_doc:
        write_doc(results, args.doc)
        print(f"[bench] wrote {args.doc}", file=sys.stderr)
    print(json.dumps(results["summary"], indent=1), flush=True)
    return 1 if failed else 0


def message_summary(messages: list[common.Message]) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for m in messages:
        kinds[m.kind] = kinds.get(m.kind, 0) + 1
    return {"count": len(messages), "by_kind": kinds,
            "mean_bytes": round(sum(len(m.value) for m in messages) / max(1, len(messages)))}


def median_rate(sessions: list[dict[str, Any]]) -> tuple[float | None, list[float]]:
    """The median drain rate of several runs, and every run's rate (in run order)."""
    rates = [s["drain"]["msgs_per_s"] for s in sessions if "msgs_per_s" in s.get("drain", {})]
    return (median(rates) if rates else None), rates


def median(values: list[float]) -> float:
    """The middle value (of an odd count; the mean of the two middle ones otherwise)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


if __name__ == "__main__":
    sys.exit(main())
