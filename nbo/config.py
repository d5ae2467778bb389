"""Where the project keeps its data, models and stores (embedded defaults, overridable by environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nbo.settings import read_setting

MODEL_NAME = "nbo-purchase-intent"
UPLIFT_MODEL = "nbo-uplift"
LIFETIME_MODEL = "nbo-lifetime-value"
MODELS = {"intent": MODEL_NAME, "uplift": UPLIFT_MODEL, "lifetime": LIFETIME_MODEL}  # registered names by kind


@dataclass(frozen=True)
class Paths:
    """The folders and files of one NBO home (default ./data, or $NBO_HOME)."""

    home: Path

    @property
    def raw(self) -> Path:
        return self.home / "raw"

    @property
    def quarantine(self) -> Path:
        return self.home / "quarantine"

    @property
    def features(self) -> Path:
        return self.home / "features"

    @property
    def training_set(self) -> Path:
        # Not a valid module name: run from the home, Python would import this folder as features.training_set.
        return self.features / "training-set"

    @property
    def lifetime(self) -> Path:
        return self.home / "lifetime.parquet"

    @property
    def models(self) -> Path:
        """Registered model versions fetched from the registry, one folder per model and version."""
        return self.home / "models"

    @property
    def online_store(self) -> Path:
        return self.home / "online" / "store.sqlite"

    @property
    def decisions(self) -> Path:
        return self.home / "decisions.sqlite"

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    @property
    def tracking_uri(self) -> str:
        # Not $MLFLOW_TRACKING_URI: MLflow writes that variable itself whenever a URI is set.
        return read_setting("tracking_uri") or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifacts(self) -> Path:
        return self.home / "mlartifacts"


def get_paths(home: str | Path | None = None) -> Paths:
    """Resolve the NBO home: the argument, else $NBO_HOME, else ./data."""
    return Paths(Path(home or read_setting("home")).resolve())
