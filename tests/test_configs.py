"""The example configs in configs/ load as the verbs would load them, and say how to run them."""

from __future__ import annotations

from pathlib import Path

import pytest

from emo.config import build_config, read_toml

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_example_config_loads_and_names_its_command(path):
    from emo.extract.config import ExtractConfig
    from emo.fuse.config import FitConfig

    sections = read_toml(path)
    assert path.read_text().startswith("#") and "emo " in path.read_text().split("[")[0], "a header with the command"
    for section, cls in (("fit", FitConfig), ("extract", ExtractConfig)):
        if section in sections:
            build_config(cls, path, {}, section=section).validate()
