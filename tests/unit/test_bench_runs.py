"""Which earlier benchmark runs (`streamclf bench --only ...`) still provide figures."""

from __future__ import annotations

from benchmarks.report import earlier_run_lines, summarize
from benchmarks.run import SECTIONS, still_providing


def _run(command: str, sections: list[str]) -> dict:
    return {"command": command, "sections": sections, "started": command}


def test_a_run_measured_again_in_full_drops_out() -> None:
    full = _run("streamclf bench", list(SECTIONS))
    latency = _run("streamclf bench --only latency", ["latency"])
    passthrough = _run("streamclf bench --only passthrough", ["passthrough"])
    # A second passthrough rerun replaces the first one's only section; the others stay.
    kept = still_providing([full, latency, passthrough], ["passthrough"])
    assert [r["command"] for r in kept] == [full["command"], latency["command"]]
    assert still_providing([latency], list(SECTIONS)) == []
    assert still_providing([], ["gpu"]) == []


def test_the_report_names_the_sections_each_earlier_run_still_provides() -> None:
    results = {
        "run": _run("streamclf bench --only passthrough", ["passthrough"]),
        "reruns": [_run("streamclf bench", list(SECTIONS)),
                   _run("streamclf bench --only latency", ["latency"])],
    }
    text = "\n".join(earlier_run_lines(results))
    assert "Sections latency come from an earlier run, `streamclf bench --only latency`" in text
    full_line = next(line for line in text.splitlines() if "`streamclf bench`" in line)
    assert "passthrough" not in full_line and "latency" not in full_line
    assert "offline" in full_line and "memory" in full_line


def test_worker_vs_offline_uses_the_ceiling_measured_beside_the_drains() -> None:
    results = {"offline": {"offline_msgs_per_s": 1000.0},
               "worker": {"worker_msgs_per_s": 900.0}}
    # Without the paired passes (older runs, --quick) the sweep's best is the reference.
    assert summarize(results)["worker_vs_offline"] == 0.9
    results["worker"]["offline_paired"] = {"msgs_per_s": 960.0}
    s = summarize(results)
    assert s["worker_vs_offline"] == 900 / 960
    assert s["worker_vs_offline_sweep_best"] == 0.9
    assert s["targets"]["worker >= 0.9 x offline"]["value"] == 900 / 960
