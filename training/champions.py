"""The uplift and lifetime-value models in a home: registered as folders, fetched by alias into a cache keyed by
version, and the home's copies refreshed from the champion.

A version's folder is cached once in ``HOME/models/NAME/VERSION-RUN`` (the run id guards against a registry
recreated under the same home). Installing the champion makes ``HOME/uplift`` a link to the uplift champion's
folder (campaigns and the service read it) and copies the lifetime champion's ``lifetime.parquet`` over
``HOME/lifetime.parquet`` (the value tiers); ``HOME/models/NAME/champion`` names the version installed last, which
stays in use while the registry does not answer.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from features.publish import write_atomically
from nbo.config import MODELS, Paths
from training.registry import download_version, open_client, promote, register_folder, rollback
from training.uplift.model import load_uplift

logger = logging.getLogger("nbo.champions")
ARTIFACT = "model"  # a folder model's artifact path in its run
REPORT_FILE = "report.json"  # in every folder model: its training report (params, metrics, gate)
TIERS_FILE = "lifetime.parquet"  # in a lifetime-value version: every customer's prediction and value tier
UPLIFT_FOLDER = "uplift"  # in the home: a link to the installed uplift champion's folder
INSTALLED = "champion"  # in HOME/models/NAME: the folder of the version installed in the home
KEEP = 3  # cached versions kept besides the installed one
ABSENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # the registry's answers for no model, no alias


@dataclass(frozen=True)
class FolderModel:
    """A model registered as a folder: its kind (nbo.config.MODELS), how to tell that a folder serves (raise
    ValueError otherwise) and how to install it in the home."""

    kind: str
    check: Callable[[Path], None]
    install: Callable[[Paths, Path], None]

    @property
    def name(self) -> str:
        return MODELS[self.kind]


@dataclass(frozen=True)
class Installed:
    """A version of a folder model in the home's cache."""

    version: str
    folder: Path


def check_uplift(folder: Path) -> None:
    """Raise ValueError unless the folder holds an uplift model and its report."""
    try:
        load_uplift(folder)
        json.loads((folder / REPORT_FILE).read_text())
    except Exception as error:  # missing files, bad JSON, a booster LightGBM refuses: all mean "refuse"
        raise ValueError(f"not a servable uplift model: {type(error).__name__}: {error}") from error


def check_tiers(folder: Path) -> None:
    """Raise ValueError unless the folder holds value tiers: customer ids and tiers, one row per customer."""
    try:
        tiers = pd.read_parquet(folder / TIERS_FILE, columns=["customer_id", "value_tier"])
    except Exception as error:  # missing file, not parquet, missing columns
        raise ValueError(f"no value tiers: {type(error).__name__}: {error}") from error
    if tiers.empty or tiers["customer_id"].duplicated().any():
        raise ValueError("the value tiers are empty or name a customer twice")


def install_uplift(paths: Paths, folder: Path) -> None:
    """Point HOME/uplift at the folder in one rename (a plain folder there, a copy, is replaced)."""
    target = paths.home / UPLIFT_FOLDER
    link = target.parent / f".{UPLIFT_FOLDER}.{uuid.uuid4().hex[:8]}.link"
    os.symlink(folder.relative_to(target.parent), link)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(link, target)


def install_tiers(paths: Paths, folder: Path) -> None:
    """Copy the version's value tiers over HOME/lifetime.parquet in one rename (read while serving)."""
    write_atomically(paths.lifetime, lambda path: shutil.copyfile(folder / TIERS_FILE, path))


UPLIFT = FolderModel("uplift", check_uplift, install_uplift)
LIFETIME = FolderModel("lifetime", check_tiers, install_tiers)
FOLDER_MODELS = {model.kind: model for model in (UPLIFT, LIFETIME)}


def register_version(paths: Paths, model: FolderModel, run_id: str, promoted: bool) -> str:
    """Register the run's ``model`` folder as a new version (challenger; champion too when promoted, then
    installed in the home); return the version."""
    client = open_client(paths)
    version = register_folder(client, model.name, run_id, ARTIFACT, promoted)
    if promoted:
        sync_champion(paths, model, client)
    return version


def fetch_version(paths: Paths, model: FolderModel, found: ModelVersion, client: MlflowClient) -> Installed:
    """The version's folder in the home's cache, downloaded first if absent (staged, then renamed: another
    process fetching it at the same time keeps its own copy out of the way)."""
    folder = paths.models / model.name / f"{found.version}-{found.run_id}"
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".fetch-") as staging:
            downloaded = download_version(client, str(found.version), Path(staging), model.name)
            try:
                os.rename(downloaded, folder)
            except OSError:
                if not folder.is_dir():
                    raise
    return Installed(str(found.version), folder)


def fetch_champion(paths: Paths, model: FolderModel, client: MlflowClient | None = None) -> Installed | None:
    """The registry's champion in the home's cache (not installed); None when there is none, MlflowException when
    the registry does not answer."""
    client = client or open_client(paths)
    try:
        found = client.get_model_version_by_alias(model.name, "champion")
    except MlflowException as error:
        if error.error_code in ABSENT:
            return None
        raise  # the registry does not answer
    return fetch_version(paths, model, found, client)


def installed(paths: Paths, model: FolderModel) -> Installed | None:
    """The version installed in the home last, None before the first."""
    try:
        name = (paths.models / model.name / INSTALLED).read_text().strip()
    except OSError:
        return None
    folder = paths.models / model.name / name
    return Installed(name.split("-")[0], folder) if folder.is_dir() else None


def sync_champion(paths: Paths, model: FolderModel, client: MlflowClient | None = None) -> Installed | None:
    """Install the registry's champion in the home unless it is installed already; None when there is none (the
    home's copies stay as they are). A champion whose folder does not serve raises ValueError and installs nothing."""
    champion = fetch_champion(paths, model, client)
    if champion is None or champion == installed(paths, model):
        return champion
    model.check(champion.folder)
    model.install(paths, champion.folder)
    marker = paths.models / model.name / INSTALLED
    write_atomically(marker, lambda path: path.write_text(champion.folder.name))
    prune_cache(champion.folder.parent, champion.folder)
    return champion


def current_champion(paths: Paths, model: FolderModel) -> Installed | None:
    """The champion, installed (sync_champion); the one installed last when the registry does not answer or its
    champion does not serve. A home whose embedded registry was never created is not given one."""
    store = paths.tracking_uri.removeprefix("sqlite:///")
    if store != paths.tracking_uri and not Path(store).exists():
        return installed(paths, model)
    try:
        return sync_champion(paths, model)
    except Exception as error:  # registry unreachable or unreadable, an unservable champion: keep what serves
        logger.warning("the %s champion could not be installed, keeping the installed one: %s", model.name, error)
        return installed(paths, model)


def require_champion(paths: Paths, model: FolderModel) -> Path:
    """The champion's folder (current_champion), or FileNotFoundError saying how to get one."""
    found = current_champion(paths, model)
    if found is None:
        raise FileNotFoundError(
            f"no {model.name} champion in the registry {paths.tracking_uri}: train one with `nbo uplift train` "
            "or `nbo retrain`"
        )
    return found.folder


def promote_version(paths: Paths, model: FolderModel, version: str, client: MlflowClient) -> None:
    """Make a registered version champion if its folder serves (else ValueError), and install it."""

    def check(client: MlflowClient, version: str) -> None:
        model.check(fetch_version(paths, model, client.get_model_version(model.name, version), client).folder)

    promote(client, version, model.name, check)
    sync_champion(paths, model, client)


def roll_back(paths: Paths, model: FolderModel, client: MlflowClient) -> str:
    """Point champion back at the previous champion (ValueError when there is none) and install it."""
    version = rollback(client, model.name)
    sync_champion(paths, model, client)
    return version


def prune_cache(cache: Path, current: Path) -> None:
    """Remove all but the KEEP most recently fetched versions besides the current one."""
    older = sorted(
        (p for p in cache.iterdir() if p.is_dir() and p != current and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
    )
    for stale in older[: max(len(older) - KEEP, 0)]:
        shutil.rmtree(stale, ignore_errors=True)
