"""Start and stop the real `bentoml serve` process (used by the CLI, the demo and the end-to-end tests)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from nbo.config import Paths
from serving.packaged import PACKAGED, export_model
from training.registry import LoadedModel

SERVICE = "serving.service:NextBestOffer"
ROOT = Path(__file__).resolve().parents[1]


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


def serve_command(port: int, target: str = SERVICE) -> list[str]:
    """The bentoml serve command line for this project's service (or a built Bento's tag)."""
    bentoml = Path(sys.executable).with_name("bentoml")
    return [str(bentoml), "serve", target, "--host", "127.0.0.1", "--port", str(port)]


def start_service(paths: Paths, port: int, log_path: Path | None = None,
                  env: dict[str, str] | None = None, target: str = SERVICE) -> subprocess.Popen:
    """Start the service in the background on the home's champion model and online store."""
    env = {**os.environ, "NBO_HOME": str(paths.home), "BENTOML_DO_NOT_TRACK": "true", **(env or {})}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    return subprocess.Popen(serve_command(port, target), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_ready(process: subprocess.Popen, url: str, timeout_s: float = 90.0) -> None:
    """Block until the service answers /readyz, or raise with the reason."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with code {process.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"service at {url} not ready after {timeout_s:.0f} s")


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


def build_bento(model: LoadedModel, bentoml_home: Path | None = None) -> str:
    """Package a model beside the service code and build a Bento from bentofile.yaml; return its tag."""
    export_model(model, PACKAGED)
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true",
           **({"BENTOML_HOME": str(bentoml_home)} if bentoml_home else {})}
    bentoml = Path(sys.executable).with_name("bentoml")
    built = subprocess.run([str(bentoml), "build", str(ROOT), "--output", "tag"], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    if built.returncode != 0:
        raise RuntimeError(f"bentoml build failed:\n{built.stderr[-2000:]}")
    return built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
