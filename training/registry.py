"""MLflow tracking and the model registry: log a run, register it, move the aliases, load a model.

Every version that becomes champion is appended to the registered model's ``champion_history`` tag
(comma-separated versions), so that a rollback knows which champion came before.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from scipy.special import expit

from features.definitions import select_features
from nbo.config import MODEL_NAME, Paths
from training.affinity import CategoryShare, ShareInputs, compute_log_share, locate_inputs
from training.calibration import Calibrator, calibrate
from training.dataset import CATEGORY_FEATURE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EXPERIMENT = "nbo-purchase-intent"
META_FILE = "nbo_model.json"
CALIBRATOR_FILE = "calibrator.json"
HISTORY_TAG = "champion_history"


@dataclass
class LoadedModel:
    """A registered model version with what serving needs to rebuild its inputs."""

    booster: lgb.Booster
    meta: dict
    version: str
    calibrator: Calibrator | None = None
    share: tuple[CategoryShare, ShareInputs] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        """Read the category share (the booster's offset) from the meta, once."""
        if "category_share" in self.meta:
            share = CategoryShare.from_dict(self.meta["category_share"])
            self.share = share, locate_inputs(share, self.meta["features"], CATEGORY_FEATURE)


def predict_uncalibrated(model: LoadedModel, matrix: np.ndarray) -> np.ndarray:
    """The model's probabilities before calibration: the booster's score plus its category-share offset."""
    if model.share is None:
        return model.booster.predict(matrix, num_threads=1)
    raw = model.booster.predict(matrix, raw_score=True, num_threads=1) + compute_log_share(*model.share, matrix)
    return expit(raw)


def predict_proba(model: LoadedModel, matrix: np.ndarray) -> np.ndarray:
    """Calibrated purchase probabilities of model input rows (uncalibrated ones for models without a calibrator)."""
    raw = predict_uncalibrated(model, matrix)
    return raw if model.calibrator is None else calibrate(model.calibrator, raw)


def connect(paths: Paths, experiment: str = EXPERIMENT) -> MlflowClient:
    """Point MLflow at the home's tracking store and an experiment; artifacts go beside it."""
    mlflow.set_tracking_uri(paths.tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        paths.artifacts.mkdir(parents=True, exist_ok=True)
        mlflow.create_experiment(experiment, artifact_location=paths.artifacts.as_uri())
    mlflow.set_experiment(experiment)
    return open_client(paths)


def open_client(paths: Paths) -> MlflowClient:
    """A client bound to the home's tracking store and registry, whatever the process-wide URIs are."""
    return MlflowClient(tracking_uri=paths.tracking_uri, registry_uri=paths.tracking_uri)


def log_model(model: LoadedModel, example: pd.DataFrame, params: dict, metrics: dict[str, float], report: dict,
              figures: dict[str, Figure]) -> str:
    """Log one training run (with its calibrator, evaluation report and plots) and register its model;
    return the new version. The logged booster alone gives neither the category-share offset nor the
    calibration: load it with load_model and score with predict_proba."""
    booster, calibrator, meta = model.booster, model.calibrator, model.meta
    with mlflow.start_run():
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.log_dict(meta, META_FILE)
        mlflow.log_dict({"features": meta["features"]}, "features.json")
        mlflow.log_dict(calibrator.to_dict(), CALIBRATOR_FILE)
        mlflow.log_dict(report, "evaluation/report.json")
        for name, figure in figures.items():
            mlflow.log_figure(figure, f"evaluation/{name}.png")
        signature = infer_signature(example, predict_proba(model, example.to_numpy()))
        info = mlflow.lightgbm.log_model(booster, name="model", signature=signature, input_example=example,
                                         registered_model_name=MODEL_NAME,
                                         pip_requirements=[f"lightgbm=={lgb.__version__}", f"numpy=={np.__version__}"])
    return str(info.registered_model_version)


def load_model(client: MlflowClient, alias: str = "champion", version: str | None = None) -> LoadedModel | None:
    """The given version, else the version under an alias; None when there is no such version. Everything is read
    through the client's own tracking URI, never the process-wide one, so threads with other homes do not interfere."""
    try:
        found = (client.get_model_version(MODEL_NAME, version) if version
                 else client.get_model_version_by_alias(MODEL_NAME, alias))
    except mlflow.exceptions.MlflowException:
        return None
    files = {f.path for f in client.list_artifacts(found.run_id)}
    with tempfile.TemporaryDirectory() as folder:
        location = client.get_model_version_download_uri(MODEL_NAME, found.version)
        booster = mlflow.lightgbm.load_model(mlflow.artifacts.download_artifacts(artifact_uri=location,
                                                                                 dst_path=folder))
        meta = json.loads(Path(client.download_artifacts(found.run_id, META_FILE, folder)).read_text())
        calibrator = (Calibrator.from_dict(json.loads(Path(client.download_artifacts(found.run_id, CALIBRATOR_FILE,
                                                                                     folder)).read_text()))
                      if CALIBRATOR_FILE in files else None)
    return LoadedModel(booster, meta, str(found.version), calibrator)


def set_alias(client: MlflowClient, alias: str, version: str) -> None:
    """Point an alias (champion, challenger) at a version."""
    client.set_registered_model_alias(MODEL_NAME, alias, version)


def champion_history(client: MlflowClient) -> list[str]:
    """The versions that became champion, oldest first (empty before the first registration)."""
    try:
        tag = client.get_registered_model(MODEL_NAME).tags.get(HISTORY_TAG, "")
    except mlflow.exceptions.MlflowException:
        return []
    return [v for v in tag.split(",") if v]


def check_servable(client: MlflowClient, version: str) -> None:
    """Raise ValueError unless serving can use the version: it loads, its booster's features are its meta's,
    its declared features are declared in features.definitions, and it scores a row of NaNs."""
    try:
        model = load_model(client, version=version)
    except Exception as error:  # a corrupt version fails in MLflow, LightGBM or JSON: all mean "refuse"
        raise ValueError(f"version {version} cannot be loaded: {error}") from error
    if model is None:
        raise ValueError(f"version {version} cannot be loaded")
    if model.booster.feature_name() != model.meta.get("features"):
        raise ValueError(f"version {version}: the booster's features differ from its meta's feature list")
    try:
        select_features(model.meta.get("declared_features", []))
    except KeyError as error:
        raise ValueError(f"version {version}: {error.args[0]}") from error
    probability = predict_proba(model, np.full((1, model.booster.num_feature()), np.nan))
    if not (np.isfinite(probability).all() and ((probability >= 0) & (probability <= 1)).all()):
        raise ValueError(f"version {version} predicts {probability} for a row of missing values")


def promote(client: MlflowClient, version: str) -> None:
    """Make a servable version champion and append it to the champion history; an unknown version raises
    MlflowException, an unservable one ValueError, and the champion stays as it was."""
    client.get_model_version(MODEL_NAME, version)
    check_servable(client, version)
    set_alias(client, "champion", version)
    client.set_registered_model_tag(MODEL_NAME, HISTORY_TAG, ",".join([*champion_history(client), str(version)]))


def rollback(client: MlflowClient) -> str:
    """Point champion back at the champion before the current one; return that version."""
    current = get_alias_version(client, "champion")
    history = champion_history(client)
    while history and history[-1] == current:
        history.pop()
    if not history:
        raise ValueError(f"no earlier champion to roll back to (history: {champion_history(client) or 'empty'})")
    set_alias(client, "champion", history[-1])
    client.set_registered_model_tag(MODEL_NAME, HISTORY_TAG, ",".join(history))
    return history[-1]


def get_alias_version(client: MlflowClient, alias: str) -> str | None:
    """The version an alias points at, or None."""
    try:
        return str(client.get_model_version_by_alias(MODEL_NAME, alias).version)
    except mlflow.exceptions.MlflowException:
        return None

