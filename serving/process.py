"""Start and stop the real `bentoml serve` process (used by the CLI, the demo and the end-to-end tests)."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import httpx
import psutil
from mlflow import MlflowClient

from features.pipeline import read_raw
from nbo.config import Paths
from nbo.settings import read_setting
from serving.packaged import PACKAGED_ALIAS, packaged_folder, store_model

SERVICE = "serving.service:NextBestOffer"
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGES = ("nbo", "features", "training", "serving")  # what a Bento carries ([tool.bentoml.build] include)
BENTO_EXTRAS = ("redis",)  # optional dependencies a Bento installs too: replicas share a Redis online store
CATALOGUE = {"offers": "offer_id", "items": "item_id"}  # raw tables the service reads at start, one column each


def free_port() -> int:
    """A TCP port nobody listens on right now, below the kernel's ephemeral ports (32768 and up by default).

    BentoML's own processes take ephemeral ports: one of them could otherwise be handed this port between
    this check and the service binding it (seen once in CI as "Address already in use")."""
    for port in random.sample(range(20000, 32000), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port between 20000 and 31999")


def missing_to_serve(paths: Paths) -> list[str]:
    """What the service needs from the NBO home and does not find there: the raw offers and items (without them it
    cannot start), and a model (without one it starts, but answers 503 until a champion is registered)."""
    missing = []
    for table, column in CATALOGUE.items():
        try:
            read_raw(paths, table, [column])
        except FileNotFoundError:
            missing.append(f"raw {table}")
    registry = read_setting("tracking_uri") or (paths.home / "mlflow.db").exists()
    if not registry and packaged_folder() is None:
        missing.append("model")
    return missing


def explain_missing(paths: Paths, missing: list[str]) -> str:
    """One line: what is missing from the home and the commands that make it."""
    steps = (
        "`nbo train`"
        if missing == ["model"]
        else "`nbo generate` (a simulated retailer) or `nbo ingest FILE`, then `nbo features` and `nbo train`"
    )
    return f"nothing to serve in {paths.home}: no {', no '.join(missing)}; run {steps}"


def serve_command(port: int, target: str = SERVICE, bin_dir: Path = BIN) -> list[str]:
    """The bentoml serve command line for this project's service (or a built Bento's tag), with the bentoml of
    the virtual environment in bin_dir."""
    return [str(bin_dir / "bentoml"), "serve", target, "--host", "127.0.0.1", "--port", str(port)]


def start_service(
    paths: Paths,
    port: int,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    target: str = SERVICE,
    bin_dir: Path = BIN,
) -> subprocess.Popen:
    """Start the service in the background on the home's champion model and online store."""
    env = {**os.environ, "NBO_HOME": str(paths.home), "BENTOML_DO_NOT_TRACK": "true", **(env or {})}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        serve_command(port, target, bin_dir),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(process: subprocess.Popen, url: str, timeout_s: float = 90.0, probe: str = "/readyz") -> None:
    """Block until the service answers 200 on `probe` (/readyz: ready to serve; /livez: up, maybe without a
    model), or raise with the reason."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with code {process.returncode} before it was ready")
        try:
            if httpx.get(f"{url}{probe}", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"service at {url} not answering {probe} after {timeout_s:.0f} s")


def stop_service(process: subprocess.Popen) -> None:
    """Stop the service and its workers (BentoML starts workers in sessions of their own)."""
    if process.poll() is not None:
        return
    workers = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, 15)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()
    for worker in psutil.wait_procs(workers, timeout=10)[1]:
        worker.kill()


def bento_config(project: dict, model_tag: str, extras: tuple[str, ...] = BENTO_EXTRAS) -> str:
    """What a Bento's staged pyproject.toml adds to the project's: the stored model it declares under
    PACKAGED_ALIAS, and the requirements of the optional dependencies it installs beside [project].dependencies."""
    optional = project["project"]["optional-dependencies"]
    packages = [requirement for extra in extras for requirement in optional[extra]]
    return (
        f"\n[[tool.bentoml.build.models]]\ntag = {json.dumps(model_tag)}\nalias = {json.dumps(PACKAGED_ALIAS)}\n"
        f"\n[tool.bentoml.build.python]\npackages = {json.dumps(packages)}\n"
    )


def stage_build(model_tag: str, folder: Path) -> None:
    """A Bento's build context in `folder`: the project's packages and its pyproject.toml (its [tool.bentoml.build]
    and its dependencies, the one list of packages), declaring the stored model `model_tag`."""
    source = (ROOT / "pyproject.toml").read_text()
    (folder / "pyproject.toml").write_text(source + bento_config(tomllib.loads(source), model_tag))
    for package in PACKAGES:
        shutil.copytree(ROOT / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))


def build_bento(client: MlflowClient, version: str) -> tuple[str, str]:
    """Put a registered version in BentoML's model store and build a Bento declaring it, from a staged copy of the
    project (the checkout is left alone); return the Bento's tag and the stored model's tag."""
    model_tag = store_model(client, version)
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true"}
    with tempfile.TemporaryDirectory(prefix="nbo-bento-") as staging:
        stage_build(model_tag, Path(staging))
        built = subprocess.run(
            [str(BIN / "bentoml"), "build", staging, "--output", "tag"],
            cwd=staging,
            env=env,
            capture_output=True,
            text=True,
        )
    if built.returncode != 0:
        raise RuntimeError(f"bentoml build failed:\n{built.stderr[-2000:]}")
    return built.stdout.strip().splitlines()[-1].removeprefix("__tag__:"), model_tag
