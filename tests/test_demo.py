"""`emo demo --quick`: the README's first command runs the whole pipeline on synthetic data."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_demo_quick_completes(tmp_path):
    from typer.testing import CliRunner

    from emo.cli import app

    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "SYNTHETIC" in text and "not on MELD" in text
    for path in ("runs/fit/model.pt", "runs/fit/eval_test.json", "runs/fit/curves.png",
                 "runs/ablate/results.md", "runs/ablate/results.png", "runs/ablate/results.csv",
                 "cache/manifest.json", "data/train_sent_emo.csv"):
        assert (out / path).is_file(), path
        assert str(out / path.split("/")[0]) in text
    rows = (out / "runs" / "ablate" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4  # header + text, audio, visual, text+audio+visual
