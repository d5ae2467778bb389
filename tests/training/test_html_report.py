"""The HTML report of a trained run: one self-contained file."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from features.segments import ACTIVITY_TIERS, VALUE_TIERS
from nbo.cli import app
from training.html_report import write_report


def test_report_is_self_contained(trained_home, tmp_path):
    paths, result = trained_home
    out = write_report(paths, result["version"], tmp_path / "report.html")
    html = out.read_text()
    for name in ("lightgbm", "popularity", "recency_frequency", "logistic"):
        assert f">{name}<" in html
    assert any(f">{tier}<" in html for tier in (*ACTIVITY_TIERS, *VALUE_TIERS))
    assert "data:image/png;base64," in html
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)


def test_report_command_writes_the_champion(trained_home, tmp_path):
    paths, _ = trained_home
    out = tmp_path / "champion.html"
    result = CliRunner().invoke(app, ["report", "--out", str(out), "--home", str(paths.home)])
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_report_command_fails_clearly_without_a_model(tmp_path):
    result = CliRunner().invoke(app, ["report", "--version", "99", "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert "no model version 99" in result.output
