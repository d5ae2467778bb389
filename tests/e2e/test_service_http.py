"""The real `bentoml serve` process, called over HTTP."""

import httpx
import pytest

from serving.process import free_port, start_service, stop_service, wait_ready


@pytest.fixture(scope="module")
def service(trained_home, tmp_path_factory):
    paths, _ = trained_home
    port = free_port()
    process = start_service(paths, port, tmp_path_factory.mktemp("logs") / "service.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url, timeout_s=120)
        yield url, paths
    finally:
        stop_service(process)


def test_recommend_over_http_for_a_known_and_an_unknown_customer(service):
    url, paths = service
    from features.online import OnlineStore
    known = OnlineStore(paths.online_store).customers()[0]
    answer = httpx.post(f"{url}/recommend", json={"customer_id": known, "channel": "web", "k": 2}, timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["customer_id"] == known and body["fallback"] is False and body["model_version"]
    assert 1 <= len(body["offers"]) <= 2
    assert set(body["offers"][0]) == {"offer_id", "score", "expected_value", "reason"}
    unknown = httpx.post(f"{url}/recommend", json={"customer_id": "nobody-yet", "channel": "web"}, timeout=10)
    assert unknown.status_code == 200 and unknown.json()["fallback"] is True


@pytest.mark.parametrize("body, field", [
    ({"channel": "web"}, "customer_id"),
    ({"customer_id": "c1", "channel": "fax"}, "channel"),
    ({"customer_id": "c1", "channel": "web", "k": 0}, "k"),
    ({"customer_id": "c1", "channel": "web", "context": {"cart_items": "i1"}}, "cart_items"),
])
def test_malformed_bodies_get_a_4xx_naming_the_field(service, body, field):
    url, _ = service
    answer = httpx.post(f"{url}/recommend", json=body, timeout=10)
    assert 400 <= answer.status_code < 500
    assert field in answer.text
