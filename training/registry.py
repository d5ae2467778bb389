"""MLflow tracking and the model registry: log a run, register it, move the aliases, load a model.

Every version that becomes champion is appended to the registered model's ``champion_history`` tag
(comma-separated versions), so that a rollback knows which champion came before. The alias functions take the
registered model's name (nbo.config.MODELS; the purchase-intent model by default); the uplift and lifetime-value
models are registered as folders (``register_folder``; training.champions fetches them).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from features.definitions import select_features
from nbo.config import MODEL_NAME, Paths
from training.pyfunc import ROOT, LoadedModel, log_pyfunc, predict_proba, read_model_folder

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EXPERIMENT = "nbo-purchase-intent"
HISTORY_TAG = "champion_history"


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


def describe_run(lineage: dict, features: int) -> tuple[str, dict[str, str]]:
    """A training run's name (the cutoffs it learnt from) and tags: data span, code commit, feature count."""
    first, last = lineage["cutoffs"][0][:10], lineage["cutoffs"][-1][:10]
    tags = run_tags(f"{first}..{last} (+{lineage['horizon_days']} days of labels)", features)
    return f"purchase-intent {first}..{last}", {**tags, "events_sha256": lineage["events_sha256"]}


def run_tags(data_span: str, features: int) -> dict[str, str]:
    """A training run's tags: the span of its data, its feature count and the code's commit (in a checkout)."""
    commit = git_commit()
    return {"data_span": data_span, "feature_count": str(features), **({"git_commit": commit} if commit else {})}


def git_commit() -> str | None:
    """The checkout's commit (with "-dirty" when it has uncommitted changes), None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def log_model(
    model: LoadedModel,
    example: pd.DataFrame,
    params: dict,
    metrics: dict[str, float],
    report: dict,
    figures: dict[str, Figure],
) -> str:
    """Log one training run (named and tagged, with its evaluation report and plots) and register its model as a
    pyfunc (booster, category-share offset, calibrator, feature spec); return the new version."""
    name, tags = describe_run(model.meta["lineage"], len(model.meta["features"]))
    with mlflow.start_run(run_name=name, tags=tags):
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.log_dict({"features": model.meta["features"]}, "features.json")
        mlflow.log_dict(report, "evaluation/report.json")
        for figure_name, figure in figures.items():
            mlflow.log_figure(figure, f"evaluation/{figure_name}.png")
        info = log_pyfunc(model, example, MODEL_NAME)
    return str(info.registered_model_version)


def register_folder(client: MlflowClient, name: str, run_id: str, artifact_path: str, promoted: bool) -> str:
    """Register a run's logged folder as a new version of a registered model (created on first use): challenger,
    and champion too when its gate passed (``promoted``); return the version."""
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name)
    source = f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"
    version = str(client.create_model_version(name, source, run_id).version)
    set_alias(client, "challenger", version, name)
    if promoted:
        crown(client, version, name)
    return version


def download_version(client: MlflowClient, version: str, folder: Path, name: str = MODEL_NAME) -> Path:
    """Download a registered version's folder (the pyfunc folder of the purchase-intent model) into folder,
    through the client's own tracking URI."""
    location = client.get_model_version_download_uri(name, version)
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=str(folder), tracking_uri=client.tracking_uri
        )
    )


def find_version(
    client: MlflowClient, alias: str = "champion", version: str | None = None, name: str = MODEL_NAME
) -> str | None:
    """The given version if registered, else the version under an alias; None when there is no such version."""
    try:
        found = client.get_model_version(name, version) if version else client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None
    return str(found.version)


def load_model(client: MlflowClient, alias: str = "champion", version: str | None = None) -> LoadedModel | None:
    """The given version, else the version under an alias; None when there is no such version. Everything is read
    through the client's own tracking URI, never the process-wide one, so threads with other homes do not interfere."""
    found = find_version(client, alias, version)
    if found is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        return read_model_folder(download_version(client, found, Path(folder)), found)


def set_alias(client: MlflowClient, alias: str, version: str, name: str = MODEL_NAME) -> None:
    """Point an alias (champion, challenger) at a version."""
    client.set_registered_model_alias(name, alias, version)


def champion_history(client: MlflowClient, name: str = MODEL_NAME) -> list[str]:
    """The versions that became champion, oldest first (empty before the first registration)."""
    try:
        tag = client.get_registered_model(name).tags.get(HISTORY_TAG, "")
    except mlflow.exceptions.MlflowException:
        return []
    return [v for v in tag.split(",") if v]


def check_servable(client: MlflowClient, version: str) -> None:
    """Raise ValueError unless serving can use the version: it loads (a booster whose features are its spec's),
    its declared features are declared in features.definitions, and it scores a row of NaNs."""
    try:
        model = load_model(client, version=version)
    except Exception as error:  # a corrupt version fails in MLflow, LightGBM or JSON: all mean "refuse"
        raise ValueError(f"version {version} cannot be loaded: {error}") from error
    if model is None:
        raise ValueError(f"version {version} cannot be loaded")
    try:
        select_features(model.meta.get("declared_features", []))
    except KeyError as error:
        raise ValueError(f"version {version}: {error.args[0]}") from error
    probability = predict_proba(model, np.full((1, model.booster.num_feature()), np.nan))
    if not (np.isfinite(probability).all() and ((probability >= 0) & (probability <= 1)).all()):
        raise ValueError(f"version {version} predicts {probability} for a row of missing values")


def promote(
    client: MlflowClient,
    version: str,
    name: str = MODEL_NAME,
    check: Callable[[MlflowClient, str], None] = check_servable,
) -> None:
    """Make a servable version champion and append it to the champion history; an unknown version raises
    MlflowException, an unservable one (``check`` raises) ValueError, and the champion stays as it was."""
    client.get_model_version(name, version)
    check(client, version)
    crown(client, version, name)


def crown(client: MlflowClient, version: str, name: str = MODEL_NAME) -> None:
    """Point champion at a version and append it to the champion history."""
    set_alias(client, "champion", version, name)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join([*champion_history(client, name), str(version)]))


def rollback(client: MlflowClient, name: str = MODEL_NAME) -> str:
    """Point champion back at the champion before the current one; return that version."""
    current = get_alias_version(client, "champion", name)
    history = champion_history(client, name)
    while history and history[-1] == current:
        history.pop()
    if not history:
        before = " -> ".join(champion_history(client, name)) or "empty"
        raise ValueError(f"no earlier champion of {name} to roll back to (champion history: {before})")
    set_alias(client, "champion", history[-1], name)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
    return history[-1]


def get_alias_version(client: MlflowClient, alias: str, name: str = MODEL_NAME) -> str | None:
    """The version an alias points at, or None."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None
