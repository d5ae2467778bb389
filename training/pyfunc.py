"""The purchase-intent model as one MLflow pyfunc: the LightGBM booster (text), the feature spec with the
category-share offset's inputs, and the calibrator, logged as the artifacts of one model.

``mlflow.pyfunc.load_model("models:/nbo-purchase-intent@champion").predict(rows)`` then gives exactly the
probabilities the service serves for the same rows: both run predict_proba on the same booster, offset and
calibrator. The service reads the same artifacts without MLflow's loader (read_model_folder), to keep the booster
in memory with what it needs to explain a score.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import version as installed_version
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import Model, infer_signature
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PythonModel, PythonModelContext
from scipy.special import expit

from training.affinity import CategoryShare, ShareInputs, compute_log_share, locate_inputs
from training.calibration import Calibrator, calibrate
from training.dataset import CATEGORY_FEATURE

ROOT = Path(__file__).resolve().parents[1]
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")  # builds the pyfunc at load (models from code)
ARTIFACTS = {"booster": "booster.txt", "spec": "nbo_model.json", "calibrator": "calibrator.json"}
CODE = ("nbo", "features", "training")  # the packages the pyfunc imports, carried with it
# What the pyfunc and the code it carries import, pinned to this environment's versions when it is logged.
REQUIREMENTS = ("lightgbm", "numpy", "pandas", "scipy", "scikit-learn", "pyarrow", "pydantic-settings")


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
        return np.asarray(model.booster.predict(matrix, num_threads=1))
    raw = np.asarray(model.booster.predict(matrix, raw_score=True, num_threads=1)) + compute_log_share(
        *model.share, matrix
    )
    return expit(raw)


def predict_proba(model: LoadedModel, matrix: np.ndarray) -> np.ndarray:
    """Calibrated purchase probabilities of model input rows (uncalibrated ones for models without a calibrator)."""
    raw = predict_uncalibrated(model, matrix)
    return raw if model.calibrator is None else calibrate(model.calibrator, raw)


def to_model_matrix(model: LoadedModel, rows: pd.DataFrame) -> np.ndarray:
    """The model's input matrix from a frame with one column per model feature, in any order (MLflow's schema
    enforcement refuses a frame that lacks one)."""
    return rows[model.meta["features"]].to_numpy(dtype="float64")


def write_artifacts(model: LoadedModel, folder: Path) -> dict[str, str]:
    """Write the model's artifacts into folder; return artifact name -> file."""
    files = {name: str(folder / file) for name, file in ARTIFACTS.items()}
    Path(files["booster"]).write_text(model.booster.model_to_string())
    Path(files["spec"]).write_text(json.dumps(model.meta))
    if model.calibrator is None:
        del files["calibrator"]
    else:
        Path(files["calibrator"]).write_text(json.dumps(model.calibrator.to_dict()))
    return files


def read_artifacts(files: Mapping[str, str | Path], version: str) -> LoadedModel:
    """A model from its artifact files (name -> file); refuse one whose booster's features are not its spec's."""
    booster = lgb.Booster(model_str=Path(files["booster"]).read_text())
    meta = json.loads(Path(files["spec"]).read_text())
    if booster.feature_name() != meta.get("features"):
        raise ValueError(f"version {version}: the booster's features differ from its meta's feature list")
    calibrator = (
        Calibrator.from_dict(json.loads(Path(files["calibrator"]).read_text())) if "calibrator" in files else None
    )
    return LoadedModel(booster, meta, version, calibrator)


def read_model_folder(folder: Path, version: str) -> LoadedModel:
    """The model of a logged pyfunc folder (its MLmodel names the artifacts), read without MLflow's loader."""
    artifacts = Model.load(folder).flavors["python_function"].get("artifacts", {})
    if "booster" not in artifacts:
        raise ValueError(f"{folder} holds no purchase-intent pyfunc (no booster artifact in its MLmodel)")
    return read_artifacts({name: folder / entry["path"] for name, entry in artifacts.items()}, version)


class PurchaseIntent(PythonModel):
    """Calibrated purchase probabilities of rows with one column per model input."""

    def load_context(self, context: PythonModelContext) -> None:
        """Read the booster, spec and calibrator logged with the model."""
        self.model = read_artifacts(context.artifacts, "pyfunc")

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        """What the service serves for these rows: predict_proba on the model's input matrix."""
        return predict_proba(self.model, to_model_matrix(self.model, model_input))


def copy_code(folder: Path) -> list[str]:
    """The packages the pyfunc imports, copied without caches; return their folders."""
    copied = []
    for package in CODE:
        shutil.copytree(ROOT / package, folder / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        copied.append(str(folder / package))
    return copied


def log_pyfunc(model: LoadedModel, example: pd.DataFrame, registered_name: str) -> ModelInfo:
    """Log the model as a pyfunc in the active run, with its input example and signature, and register it."""
    with tempfile.TemporaryDirectory(prefix="nbo-pyfunc-") as staging:
        files = write_artifacts(model, Path(staging))
        code = copy_code(Path(staging) / "code")
        signature = infer_signature(example, predict_proba(model, to_model_matrix(model, example)))
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts=files,
            code_paths=code,
            signature=signature,
            input_example=example,
            registered_model_name=registered_name,
            pip_requirements=[f"{name}=={installed_version(name)}" for name in ("mlflow", *REQUIREMENTS)],
        )
