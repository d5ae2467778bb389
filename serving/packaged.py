"""The champion packaged beside the service code: what serves when the registry cannot be reached."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import lightgbm as lgb

from nbo.config import Paths
from training.calibration import Calibrator
from training.registry import LoadedModel, connect, load_model

PACKAGED = Path(__file__).resolve().parent / "model"
logger = logging.getLogger("nbo.serving")


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


def load_serving_model(paths: Paths) -> tuple[LoadedModel | None, str]:
    """The champion from the registry, else the packaged model, else none; with where it came from."""
    try:
        model = load_model(connect(paths))
        if model is not None:
            return model, "registry"
    except Exception as error:  # the registry may be down, unreachable or corrupt: keep serving
        logger.warning("model registry unavailable (%s); trying the packaged model", error)
    folder = packaged_folder()
    if (folder / "model.json").exists():
        try:
            return load_packaged(folder), "packaged"
        except (ValueError, OSError, lgb.basic.LightGBMError) as error:
            logger.warning("packaged model refused (%s); serving popularity", error)
    return None, "none"
