"""What `nbo train` prints: a short table and the gate's verdict for people, every metric with --json."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

import training.commands
from nbo.cli import app
from training.commands import describe_gate, working

LIFETIME = {
    "customers": 800,
    "file": "lifetime.parquet",
    "tiers": {"great": 160, "good": 320, "meh": 320},
    "holdout_auc": 0.77,
    "holdout_rmse": 1.8,
    "holdout_total_error": -0.05,
    "version": "1",
    "promoted": True,
    "gate": {"promoted": True, "reason": "no champion"},
}


@pytest.fixture
def quick_train(trained_home, monkeypatch):
    """`nbo train` on the trained home, answering with the fixture's training result (the training is tested apart)."""
    import training.lifetime.values
    import training.train

    paths, trained = trained_home
    monkeypatch.setattr(training.train, "train", lambda paths, gate_metric, sample_rate=None: dict(trained))
    monkeypatch.setattr(training.lifetime.values, "fit_lifetime", lambda paths: dict(LIFETIME))
    return paths, trained


def test_train_prints_the_model_against_its_baselines_and_the_gates_verdict(quick_train):
    paths, trained = quick_train
    done = CliRunner().invoke(app, ["train", "--home", str(paths.home)], terminal_width=120)
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert len(lines) < 25 and not done.output.lstrip().startswith("{"), done.output
    header = next(line for line in lines if "AUC" in line)
    assert all(column in header for column in ("PR-AUC", "NDCG@3", "oracle share"))
    metrics = trained["metrics"]
    rows = {line.split()[1]: line for line in lines if line.startswith("│")}
    assert {"lightgbm", "popularity", "recency_frequency", "logistic", "random"} <= set(rows)
    assert f"{metrics['test_auc']:.4f}" in rows["lightgbm"] and f"{metrics['test_ndcg_at_3']:.4f}" in rows["lightgbm"]
    assert f"{metrics['baseline_popularity_pr_auc']:.4f}" in rows["popularity"]
    assert f"{metrics['oracle_share_random']:.1%}" in rows["random"]
    assert "gate (test_auc): " in done.output and f"v{trained['version']}" in done.output
    assert "lifetime value of 800 customers" in done.output and "AUC of buying again 0.7700" in done.output
    assert "done " not in done.output  # no spinner lines outside a terminal


def test_train_json_keeps_every_metric_for_machines(quick_train):
    paths, trained = quick_train
    done = CliRunner().invoke(app, ["train", "--json", "--home", str(paths.home)])
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    assert result["metrics"] == pytest.approx(trained["metrics"]) and result["lifetime"] == LIFETIME
    assert result["version"] == trained["version"] and "promoted" in result


@pytest.mark.parametrize(
    "before, promoted, verdict",
    [
        (None, True, "gate (test_auc): no champion before; v3 (0.8123) is the champion"),
        ("2", True, "gate (test_auc): v3 0.8123 against champion v2 0.8000: [green]promoted[/], v3 is the champion"),
        (
            "2",
            False,
            (
                "gate (test_auc): v3 0.8123 against champion v2 0.8000: [yellow]not promoted[/], v2 stays "
                "champion, v3 is challenger"
            ),
        ),
    ],
)
def test_the_gates_verdict_says_which_version_is_champion(before, promoted, verdict):
    result = {
        "version": "3",
        "gate_metric": "test_auc",
        "metrics": {"test_auc": 0.8123},
        "promoted": promoted,
        "champion_before": before,
        "champion_metric_before": 0.8 if before else None,
    }
    assert describe_gate(result) == verdict


def test_a_long_step_shows_a_spinner_on_a_terminal_only(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(training.commands, "console", Console(file=screen, force_terminal=True, width=100))
    with working("fitting"):
        pass
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert "fitting 0:00:00" in shown and "done fitting in 0.0 s" in shown
    for quiet, terminal in ((True, True), (False, False)):
        screen = io.StringIO()
        monkeypatch.setattr(training.commands, "console", Console(file=screen, force_terminal=terminal, width=100))
        with working("fitting", quiet):
            pass
        assert screen.getvalue() == ""
