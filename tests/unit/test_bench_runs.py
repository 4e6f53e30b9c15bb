"""Which earlier benchmark runs (`streamclf bench --only ...`) still provide figures."""

from __future__ import annotations

from benchmarks.report import earlier_run_lines
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
