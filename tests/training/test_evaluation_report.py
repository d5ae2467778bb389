import json

import mlflow
import numpy as np
from mlflow import MlflowClient
from typer.testing import CliRunner

from nbo.cli import app
from nbo.config import MODEL_NAME
from training.dataset import load_training_set, split_by_time, to_matrix
from training.pyfunc import predict_proba, predict_uncalibrated
from training.registry import connect, load_model

MODELS = {"lightgbm", "lightgbm_uncalibrated", "popularity", "recency_frequency", "logistic"}


def champion_report(paths) -> tuple[dict, MlflowClient, str]:
    client = connect(paths)  # other tests point MLflow at their own homes
    run_id = client.get_model_version_by_alias(MODEL_NAME, "champion").run_id
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation/report.json"), client, run_id


def test_training_logs_a_report_with_every_model_segments_oracle_and_plots(trained_home):
    paths, result = trained_home
    report, client, run_id = champion_report(paths)
    assert set(report["models"]) == MODELS
    for metrics in report["models"].values():
        assert {"auc", "pr_auc", "log_loss", "ece", "ndcg_at_5", "hit_rate_at_1", "margin_at_3"} <= set(metrics)
    lgbm, popular = report["models"]["lightgbm"], report["models"]["popularity"]
    assert lgbm["auc"] > popular["auc"] and lgbm["ndcg_at_3"] > popular["ndcg_at_3"]
    assert set(report["segments"]["activity_tier"]) == {"inactive", "active", "very_active"}
    assert set(report["segments"]["value_tier"]) == {"meh", "good", "great"}
    share = report["oracle"]["share"]
    assert set(share) == MODELS | {"random"} and all(0 < v <= 1 for v in share.values())
    assert share["lightgbm"] > share["popularity"] > share["random"]
    assert result["metrics"]["oracle_share_lightgbm"] == share["lightgbm"]
    files = {f.path for f in client.list_artifacts(run_id, "evaluation")}
    assert {
        f"evaluation/{n}.png" for n in ("feature_importance", "calibration_curve", "cumulative_gain", "segment_metrics")
    } <= files


def test_the_registered_calibrator_is_loaded_and_applied(trained_home):
    paths, _ = trained_home
    model = load_model(connect(paths))
    split = split_by_time(load_training_set(paths)[0])
    matrix = to_matrix(split.test, split.customers, model.meta["declared_features"], model.meta["categories"])
    raw, calibrated = predict_uncalibrated(model, matrix), predict_proba(model, matrix)
    assert model.calibrator is not None and model.share is not None
    assert not np.allclose(raw, calibrated) and not np.allclose(raw, model.booster.predict(matrix))
    assert np.array_equal(np.argsort(raw, kind="stable"), np.argsort(calibrated, kind="stable"))


def test_evaluate_command_prints_and_writes_the_report(trained_home, tmp_path):
    paths, result = trained_home
    out = tmp_path / "report.json"
    outcome = CliRunner().invoke(app, ["evaluate", "--home", str(paths.home), "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    assert "oracle" in outcome.output and "recency_frequency" in outcome.output
    report = json.loads(out.read_text())
    logged, client, _ = champion_report(paths)
    assert report["model_version"] == str(client.get_model_version_by_alias(MODEL_NAME, "champion").version)
    assert set(report["models"]) == MODELS
    assert report["models"]["lightgbm"]["auc"] == logged["models"]["lightgbm"]["auc"]
