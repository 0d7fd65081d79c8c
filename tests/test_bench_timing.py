"""bench/_timing.py, the rule every bench/ script follows: interleaved rounds, medians with
their spread, and no figure when other work (the load average less the bench's own busy
cores) takes over half the cores. The clock and the load average are the only inputs faked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import _timing  # noqa: E402


@pytest.fixture
def timing(monkeypatch):
    loads = iter([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    monkeypatch.setattr(_timing.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    return _timing.Timing(cores=2)


def test_sides_run_interleaved_and_a_ratio_is_the_median_of_the_rounds(timing):
    order = []
    values = {"a": iter([2.0, 2.2, 2.6]), "b": iter([1.0, 1.0, 1.0])}
    sides = {name: (lambda name=name: order.append(name) or next(values[name])) for name in ("a", "b")}
    results = timing.interleave(sides, repeats=3)
    assert order == ["a", "b"] * 3 and results == {"a": [2.0, 2.2, 2.6], "b": [1.0, 1.0, 1.0]}
    line = timing.ratio("a / b", results["a"], results["b"], "(target <= 3x)")
    assert line == "a / b: 2.20x (median of 3 interleaved rounds, spread 2.00-2.60)  (target <= 3x)"
    assert timing.finish() == 0


def test_the_bench_own_load_is_not_other_work_but_other_work_is_refused(timing, capsys):
    timing.loads.append(("round 1", 2.4, 1.9))  # a pipeline's own three processes on two cores
    assert timing.busy() is None
    assert timing.figure("rate", [3.0, 3.2], "clips/s").startswith("rate: 3.10 clips/s (median of 2")
    timing.loads.append(("round 2", 3.1, 1.9))  # 1.2 cores of someone else's work
    refused = timing.ratio("a / b", [2.0], [1.0])
    assert (
        refused.startswith("a / b: not measured (load average 3.10 (round 2)") and "1.20 cores of other work" in refused
    )
    assert timing.finish() == _timing.NOT_MEASURED_EXIT
    assert "Nothing above is a figure to quote" in capsys.readouterr().out


def test_allow_load_prints_the_figure_marked(timing):
    timing.allow_load = True
    timing.loads.append(("round 1", 3.5, 1.0))
    line = timing.ratio("a / b", [2.0], [1.0])
    assert line.startswith("a / b: 2.00x") and "[--allow-load:" in line and "not a figure to quote" in line
    assert timing.finish() == 0
