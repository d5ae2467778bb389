"""`nbo build` puts the champion in BentoML's model store and builds a Bento that declares it, from a staged copy of
the project (the checkout stays as it is); the Bento's packages are pyproject.toml's dependencies, they install and
serve in a fresh virtual environment, and with the registry unreachable the Bento serves its declared model within
10 s."""

import os
import re
import subprocess
import sys
import time
import tomllib

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from features.online import open_store
from serving.packaged import PACKAGED_ALIAS
from serving.process import BIN, ROOT, free_port, start_service, stop_service, wait_ready
from training.registry import connect, load_model

PACKAGED_START_S = 10


@pytest.fixture(scope="module")
def bento(trained_home, tmp_path_factory):
    """`nbo build` in a BentoML home of its own: the Bento's tag, that home, the Bento's folder, the champion, the
    stored model's tag, and the checkout's files before the build."""
    paths, _ = trained_home
    bentoml_home = tmp_path_factory.mktemp("bentoml")
    before = snapshot()
    champion = load_model(connect(paths))
    built = subprocess.run(
        [str(BIN / "nbo"), "build", "--home", str(paths.home)],
        capture_output=True,
        text=True,
        env={**os.environ, "BENTOML_HOME": str(bentoml_home), "COLUMNS": "500"},
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    tag, model_tag = re.search(r"built (\S+) declaring the model (\S+)", built.stdout).groups()
    name, version = tag.split(":")
    return tag, bentoml_home, bentoml_home / "bentos" / name / version, champion, model_tag, before


def snapshot() -> set[str]:
    """The checkout's files that git does not ignore, and the ignored serving/model a former build wrote."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    return set(listed) | {str(p) for p in (ROOT / "serving" / "model").glob("*")}


def requirement_names(lines: list[str]) -> set[str]:
    return {
        canonicalize_name(Requirement(line).name) for line in lines if line.strip() and not line.startswith(("#", "-"))
    }


def unreachable_registry() -> str:
    """An http URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


def test_the_build_stores_the_champion_and_declares_it_leaving_the_checkout_alone(bento):
    tag, bentoml_home, folder, champion, model_tag, before = bento
    assert tag.startswith("nbo:") and model_tag.startswith("nbo-purchase-intent:")
    assert snapshot() == before
    assert not (folder / "src" / "serving" / "model").exists()
    declared = yaml.safe_load((folder / "bento.yaml").read_text())["models"]
    assert [(m["tag"], m["alias"]) for m in declared] == [(model_tag, PACKAGED_ALIAS)]
    name, version = model_tag.split(":")
    stored = yaml.safe_load((bentoml_home / "models" / name / version / "model.yaml").read_text())
    assert stored["module"] == "bentoml.mlflow" and stored["labels"]["registry_version"] == champion.version
    assert (bentoml_home / "models" / name / version / "mlflow_model" / "MLmodel").exists()


def test_the_bento_requires_every_dependency_of_pyproject(bento):
    folder = bento[2]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    packed = requirement_names((folder / "env" / "python" / "requirements.txt").read_text().splitlines())
    assert requirement_names(declared) <= packed and "redis" in packed  # the redis extra too


def test_with_the_registry_unreachable_the_bento_serves_its_packaged_model_within_10_s(bento, trained_home, tmp_path):
    """No MLflow retry settings here: the service's own defaults must keep the start short."""
    tag, bentoml_home, _, champion, _, _ = bento
    paths, _ = trained_home
    env = {"NBO_TRACKING_URI": unreachable_registry(), "BENTOML_HOME": str(bentoml_home)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    process = start_service(paths, port, tmp_path / "bento.log", target=tag, env=env)
    try:
        wait_ready(process, url, timeout_s=120)
        took = time.monotonic() - started
        print(f"packaged model served {took:.1f} s after the start, registry unreachable")
        assert took < PACKAGED_START_S
        status = httpx.post(f"{url}/status", json={}, timeout=10).json()
        assert (status["model_version"], status["model_source"]) == (champion.version, "packaged")
        customer = open_store(paths).customers()[0]
        answer = httpx.post(f"{url}/recommend", json={"customer_id": customer, "channel": "web"}, timeout=10)
        assert answer.status_code == 200 and answer.json()["fallback"] is False
        assert answer.json()["model_version"] == champion.version
    finally:
        stop_service(process)


def package_index_reachable(folder) -> bool:
    probe = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-cache-dir",
            "--dest",
            str(folder),
            "--index-url",
            "https://pypi.org/simple",
            "six",
        ],
        capture_output=True,
        timeout=60,
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    os.environ.get("NBO_RELEASE_CHECKS") != "1",
    reason="a minute of pip installs, run before a release: NBO_RELEASE_CHECKS=1 (docs/operations.md)",
)
def test_the_bentos_own_requirements_install_in_a_fresh_virtualenv_and_serve(bento, trained_home, tmp_path):
    """The Bento's requirements.txt, exactly (about a minute with pip's cache warm), into a virtual environment
    without this project's packages; then that environment's bentoml serves the Bento."""
    if not package_index_reachable(tmp_path / "probe"):
        pytest.skip("no package index reachable to install the Bento's requirements from")
    tag, bentoml_home, folder, champion, _, _ = bento
    paths, _ = trained_home
    fresh = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(fresh)], check=True)
    installed = subprocess.run(
        [
            str(fresh / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "-r",
            str(folder / "env" / "python" / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    imported = subprocess.run(
        [str(fresh / "bin" / "python"), "-c", "import serving.service"],
        cwd=folder / "src",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "NBO_TRACKING_URI": unreachable_registry(),
        "BENTOML_HOME": str(bentoml_home),
        "PYTHONPATH": "",
        "VIRTUAL_ENV": str(fresh),
    }
    process = start_service(paths, port, tmp_path / "bento.log", target=tag, env=env, bin_dir=fresh / "bin")
    try:
        wait_ready(process, url, timeout_s=180)
        customer = open_store(paths).customers()[0]
        answer = httpx.post(f"{url}/recommend", json={"customer_id": customer, "channel": "web"}, timeout=10)
        assert answer.status_code == 200 and answer.json()["model_version"] == champion.version
    finally:
        stop_service(process)
