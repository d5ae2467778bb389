"""The champion packaged beside the service code: what serves when the registry cannot be reached."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import lightgbm as lgb

from nbo.config import Paths, read_seconds
from training.calibration import Calibrator
from training.registry import LoadedModel, connect, load_model

PACKAGED = Path(__file__).resolve().parent / "model"
logger = logging.getLogger("nbo.serving")
REGISTRY_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def packaged_folder() -> Path:
    """Where the packaged model lives: $NBO_PACKAGED_MODEL, else serving/model (inside a Bento too)."""
    return Path(os.environ.get("NBO_PACKAGED_MODEL", PACKAGED))


def export_model(model: LoadedModel, folder: Path) -> None:
    """Write a model as plain files: the LightGBM text model and one JSON of meta, version and calibrator."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.txt").write_text(model.booster.model_to_string())
    calibrator = model.calibrator.to_dict() if model.calibrator else None
    (folder / "model.json").write_text(json.dumps({"version": model.version, "meta": model.meta,
                                                   "calibrator": calibrator}))


def load_packaged(folder: Path) -> LoadedModel:
    """Read a model written by export_model; refuse one whose features the booster does not match."""
    info = json.loads((folder / "model.json").read_text())
    booster = lgb.Booster(model_str=(folder / "model.txt").read_text())
    if booster.feature_name() != info["meta"]["features"]:
        raise ValueError(f"{folder}: the booster's features differ from its meta's feature list")
    calibrator = Calibrator.from_dict(info["calibrator"]) if info["calibrator"] else None
    return LoadedModel(booster, info["meta"], info["version"], calibrator)


def limit_registry_retries() -> None:
    """Unless set: one MLflow HTTP retry and 10 s a request. MLflow's own defaults (7 retries with exponential
    back-off, 120 s timeouts) kept a service whose registry was unreachable from its packaged model for about 250 s."""
    for name, value in REGISTRY_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def registry_wait() -> float:
    """Seconds a start waits for the registry's champion before it serves the packaged model
    ($NBO_REGISTRY_WAIT_SECONDS, 3 by default)."""
    return read_seconds("NBO_REGISTRY_WAIT_SECONDS", 3)


def load_champion_within(paths: Paths, seconds: float | None) -> LoadedModel | None:
    """The registry's champion (None when there is none); TimeoutError when the registry takes longer than
    `seconds` (the look-up goes on in a daemon thread, its answer then dropped). None waits as long as it takes."""
    answer: list = []

    def look_up() -> None:
        try:
            answer.append(load_model(connect(paths)))
        except Exception as error:  # handed to the caller
            answer.append(error)

    thread = threading.Thread(target=look_up, name="registry-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if not answer:
        raise TimeoutError(f"no answer from the registry at {paths.tracking_uri} within {seconds} s")
    if isinstance(answer[0], Exception):
        raise answer[0]
    return answer[0]


def load_serving_model(paths: Paths) -> tuple[LoadedModel | None, str]:
    """The champion from the registry, else the packaged model, else none; with where it came from. The registry
    gets registry_wait() seconds when a packaged model can stand in, as long as its HTTP retries take otherwise."""
    limit_registry_retries()
    folder = packaged_folder()
    packaged = (folder / "model.json").exists()
    try:
        model = load_champion_within(paths, registry_wait() if packaged else None)
        if model is not None:
            return model, "registry"
    except Exception as error:  # the registry may be down, unreachable, slow or corrupt: keep serving
        logger.warning("model registry unavailable (%s); trying the packaged model", error)
    if packaged:
        try:
            return load_packaged(folder), "packaged"
        except (ValueError, OSError, lgb.basic.LightGBMError) as error:
            logger.warning("packaged model refused (%s)", error)
    return None, "none"
