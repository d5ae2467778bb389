"""The packaged champion: the model a Bento declares, served when the registry cannot be reached.

`nbo build` exports the champion's pyfunc folder (as MLflow logged it) into BentoML's model store, and the Bento's
build configuration declares that stored model under the alias ``packaged-champion``; inside the Bento,
``bentoml.models.get`` resolves the alias to it. Outside a Bento nothing is packaged, unless $NBO_PACKAGED_MODEL
names an exported folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from mlflow import MlflowClient

from nbo.config import MODEL_NAME, Paths
from nbo.settings import read_setting
from training.pyfunc import LoadedModel, read_model_folder
from training.registry import connect, download_version, load_model

PACKAGED_ALIAS = "packaged-champion"  # the Bento's name for its model ([tool.bentoml.build] models)
MLFLOW_FOLDER = "mlflow_model"  # where bentoml.mlflow.import_model keeps the pyfunc folder in a stored model
REGISTERED_FILE = "registered.json"  # beside the MLmodel: the registered model and version the folder holds
logger = logging.getLogger("nbo.serving")
REGISTRY_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def export_model(client: MlflowClient, version: str, folder: Path) -> Path:
    """Write a registered version's pyfunc folder to folder, with the version it is; return folder."""
    with tempfile.TemporaryDirectory(prefix="nbo-export-") as staging:
        shutil.copytree(download_version(client, version, Path(staging)), folder)
    (folder / REGISTERED_FILE).write_text(json.dumps({"model": MODEL_NAME, "version": str(version)}))
    return folder


def store_model(client: MlflowClient, version: str) -> str:
    """Put a registered version in BentoML's model store (bentoml.mlflow.import_model); return its store tag."""
    import bentoml

    with tempfile.TemporaryDirectory(prefix="nbo-export-") as staging:
        folder = export_model(client, version, Path(staging) / "model")
        stored = bentoml.mlflow.import_model(
            MODEL_NAME,
            str(folder),
            labels={"registry_version": str(version)},
            metadata={"registered_model": MODEL_NAME},
        )
    return str(stored.tag)


def packaged_folder() -> Path | None:
    """The packaged model's pyfunc folder: $NBO_PACKAGED_MODEL when set, else the model the Bento declares, else
    None (outside a Bento)."""
    override = read_setting("packaged_model")
    if override is not None:
        return override if (override / "MLmodel").exists() else None
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return Path(bentoml.models.get(PACKAGED_ALIAS).path_of(MLFLOW_FOLDER))
    except NotFound:
        return None


def load_packaged(folder: Path) -> LoadedModel:
    """Read a model exported by export_model; refuse one whose features the booster does not match."""
    registered = json.loads((folder / REGISTERED_FILE).read_text())
    return read_model_folder(folder, registered["version"])


def limit_registry_retries() -> None:
    """Unless set: one MLflow HTTP retry and 10 s a request. MLflow's own defaults (7 retries with exponential
    back-off, 120 s timeouts) kept a service whose registry was unreachable from its packaged model for about 250 s."""
    for name, value in REGISTRY_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


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
    gets $NBO_REGISTRY_WAIT_SECONDS when a packaged model can stand in, as long as its HTTP retries take otherwise."""
    limit_registry_retries()
    folder = packaged_folder()
    try:
        model = load_champion_within(paths, read_setting("registry_wait_seconds") if folder else None)
        if model is not None:
            return model, "registry"
    except Exception as error:  # the registry may be down, unreachable, slow or corrupt: keep serving
        logger.warning("model registry unavailable (%s); trying the packaged model", error)
    if folder is not None:
        try:
            return load_packaged(folder), "packaged"
        except Exception as error:  # unreadable, incomplete or mismatched files: serve without a model
            logger.warning("packaged model refused (%s)", error)
    return None, "none"
