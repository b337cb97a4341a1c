"""docs/configuration.md is generated from the settings and must not fall behind them."""

from __future__ import annotations

from pathlib import Path

from streamwatch.config import Settings
from streamwatch.config_docs import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_reference_is_current() -> None:
    assert DOC.read_text() == render(), (
        "docs/configuration.md is stale: regenerate it with "
        "`.venv/bin/python -m streamwatch.config_docs > docs/configuration.md`"
    )


def test_every_setting_is_documented_with_its_environment_variable() -> None:
    text = render()
    for section, info in Settings.model_fields.items():
        if section == "models":
            continue
        assert f"\n## {section}\n" in text
        assert info.annotation is not None
        for name in info.annotation.model_fields:  # type: ignore[union-attr]
            assert f"`STREAMWATCH_{section.upper()}__{name.upper()}`" in text, (section, name)
