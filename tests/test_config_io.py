"""emo.config reads TOML on every Python pyproject allows (3.10 has no tomllib) and writes the
resolved config whole or not at all."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from emo.config import build_config, read_toml, save_config
from emo.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Toy:
    epochs: int = 15
    lr: float = 1e-4
    modalities: tuple[str, ...] = ("text", "audio")
    out: Path | None = None


def test_saved_config_loads_back_verbatim_and_leaves_no_temporary(tmp_path):
    config = build_config(Toy, overrides={"epochs": "3", "modalities": "text", "out": "runs/x"})
    path = save_config(config, tmp_path / "run" / "config.toml", section="fit")
    assert path.read_text(encoding="utf-8").startswith("[fit]\n")
    assert build_config(Toy, path, section="fit") == config
    save_config(build_config(Toy, overrides={"epochs": "4"}), path, section="fit")  # replaces the old file
    assert read_toml(path)["fit"]["epochs"] == 4
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]


def test_a_malformed_toml_is_one_config_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[fit]\nepochs = [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        read_toml(bad)


def test_python_3_10_reads_toml_with_tomli():
    """On 3.10 emo.config must take the parser from tomli (a dependency there), not tomllib."""
    code = (
        "import sys, types, tomllib\n"
        "fake = types.ModuleType('tomli'); fake.load = tomllib.load; fake.TOMLDecodeError = tomllib.TOMLDecodeError\n"
        "sys.modules['tomli'] = fake; sys.version_info = (3, 10, 0, 'final', 0)\n"
        "import emo.config\n"
        "assert emo.config.tomllib is fake, emo.config.tomllib\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
