"""The uplift and lifetime-value models as registered models: versions with aliases behind their gates, promote and
rollback from the CLI, and the service, campaigns and value tiers following the champion."""

from __future__ import annotations

import json
import shutil
import threading

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.pipeline import read_raw
from nbo.cli import app
from nbo.config import LIFETIME_MODEL, UPLIFT_MODEL, get_paths
from serving.campaign import check_campaign
from serving.recommender import Recommender
from serving.runtime import follow_registry
from serving.uplift_ranking import find_published, judge_published, published_version
from training.champions import (
    ARTIFACT,
    LIFETIME,
    TIERS_FILE,
    UPLIFT,
    current_champion,
    installed,
    register_version,
    require_champion,
)
from training.lifetime.values import fit_lifetime
from training.registry import champion_history, connect, get_alias_version, open_client
from training.uplift.model import load_uplift
from training.uplift.train import train_uplift

runner = CliRunner()


def copy_home(trained_home, tmp_path_factory, name: str):
    """A copy of the trained home without the uplift and lifetime models other tests may have registered there."""
    paths = get_paths(tmp_path_factory.mktemp(name) / "home")
    shutil.copytree(trained_home[0].home, paths.home, symlinks=True)
    client = open_client(paths)
    for registered in (UPLIFT_MODEL, LIFETIME_MODEL):
        if client.search_registered_models(f"name='{registered}'"):
            client.delete_registered_model(registered)
    shutil.rmtree(paths.models, ignore_errors=True)
    paths.lifetime.unlink(missing_ok=True)
    uplift = paths.home / "uplift"
    shutil.rmtree(uplift) if uplift.is_dir() and not uplift.is_symlink() else uplift.unlink(missing_ok=True)
    return paths


def cli(paths, *args: str):
    return runner.invoke(app, ["models", *args, "--home", str(paths.home)])


@pytest.fixture(scope="module")
def uplift_versions(trained_home, tmp_path_factory):
    """Version 1 from the simulator's exposures (champion), version 2 from exposures whose training rows have their
    outcomes inverted (worse on the same held-out rows: challenger)."""
    paths = copy_home(trained_home, tmp_path_factory, "uplift-aliases")
    customers, offers = read_raw(paths, "customers"), read_raw(paths, "offers")
    exposures = pd.read_parquet(paths.raw / "exposures.parquet")
    first = train_uplift(paths, customers, exposures, offers, n_boot=0, gate=True, learners=("t",))
    early = exposures["ts"] < exposures["ts"].quantile(0.6)  # the time split holds out the last 25 %
    exposures.loc[early, "converted"] = ~exposures.loc[early, "converted"].astype(bool)
    second = train_uplift(paths, customers, exposures, offers, n_boot=0, gate=True, learners=("t",))
    return paths, first, second


def test_a_worse_uplift_model_is_registered_as_challenger_and_the_champion_keeps_serving(uplift_versions):
    paths, first, second = uplift_versions
    client = open_client(paths)
    assert (first["version"], first["promoted"], second["version"], second["promoted"]) == ("1", True, "2", False)
    assert second["gate"]["value"] < second["gate"]["published_value"]
    assert get_alias_version(client, "champion", UPLIFT_MODEL) == "1"
    assert get_alias_version(client, "challenger", UPLIFT_MODEL) == "2"
    assert champion_history(client, UPLIFT_MODEL) == ["1"]
    run = client.get_run(second["run_id"])  # the verdict on the run, named and tagged like the intent model's
    assert run.data.tags["promoted"] == "false" and "worse than" in run.data.tags["gate_reason"]
    assert run.info.run_name == f"uplift {run.data.tags['data_span']}" and int(run.data.tags["feature_count"]) > 3
    assert run.data.metrics["gate_value"] < run.data.metrics["gate_champion_value"]
    assert client.get_model_version(UPLIFT_MODEL, "2").run_id == second["run_id"]
    champion = installed(paths, UPLIFT)
    assert champion is not None and champion.version == "1"
    assert (paths.home / "uplift").resolve() == champion.folder.resolve()
    assert published_version(paths.home) == "1"


def test_promote_and_rollback_move_the_uplift_alias_and_the_service_and_campaigns_follow(uplift_versions):
    paths = uplift_versions[0]
    recommender = Recommender.from_home(paths)
    assert recommender.uplift_version == "1"
    promoted = cli(paths, "promote", "2", "--model", "uplift")
    assert promoted.exit_code == 0 and "nbo-uplift champion: v2 (was v1)" in promoted.output, promoted.output
    assert recommender.follow_uplift(paths) and recommender.uplift_version == "2"
    folder = installed(paths, UPLIFT).folder
    model, _ = check_campaign(paths, "email", {})
    assert model.treated.model_to_string() == load_uplift(folder).treated.model_to_string()
    assert "2-" in folder.name and (paths.home / "uplift").resolve() == folder.resolve()
    listed = json.loads(cli(paths, "list", "--json").output)
    assert listed["uplift"] == {
        "name": UPLIFT_MODEL,
        "champion": "2",
        "challenger": "2",
        "champion_history": ["1", "2"],
    }
    assert listed["intent"]["champion"] == "1" and listed["lifetime"]["champion"] is None
    rolled = cli(paths, "rollback", "--model", "uplift")
    assert rolled.exit_code == 0 and "nbo-uplift champion: v1 (was v2)" in rolled.output
    assert recommender.follow_uplift(paths) and recommender.uplift_version == "1"
    assert load_uplift(require_champion(paths, UPLIFT)).spec == load_uplift(installed(paths, UPLIFT).folder).spec
    again = cli(paths, "rollback", "--model", "uplift")
    assert again.exit_code == 2 and "no earlier champion of nbo-uplift" in again.output
    missing = cli(paths, "promote", "9", "--model", "uplift")
    assert missing.exit_code == 2 and "no version 9 of nbo-uplift" in missing.output
    assert cli(paths, "promote", "1", "--model", "churn").exit_code == 2
    assert get_alias_version(open_client(paths), "champion", UPLIFT_MODEL) == "1"


def test_a_version_that_cannot_serve_is_refused_and_the_champion_stays(uplift_versions, tmp_path):
    paths = uplift_versions[0]
    connect(paths, "nbo-uplift")
    (tmp_path / "report.json").write_text("{}")  # a report without boosters
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(tmp_path), ARTIFACT)
    broken = register_version(paths, UPLIFT, run.info.run_id, promoted=False)
    before = get_alias_version(open_client(paths), "champion", UPLIFT_MODEL)
    refused = cli(paths, "promote", broken, "--model", "uplift")
    assert refused.exit_code == 2 and "not a servable uplift model" in refused.output, refused.output
    assert get_alias_version(open_client(paths), "champion", UPLIFT_MODEL) == before
    assert installed(paths, UPLIFT).version == before


def test_a_home_without_an_uplift_champion_ranks_by_purchase_intent_and_says_why(trained_home, tmp_path):
    assert find_published(trained_home[0].home) is None and published_version(tmp_path) is None
    verdict = judge_published(None, None)
    assert not verdict.ranks and "no uplift champion" in verdict.reason
    with pytest.raises(FileNotFoundError, match="nbo uplift train"):
        require_champion(get_paths(tmp_path), UPLIFT)


@pytest.fixture(scope="module")
def lifetime_versions(trained_home, tmp_path_factory):
    """Version 1 with the default method (champion), version 2 with a buys-again classifier that cannot split
    (constant: worse on the same holdout, challenger)."""
    paths = copy_home(trained_home, tmp_path_factory, "lifetime-aliases")
    first = fit_lifetime(paths)
    tiers = pd.read_parquet(paths.lifetime)
    second = fit_lifetime(paths, classifier_params={"min_child_samples": 10**6})
    return paths, first, second, tiers


def read_tiers_of(paths, version: str) -> pd.DataFrame:
    (folder,) = (paths.models / LIFETIME_MODEL).glob(f"{version}-*")
    return pd.read_parquet(folder / TIERS_FILE)


def test_a_worse_lifetime_model_is_challenger_and_the_champions_tiers_stay(lifetime_versions):
    paths, first, second, tiers = lifetime_versions
    client = open_client(paths)
    assert (first["version"], first["promoted"], second["version"], second["promoted"]) == ("1", True, "2", False)
    assert first["gate"]["reason"] == "no champion"
    gate = second["gate"]
    assert gate["metric"] == "holdout_auc" and gate["value"] == 0.5 < gate["champion_value"]
    assert get_alias_version(client, "champion", LIFETIME_MODEL) == "1"
    assert get_alias_version(client, "challenger", LIFETIME_MODEL) == "2"
    assert client.get_run(second["run_id"]).data.tags["promoted"] == "false"
    pd.testing.assert_frame_equal(pd.read_parquet(paths.lifetime), tiers)
    assert installed(paths, LIFETIME).version == "1"
    again = fit_lifetime(paths)  # the champion's own method scores the same on the same rows: it passes
    assert again["promoted"] and again["gate"]["value"] == again["gate"]["champion_value"]
    assert cli(paths, "rollback", "--model", "lifetime").exit_code == 0  # back to version 1 for the next test


def test_promote_and_rollback_of_the_lifetime_model_replace_the_value_tiers(lifetime_versions):
    paths = lifetime_versions[0]
    promoted = cli(paths, "promote", "2", "--model", "lifetime")
    assert promoted.exit_code == 0, promoted.output
    pd.testing.assert_frame_equal(pd.read_parquet(paths.lifetime), read_tiers_of(paths, "2"))
    rolled = cli(paths, "rollback", "--model", "lifetime")
    assert rolled.exit_code == 0 and "nbo-lifetime-value champion: v1 (was v2)" in rolled.output
    pd.testing.assert_frame_equal(pd.read_parquet(paths.lifetime), read_tiers_of(paths, "1"))
    assert installed(paths, LIFETIME).version == "1"
    refused = cli(paths, "rollback", "--model", "lifetime")
    assert refused.exit_code == 2 and "no earlier champion of nbo-lifetime-value" in refused.output


def test_the_service_loop_installs_a_champion_moved_in_the_registry(lifetime_versions, monkeypatch):
    """Another machine moved the alias: the worker's follow loop installs the new champion's tiers; while the
    registry does not answer, the tiers installed last stay."""
    paths = lifetime_versions[0]
    open_client(paths).set_registered_model_alias(LIFETIME_MODEL, "champion", "2")
    stop = threading.Event()
    loop = threading.Thread(target=follow_registry, args=(Recommender.from_home(paths), paths, 0.2, stop, 0.05))
    loop.start()
    try:
        for _ in range(100):
            if installed(paths, LIFETIME).version == "2":
                break
            stop.wait(0.1)
    finally:
        stop.set()
        loop.join()
    pd.testing.assert_frame_equal(pd.read_parquet(paths.lifetime), read_tiers_of(paths, "2"))
    monkeypatch.setenv("NBO_TRACKING_URI", "http://127.0.0.1:9/unreachable")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert current_champion(get_paths(paths.home), LIFETIME).version == "2"
