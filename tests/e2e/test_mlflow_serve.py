"""`mlflow models serve` on the champion's registry URI answers /invocations with exactly the probabilities the
service's model gives for the same rows (MLflow's own scoring server, in this environment)."""

import json
import os
import subprocess
import time

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import Model

from nbo.config import MODEL_NAME
from serving.process import BIN, free_port, stop_service
from training.dataset import load_training_set, split_by_time, to_matrix
from training.pyfunc import predict_proba
from training.registry import load_model, open_client

pytestmark = pytest.mark.e2e
URI = f"models:/{MODEL_NAME}@champion"


def serve_mlflow_model(tracking_uri: str, port: int, log) -> subprocess.Popen:
    """`mlflow models serve` in this environment (its scoring server runs the environment's uvicorn)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            URI,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for_ping(process: subprocess.Popen, url: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "mlflow models serve exited before it answered"
        try:
            if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"mlflow models serve not answering after {timeout_s} s")


def test_mlflow_models_serve_answers_what_the_service_serves(trained_home, tmp_path):
    paths, _ = trained_home
    model = load_model(open_client(paths))
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri=open_client(paths).get_model_version_download_uri(MODEL_NAME, model.version),
        dst_path=str(tmp_path / "model"),
        tracking_uri=paths.tracking_uri,
    )
    example = Model.load(folder).load_input_example(folder)
    split = split_by_time(load_training_set(paths)[0])
    test_rows = to_matrix(split.test, split.customers, model.meta["declared_features"], model.meta["categories"])
    rows = pd.DataFrame(test_rows[:300], columns=model.meta["features"])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "mlflow-serve.log", "wb") as log:
        process = serve_mlflow_model(paths.tracking_uri, port, log)
        try:
            wait_for_ping(process, url)
            for frame in (example, rows):
                body = {"dataframe_split": json.loads(frame.to_json(orient="split"))}
                answer = httpx.post(f"{url}/invocations", json=body, timeout=30)
                assert answer.status_code == 200, answer.text
                expected = predict_proba(model, frame[model.meta["features"]].to_numpy(dtype="float64"))
                np.testing.assert_array_equal(np.array(answer.json()["predictions"]), expected)
        finally:
            stop_service(process)
