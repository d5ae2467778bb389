"""MLflow tracking and the model registry: log a run, register it, move the aliases, load a model."""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature

from nbo.config import MODEL_NAME, Paths

EXPERIMENT = "nbo-purchase-intent"
META_FILE = "nbo_model.json"


@dataclass
class LoadedModel:
    """A registered model version with what serving needs to rebuild its inputs."""

    booster: lgb.Booster
    meta: dict
    version: str


def connect(paths: Paths) -> MlflowClient:
    """Point MLflow at the home's tracking store; artifacts go beside it."""
    mlflow.set_tracking_uri(paths.tracking_uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        paths.artifacts.mkdir(parents=True, exist_ok=True)
        mlflow.create_experiment(EXPERIMENT, artifact_location=paths.artifacts.as_uri())
    mlflow.set_experiment(EXPERIMENT)
    return MlflowClient()


def log_model(booster: lgb.Booster, example: pd.DataFrame, params: dict, metrics: dict[str, float],
              meta: dict) -> str:
    """Log one training run and register its model; return the new version."""
    with mlflow.start_run():
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.log_dict(meta, META_FILE)
        mlflow.log_dict({"features": meta["features"]}, "features.json")
        signature = infer_signature(example, booster.predict(example.to_numpy()))
        info = mlflow.lightgbm.log_model(booster, name="model", signature=signature, input_example=example,
                                         registered_model_name=MODEL_NAME,
                                         pip_requirements=[f"lightgbm=={lgb.__version__}", f"numpy=={np.__version__}"])
    return str(info.registered_model_version)


def load_model(client: MlflowClient, alias: str = "champion") -> LoadedModel | None:
    """The model version under an alias, or None when no version carries it."""
    try:
        version = client.get_model_version_by_alias(MODEL_NAME, alias)
    except mlflow.exceptions.MlflowException:
        return None
    booster = mlflow.lightgbm.load_model(f"models:/{MODEL_NAME}/{version.version}")
    meta = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{META_FILE}")
    return LoadedModel(booster, meta, str(version.version))


def set_alias(client: MlflowClient, alias: str, version: str) -> None:
    """Point an alias (champion, challenger) at a version."""
    client.set_registered_model_alias(MODEL_NAME, alias, version)

