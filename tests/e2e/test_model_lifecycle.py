"""Two real workers without a model, with a corrupt registry that gets repaired, and with a champion that moves:
they say they cannot serve, recover by themselves within NBO_RELOAD_SECONDS, and all follow /admin/reload."""

import shutil
import time

import httpx
import pytest

from nbo.config import MODEL_NAME, Paths
from serving.process import free_port, start_service, stop_service, wait_ready
from training.registry import connect, set_alias

RELOAD_SECONDS = 4
ASKS = 20  # /status requests, each on a connection of its own: the kernel hands them to either worker


def home_like(trained: Paths, folder) -> Paths:
    """A home with the trained home's catalogue and online store, and no registry yet."""
    home = Paths(folder)
    shutil.copytree(trained.raw, home.raw)
    shutil.copytree(trained.online_store.parent, home.online_store.parent)
    return home


def versions_served(url: str) -> list[tuple[str, str | None]]:
    answers = [httpx.post(f"{url}/status", json={}, timeout=10).json() for _ in range(ASKS)]
    return [(a["model_source"], a["model_version"]) for a in answers]


def start_two_workers(home: Paths, tmp_path, reload_seconds: float, probe: str):
    port = free_port()
    env = {
        "NBO_WORKERS": "2",
        "NBO_RELOAD_SECONDS": str(reload_seconds),
        "NBO_PACKAGED_MODEL": str(tmp_path / "no-packaged-model"),
    }
    process = start_service(home, port, tmp_path / "service.log", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url, timeout_s=120, probe=probe)
    except BaseException:
        stop_service(process)
        raise
    return process, url


def test_without_a_model_the_service_says_so_and_recovers_once_the_registry_is_repaired(trained_home, tmp_path):
    trained, _ = trained_home
    home = home_like(trained, tmp_path / "home")
    (home.home / "mlflow.db").write_bytes(b"this is not a database\n" * 500)
    process, url = start_two_workers(home, tmp_path, RELOAD_SECONDS, probe="/livez")
    try:
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
        answer = httpx.post(f"{url}/recommend", json={"customer_id": "c0000001", "channel": "web"}, timeout=10)
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert error["status"] == 503 and error["code"] == "no_model"
        assert "no model to serve" in error["message"] and "nbo train" in error["message"]
        assert answer.headers["retry-after"] == str(RELOAD_SECONDS)
        assert set(versions_served(url)) == {("none", None)}

        shutil.copyfile(trained.home / "mlflow.db", home.home / "mlflow.db")
        repaired = time.monotonic()
        while set(versions_served(url)) != {("registry", "1")}:
            assert time.monotonic() - repaired < RELOAD_SECONDS + 3, "workers still without the champion"
            time.sleep(0.2)
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        answer = httpx.post(f"{url}/recommend", json={"customer_id": "c0000001", "channel": "web"}, timeout=10)
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
    finally:
        stop_service(process)
    log = (tmp_path / "service.log").read_text()
    assert log.count("champion check failed") <= 2  # once per worker and failure spell, not once per round


def test_admin_reload_reaches_every_worker(trained_home, tmp_path):
    trained, _ = trained_home
    home = home_like(trained, tmp_path / "home")
    shutil.copyfile(trained.home / "mlflow.db", home.home / "mlflow.db")
    process, url = start_two_workers(home, tmp_path, reload_seconds=3600, probe="/readyz")
    try:
        assert set(versions_served(url)) == {("registry", "1")}
        client = connect(home)
        first = client.get_model_version(MODEL_NAME, "1")
        second = client.create_model_version(MODEL_NAME, first.source, first.run_id).version
        set_alias(client, "champion", str(second))
        reloaded = httpx.post(f"{url}/admin/reload", json={}, timeout=30)
        assert reloaded.status_code == 200 and reloaded.json()["model_version"] == str(second)
        asked = time.monotonic()
        while set(versions_served(url)) != {("registry", str(second))}:
            assert time.monotonic() - asked < 5, "a worker still serves the former champion"
            time.sleep(0.2)
    finally:
        stop_service(process)


@pytest.fixture(autouse=True)
def no_tracking_server(monkeypatch):
    monkeypatch.delenv("NBO_TRACKING_URI", raising=False)


def test_a_home_without_a_catalogue_fails_the_start_with_one_clear_line(tmp_path):
    """The worker's first error line says what is missing (under `bentoml serve` BentoML restarts the worker;
    `nbo serve` checks first and does not start at all: tests/serving/test_process.py)."""
    home = Paths(tmp_path / "empty")
    home.home.mkdir()
    log = tmp_path / "service.log"
    process = start_service(home, free_port(), log, env={"NBO_PACKAGED_MODEL": str(tmp_path / "no-packaged-model")})
    try:
        started = time.monotonic()
        while "[ERROR]" not in log.read_text():
            assert time.monotonic() - started < 60, "no error logged"
            time.sleep(0.2)
    finally:
        stop_service(process)
    first = next(line for line in log.read_text().splitlines() if "[ERROR]" in line)
    assert first.endswith(
        f"cannot start the service: no offers in {home.raw}: run `nbo generate` or `nbo ingest` first"
    )
