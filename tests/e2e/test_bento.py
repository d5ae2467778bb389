"""`bentoml build` packages the champion; the Bento serves it even when the registry is unreachable."""

import httpx

from serving.process import build_bento, free_port, start_service, stop_service, wait_ready
from training.registry import connect, load_model

UNREACHABLE = {"NBO_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}


def test_a_built_bento_serves_the_packaged_champion_without_the_registry(trained_home, tmp_path):
    paths, _ = trained_home
    champion = load_model(connect(paths))
    tag = build_bento(champion, tmp_path / "bentoml")
    assert tag.startswith("nbo:")
    port = free_port()
    process = start_service(paths, port, tmp_path / "bento.log", target=tag,
                            env={**UNREACHABLE, "BENTOML_HOME": str(tmp_path / "bentoml")})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url, timeout_s=120)
        status = httpx.post(f"{url}/status", json={}, timeout=10).json()
        assert status == {"model_version": champion.version, "model_source": "packaged"}
        from features.online import open_store
        customer = open_store(paths).customers()[0]
        answer = httpx.post(f"{url}/recommend", json={"customer_id": customer, "channel": "web"}, timeout=10)
        assert answer.status_code == 200 and answer.json()["fallback"] is False
        assert answer.json()["model_version"] == champion.version
    finally:
        stop_service(process)
