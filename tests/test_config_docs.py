"""docs/configuration.md stays true: it names every key, and its example loads."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from cachefs.config import default_config, load_config
from cachefs.config.schema import leaves

DOC = Path(__file__).parent.parent / "docs" / "configuration.md"


def test_every_key_is_documented() -> None:
    doc = DOC.read_text()
    for path in leaves():
        assert f"| `{path[-1]}` |" in doc, path  # a row of a key table
    for old in ("prefetch_threshold", "min_confidence"):
        assert f"`{old}`" in doc  # old names are documented as such


def test_the_complete_example_loads_without_notes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (example,) = re.findall(r"### A complete example\n\n```toml\n(.*?)```", DOC.read_text(), re.S)
    path = tmp_path / "example.toml"
    path.write_text(example)
    with caplog.at_level(logging.WARNING, logger="cachefs.config"):
        cfg = load_config(path)
    assert [r for r in caplog.records if r.name == "cachefs.config"] == []
    assert cfg.rules  # the example's rules
    assert cfg.tiers == default_config().tiers
    assert cfg.content_types == default_config().content_types
