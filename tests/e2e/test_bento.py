"""`nbo build` packs the champion into a Bento from a staged copy of the project (the checkout stays as it is); the
Bento's packages are pyproject.toml's dependencies, they install and serve in a fresh virtual environment, and with
the registry unreachable the Bento serves its packaged model within 10 s."""

import subprocess
import sys
import time
import tomllib

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from features.online import open_store
from serving.process import ROOT, build_bento, free_port, start_service, stop_service, wait_ready
from training.registry import connect, load_model

PACKAGED_START_S = 10


@pytest.fixture(scope="module")
def bento(trained_home, tmp_path_factory):
    """The built Bento's tag, BentoML home and folder, the champion packed in it, and the checkout's serving/model
    before the build."""
    paths, _ = trained_home
    bentoml_home = tmp_path_factory.mktemp("bentoml")
    before = snapshot(ROOT / "serving" / "model")
    champion = load_model(connect(paths))
    tag = build_bento(champion, bentoml_home)
    name, version = tag.split(":")
    return tag, bentoml_home, bentoml_home / "bentos" / name / version, champion, before


def snapshot(folder) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.exists() else {}


def requirement_names(lines: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in lines
            if line.strip() and not line.startswith(("#", "-"))}


def unreachable_registry() -> str:
    """An http URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


def test_the_build_packs_the_champion_and_leaves_the_checkout_alone(bento):
    tag, _, folder, champion, before = bento
    assert tag.startswith("nbo:")
    assert snapshot(ROOT / "serving" / "model") == before
    assert (folder / "src" / "serving" / "model" / "model.json").exists()


def test_the_bento_requires_every_dependency_of_pyproject(bento):
    _, _, folder, _, _ = bento
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    packed = requirement_names((folder / "env" / "python" / "requirements.txt").read_text().splitlines())
    assert requirement_names(declared) <= packed and "redis" in packed


def test_with_the_registry_unreachable_the_bento_serves_its_packaged_model_within_10_s(bento, trained_home, tmp_path):
    """No MLflow retry settings here: the service's own defaults must keep the start short."""
    tag, bentoml_home, _, champion, _ = bento
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
        assert status == {"model_version": champion.version, "model_source": "packaged"}
        customer = open_store(paths).customers()[0]
        answer = httpx.post(f"{url}/recommend", json={"customer_id": customer, "channel": "web"}, timeout=10)
        assert answer.status_code == 200 and answer.json()["fallback"] is False
        assert answer.json()["model_version"] == champion.version
    finally:
        stop_service(process)


def package_index_reachable(folder) -> bool:
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--dest",
                            str(folder), "--index-url", "https://pypi.org/simple", "six"],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


def test_the_bentos_own_requirements_install_in_a_fresh_virtualenv_and_serve(bento, trained_home, tmp_path):
    """The Bento's requirements.txt, exactly (about a minute with pip's cache warm), into a virtual environment
    without this project's packages; then that environment's bentoml serves the Bento."""
    if not package_index_reachable(tmp_path / "probe"):
        pytest.skip("no package index reachable to install the Bento's requirements from")
    tag, bentoml_home, folder, champion, _ = bento
    paths, _ = trained_home
    fresh = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(fresh)], check=True)
    installed = subprocess.run([str(fresh / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r",
                                str(folder / "env" / "python" / "requirements.txt")],
                               capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    imported = subprocess.run([str(fresh / "bin" / "python"), "-c", "import serving.service"],
                              cwd=folder / "src", capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr[-3000:]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"NBO_TRACKING_URI": unreachable_registry(), "BENTOML_HOME": str(bentoml_home),
           "PYTHONPATH": "", "VIRTUAL_ENV": str(fresh)}
    process = start_service(paths, port, tmp_path / "bento.log", target=tag, env=env, bin_dir=fresh / "bin")
    try:
        wait_ready(process, url, timeout_s=180)
        customer = open_store(paths).customers()[0]
        answer = httpx.post(f"{url}/recommend", json={"customer_id": customer, "channel": "web"}, timeout=10)
        assert answer.status_code == 200 and answer.json()["model_version"] == champion.version
    finally:
        stop_service(process)
