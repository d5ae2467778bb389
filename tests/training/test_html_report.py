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


def test_report_links_the_programme_performance_page_once_decisions_are_logged(trained_home, tmp_path):
    import shutil

    import pandas as pd

    from nbo.config import get_paths
    from serving.decisions import DecisionLog
    from serving.rules import ControlGroup, control_mask
    from training.performance import measure_home

    source, result = trained_home
    paths = get_paths(tmp_path / "home")  # a copy: the shared home's decision log stays as it is
    shutil.copytree(source.home, paths.home, ignore=shutil.ignore_patterns("decisions.sqlite*", "reports"))
    customers = pd.read_parquet(paths.raw / "customers.parquet")["customer_id"].astype(str).tolist()
    control = control_mask(customers, ControlGroup(share=0.3))
    start = int((pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=30)).timestamp())
    log = DecisionLog(paths.decisions)
    log.record([(f"d{i}", start + i, c, "web", "1", 0, None if held else "o1", 0, 0.1, 1.0, 1.0, 0,
                 "control" if held else "treatment", "o1") for i, (c, held) in enumerate(zip(customers, control))])
    log.close()
    html = write_report(paths, result["version"], tmp_path / "reports" / "model.html").read_text()
    assert '<a href="performance.html">' in html
    page = (tmp_path / "reports" / "performance.html").read_text()
    overall = measure_home(paths)["overall"]
    assert overall["treatment"] + overall["control"] == len(customers) and overall["control"] > 100
    assert f"{overall['treatment']:,} | {overall['control']:,}" in page and "data:image/png;base64," in page
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
