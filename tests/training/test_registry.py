import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from nbo.cli import app
from nbo.config import MODEL_NAME, get_paths
from training.pyfunc import LoadedModel, log_pyfunc
from training.registry import champion_history, connect, get_alias_version, load_model, open_client, promote, rollback


@pytest.fixture(scope="module")
def champion(trained_home):
    """The trained home's champion: a servable booster and its meta."""
    model = load_model(connect(trained_home[0]))
    return model.booster, model.meta


def register(booster, meta: dict) -> str:
    """Log a booster with a meta as the pyfunc training logs, register it as a new version; return the version."""
    example = pd.DataFrame(np.zeros((1, len(meta["features"]))), columns=meta["features"])
    with mlflow.start_run():
        info = log_pyfunc(LoadedModel(booster, meta, "candidate"), example, MODEL_NAME)
    return str(info.registered_model_version)


@pytest.fixture
def registry(tmp_path, champion):
    """A registry with three servable versions of the model and no champion yet."""
    paths = get_paths(tmp_path)
    client = connect(paths)
    for _ in range(3):
        register(*champion)
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


def test_an_unservable_version_is_refused_and_the_champion_kept(registry, champion):
    _, client = registry
    promote(client, "1")
    booster, meta = champion
    undeclared = register(booster, {**meta, "declared_features": [*meta["declared_features"][:-1], "no_such_feature"]})
    with pytest.raises(ValueError, match=f"version {undeclared}: .*no_such_feature"):
        promote(client, undeclared)
    renamed = register(booster, {**meta, "features": ["no_such_feature", *meta["features"][1:]]})
    with pytest.raises(ValueError, match=f"version {renamed}: the booster's features differ"):
        promote(client, renamed)
    assert get_alias_version(client, "champion") == "1" and champion_history(client) == ["1"]


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


def test_a_model_loads_through_its_client_whatever_the_process_wide_tracking_uri(trained_home, tmp_path):
    """The serving loop reads the registry from a thread: another home set process-wide must not be read instead."""
    home = trained_home[0]
    client = open_client(home)
    mlflow.set_tracking_uri(get_paths(tmp_path).tracking_uri)
    model = load_model(client)
    assert model is not None and model.version == get_alias_version(client, "champion")
    assert model.booster.feature_name() == model.meta["features"]


def test_the_standard_mlflow_load_scores_exactly_what_the_service_serves(trained_home, monkeypatch):
    """mlflow.pyfunc.load_model on the champion's URI: on its logged input example and on the test rows, the
    probabilities of the service's model (the one it loads at start) to the last bit."""
    from mlflow.models import Model

    from serving.packaged import load_serving_model
    from training.dataset import load_training_set, split_by_time, to_matrix
    from training.pyfunc import predict_proba

    paths = trained_home[0]
    monkeypatch.setenv("NBO_PACKAGED_MODEL", str(paths.home / "no-packaged-model"))
    served, source = load_serving_model(paths)
    assert source == "registry"
    mlflow.set_tracking_uri(paths.tracking_uri)
    standard = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    folder = mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}@champion")
    example = Model.load(folder).load_input_example(folder)
    split = split_by_time(load_training_set(paths)[0])
    matrix = to_matrix(split.test, split.customers, served.meta["declared_features"], served.meta["categories"])
    rows = pd.DataFrame(matrix, columns=served.meta["features"])
    for frame in (example, rows):
        expected = predict_proba(served, frame[served.meta["features"]].to_numpy(dtype="float64"))
        np.testing.assert_array_equal(np.asarray(standard.predict(frame)), expected)
    assert len(rows) > 1000 and expected.std() > 0.01  # many rows, not one constant
    with pytest.raises(mlflow.exceptions.MlflowException, match="missing inputs"):
        standard.predict(rows.drop(columns=served.meta["features"][3]))


def test_a_champion_logged_as_plain_lightgbm_is_refused_and_a_new_model_is_not_gated_by_it(
    tmp_path, champion, trained_home
):
    """A version logged before the pyfunc (the booster alone): not servable, and no gate for the next training."""
    from training.dataset import load_training_set, split_by_time
    from training.train import champion_score

    client = connect(get_paths(tmp_path))
    with mlflow.start_run():
        info = mlflow.lightgbm.log_model(
            champion[0], name="model", registered_model_name=MODEL_NAME, pip_requirements=[]
        )
    old = str(info.registered_model_version)
    with pytest.raises(ValueError, match=f"version {old} cannot be loaded: .*no purchase-intent pyfunc"):
        promote(client, old)
    client.set_registered_model_alias(MODEL_NAME, "champion", old)  # as an older release left it
    assert champion_score(client, split_by_time(load_training_set(trained_home[0])[0])) is None
