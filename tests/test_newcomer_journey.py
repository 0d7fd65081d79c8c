"""A newcomer's first hour (issue #21), run as a test: bench/newcomer.py copies this checkout as a
clean clone sees it, makes a fresh venv, and runs the README's "Quick start" and "On MELD" commands
literally with bash, bare `emo` as printed. The fresh venv sees this venv's packages through a .pth
file (`--reuse-venv`), so the literal `pip install -e ...` line only installs emo itself; the
README's install-time figure comes from the same script without that option."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_readme_quick_start_and_meld_sections_run_as_printed(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("bench/newcomer.py copies a git checkout (git ls-files); this tree is not one")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "newcomer.py"), "--work", str(tmp_path), "--reuse-venv", sys.prefix],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    log = (tmp_path / "journey.log").read_text(encoding="utf-8") if (tmp_path / "journey.log").exists() else ""
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{log[-3000:]}"
    report = json.loads((tmp_path / "figures.json").read_text())
    commands = [step["command"] for step in report["steps"]]
    assert any(c.startswith("python3 -m venv .venv && . .venv/bin/activate") for c in commands)
    assert any(c.startswith("emo fit ") for c in commands) and any(c.startswith("emo ablate ") for c in commands)
    assert "Traceback" not in log and "command not found" not in log
