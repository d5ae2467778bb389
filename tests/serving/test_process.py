import shutil
import socket

import pytest
from typer.testing import CliRunner

from nbo.cli import app
from nbo.config import Paths
from serving.process import explain_missing, free_port, missing_to_serve


def test_free_ports_are_bindable_and_below_the_ephemeral_range():
    ports = {free_port() for _ in range(20)}
    assert all(20000 <= port < 32000 for port in ports) and len(ports) > 1
    with socket.socket() as server:
        server.bind(("127.0.0.1", min(ports)))  # free: nothing listens there


@pytest.fixture
def no_packaged_model(monkeypatch, tmp_path):
    monkeypatch.setenv("NBO_PACKAGED_MODEL", str(tmp_path / "no-packaged-model"))
    monkeypatch.delenv("NBO_TRACKING_URI", raising=False)


def test_an_empty_home_lacks_the_catalogue_and_a_model(tmp_path, no_packaged_model):
    home = Paths(tmp_path / "empty")
    assert missing_to_serve(home) == ["raw offers", "raw items", "model"]
    line = explain_missing(home, missing_to_serve(home))
    assert line == (
        f"nothing to serve in {home.home}: no raw offers, no raw items, no model; run `nbo generate` "
        "(a simulated retailer) or `nbo ingest FILE`, then `nbo features` and `nbo train`"
    )


def test_a_trained_home_lacks_nothing_and_one_without_registry_lacks_the_model(
    trained_home, tmp_path, no_packaged_model
):
    paths, _ = trained_home
    assert missing_to_serve(paths) == []
    untrained = Paths(tmp_path / "untrained")
    shutil.copytree(paths.raw, untrained.raw)
    assert missing_to_serve(untrained) == ["model"]
    assert explain_missing(untrained, ["model"]).endswith("no model; run `nbo train`")


def test_nbo_serve_on_an_empty_home_exits_at_once_with_one_line(tmp_path, no_packaged_model):
    result = CliRunner().invoke(app, ["serve", "--home", str(tmp_path / "empty"), "--port", str(free_port())])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: nothing to serve in") and "`nbo generate`" in lines[0]
    assert not (tmp_path / "empty" / "mlflow.db").exists()  # the check created no registry
