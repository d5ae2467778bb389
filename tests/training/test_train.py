import json
import re
import subprocess

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from features.training_set import TrainingSet
from nbo.config import MODEL_NAME
from training.dataset import split_by_time
from training.registry import connect, load_model
from training.train import train


def test_first_model_is_registered_as_champion_with_a_time_holdout_auc(trained_home):
    paths, result = trained_home
    client = connect(paths)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert str(champion.version) == result["version"]
    run = client.get_run(champion.run_id)
    assert run.data.metrics["test_auc"] > run.data.metrics["baseline_popularity_auc"]
    assert run.data.metrics["test_auc"] > 0.7
    assert pd.Timestamp(run.data.params["test_cutoff"]) < pd.Timestamp.now(tz="UTC")
    assert len(run.data.params["events_sha256"]) == 64
    features = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/features.json")["features"]
    assert load_model(client).booster.feature_name() == features


def test_the_training_run_is_named_and_tagged_with_its_data_span_commit_and_feature_count(trained_home):
    paths, result = trained_home
    client = connect(paths)
    run = client.get_run(client.get_model_version(MODEL_NAME, result["version"]).run_id)
    lineage = json.loads(paths.training_set.with_suffix(".json").read_text())
    first, last = lineage["cutoffs"][0][:10], lineage["cutoffs"][-1][:10]
    assert run.info.run_name == f"purchase-intent {first}..{last}"
    assert run.data.tags["data_span"] == f"{first}..{last} (+7 days of labels)"
    assert run.data.tags["feature_count"] == str(len(load_model(client).meta["features"]))
    commit = run.data.tags["git_commit"].removesuffix("-dirty")  # the checkout's commit then, HEAD or before it now
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    assert subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"]).returncode == 0


@pytest.mark.parametrize("gate_metric", ["test_auc", "test_log_loss", "test_ndcg_at_3"])
def test_a_model_that_does_not_beat_the_champion_stays_challenger(trained_home, monkeypatch, gate_metric):
    paths, first = trained_home
    import training.train as module

    monkeypatch.setattr(module, "PARAMS", {**module.PARAMS, "num_leaves": 2, "learning_rate": 0.001})
    second = train(paths, gate_metric)
    client = MlflowClient(paths.tracking_uri)
    assert not second["promoted"] and second["gate_metric"] == gate_metric
    worse = second["metrics"][gate_metric]
    assert (
        (second["champion_metric_before"] < worse)
        if gate_metric == "test_log_loss"
        else (second["champion_metric_before"] > worse)
    )  # log loss: lower is better
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == first["version"]
    assert str(client.get_model_version_by_alias(MODEL_NAME, "challenger").version) == second["version"]


def test_time_split_keeps_later_cutoffs_for_evaluation():
    rows = pd.DataFrame({"cutoff": pd.to_datetime(["2025-01-01", "2025-01-08", "2025-01-15", "2025-01-22"] * 2)})
    customers = pd.DataFrame({"customer_id": ["c1"], "cutoff": pd.to_datetime(["2025-01-01"])})
    split = split_by_time(TrainingSet(rows, customers))
    assert split.train["cutoff"].max() < split.valid["cutoff"].min() < split.test["cutoff"].min()
    assert split.customers is customers
    with pytest.raises(ValueError, match="at least 3 cutoffs"):
        split_by_time(TrainingSet(rows[rows["cutoff"] < "2025-01-15"], customers))


def test_the_gate_metric_knows_which_way_is_better_and_refuses_unknown_ones(tmp_path):
    from typer.testing import CliRunner

    from nbo.cli import app
    from training.train import beats, check_gate_metric

    assert beats(0.91, 0.90, "test_auc") and not beats(0.90, 0.90, "test_auc")
    assert beats(0.040, 0.045, "test_log_loss") and not beats(0.05, 0.045, "test_log_loss")
    assert beats(0.62, 0.60, "test_ndcg_at_3")
    with pytest.raises(ValueError, match="test_pr_auc"):
        check_gate_metric("accuracy")
    refused = CliRunner().invoke(app, ["train", "--gate-metric", "accuracy", "--home", str(tmp_path)])
    assert refused.exit_code == 2 and "gate metric 'accuracy'" in refused.output


def test_the_same_data_trains_to_the_same_metrics(trained_home):
    paths, first = trained_home
    again = train(paths)
    assert again["metrics"]["best_iteration"] == first["metrics"]["best_iteration"]
    for key in (
        "test_auc",
        "test_log_loss",
        "test_ece",
        "test_ndcg_at_3",
        "oracle_share_lightgbm",
    ):  # up to summation order
        assert again["metrics"][key] == pytest.approx(first["metrics"][key], rel=1e-12, abs=1e-15), key
    assert not again["promoted"]  # as good is not better
