"""A start with the registry unreachable or silent serves the packaged model after a bounded wait, not after MLflow's
minutes of retries."""

import os
import socket
import time
from contextlib import contextmanager

import pytest

from nbo.config import Paths
from serving.packaged import (
    PACKAGED_ALIAS,
    export_model,
    limit_registry_retries,
    load_champion_within,
    load_serving_model,
    packaged_folder,
)
from serving.process import ROOT, bento_config
from training.registry import connect, find_version, load_model


@contextmanager
def silent_server():
    """The URL of an http server that takes connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_the_registry_look_up_is_time_boxed(tmp_path, monkeypatch):
    with silent_server() as url:
        monkeypatch.setenv("NBO_TRACKING_URI", url)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="within 0.5 s"):
            load_champion_within(Paths(tmp_path), 0.5)
    assert time.monotonic() - started < 2


def test_a_silent_registry_gives_way_to_the_packaged_model(trained_home, tmp_path, monkeypatch):
    paths, _ = trained_home
    client = connect(paths)
    champion = load_model(client)
    export_model(client, find_version(client), tmp_path / "packaged")
    monkeypatch.setenv("NBO_PACKAGED_MODEL", str(tmp_path / "packaged"))
    monkeypatch.setenv("NBO_REGISTRY_WAIT_SECONDS", "1")
    with silent_server() as url:
        monkeypatch.setenv("NBO_TRACKING_URI", url)
        started = time.monotonic()
        model, source = load_serving_model(paths)
    assert source == "packaged" and model.version == champion.version
    assert time.monotonic() - started < 3


def test_mlflow_http_retries_are_bounded_unless_set(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "42")
    limit_registry_retries()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1" and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "42"


def test_outside_a_bento_nothing_is_packaged_unless_a_folder_is_named(trained_home, tmp_path, monkeypatch):
    monkeypatch.delenv("NBO_PACKAGED_MODEL", raising=False)
    assert packaged_folder() is None  # no Bento declares the alias here
    monkeypatch.setenv("NBO_PACKAGED_MODEL", str(tmp_path / "nothing-there"))
    assert packaged_folder() is None
    client = connect(trained_home[0])
    folder = export_model(client, find_version(client), tmp_path / "exported")
    monkeypatch.setenv("NBO_PACKAGED_MODEL", str(folder))
    assert packaged_folder() == folder


def test_the_staged_build_config_declares_the_stored_model_and_the_redis_extra():
    """BentoML's own parser of pyproject.toml reads the staged file: the model under its alias, and the Bento's
    packages are [project].dependencies plus the redis extra."""
    import io
    import tomllib

    from bentoml._internal.bento.build_config import BentoBuildConfig

    source = (ROOT / "pyproject.toml").read_text()
    project = tomllib.loads(source)
    staged = source + bento_config(project, "nbo-purchase-intent:abc123")
    config = BentoBuildConfig.from_pyproject(io.BytesIO(staged.encode()))
    assert config.model_aliases == {PACKAGED_ALIAS: "nbo-purchase-intent:abc123"}
    assert set(config.python.packages) == {*project["project"]["dependencies"], "redis>=5"}
