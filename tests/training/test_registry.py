import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from nbo.cli import app
from nbo.config import MODEL_NAME, get_paths
from training.registry import champion_history, connect, get_alias_version, promote, rollback


@pytest.fixture
def registry(tmp_path):
    """A registry with three bare versions of the model and no champion yet."""
    paths = get_paths(tmp_path)
    client = connect(paths)
    client.create_registered_model(MODEL_NAME)
    for _ in range(3):
        client.create_model_version(MODEL_NAME, source=(tmp_path / "model").as_uri())
    return paths, client


def test_promote_and_rollback_walk_the_champion_history(registry):
    _, client = registry
    for version in ("1", "3", "2"):
        promote(client, version)
    assert get_alias_version(client, "champion") == "2"
    assert champion_history(client) == ["1", "3", "2"]
    assert rollback(client) == "3"
    assert get_alias_version(client, "champion") == "3"
    assert rollback(client) == "1"
    with pytest.raises(ValueError, match="no earlier champion"):
        rollback(client)
    assert get_alias_version(client, "champion") == "1"


def test_cli_promotes_and_rolls_back(registry):
    paths, _ = registry
    runner = CliRunner()
    home = ["--home", str(paths.home)]
    assert runner.invoke(app, ["models", "promote", "1", *home]).exit_code == 0
    assert runner.invoke(app, ["models", "promote", "2", *home]).exit_code == 0
    client = MlflowClient(paths.tracking_uri)
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "2"
    result = runner.invoke(app, ["models", "rollback", *home])
    assert result.exit_code == 0, result.output
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"
    assert runner.invoke(app, ["models", "promote", "9", *home]).exit_code == 2
    assert runner.invoke(app, ["models", "rollback", *home]).exit_code == 2
    listed = runner.invoke(app, ["models", "list", *home])
    assert listed.exit_code == 0, listed.output
    assert "champion history: 1\n" in listed.output
