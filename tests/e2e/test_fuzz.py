"""Property-based fuzzing of the real service from its own OpenAPI document: no input may cause a 5xx."""

import shutil

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from nbo.config import get_paths
from serving.process import free_port, start_service, stop_service, wait_ready

KEY = "fuzz-key"


@pytest.fixture(scope="module")
def fuzzed(trained_home, tmp_path_factory):
    """The service on a private copy of the trained home, so fuzzed events touch no other test's store."""
    source, _ = trained_home
    paths = get_paths(tmp_path_factory.mktemp("fuzz") / "home")
    shutil.copytree(source.home, paths.home)
    port = free_port()
    process = start_service(paths, port, paths.home / "service.log", env={"NBO_API_KEY": KEY})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url, timeout_s=120)
        yield url
    finally:
        stop_service(process)


@pytest.mark.parametrize("path", ["/recommend", "/events", "/campaign"])
def test_no_input_makes_the_service_fail(fuzzed, path):
    operation = schemathesis.openapi.from_url(f"{fuzzed}/docs.json")[path]["POST"]

    @given(case=operation.as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    def call(case) -> None:
        case.call_and_validate(headers={"x-api-key": KEY}, checks=[not_a_server_error], timeout=30)

    call()


@pytest.mark.parametrize("route", ["/recommend", "/events", "/campaign"])
@pytest.mark.parametrize("chunked", [False, True])
def test_a_2_mb_body_is_refused_with_413(fuzzed, route, chunked):
    body = b'{"events": [' + b'{"ts": "2025-01-01T00:00:00Z"},' * 70_000 + b"{}]}"
    answer = httpx.post(f"{fuzzed}{route}", content=iter([body]) if chunked else body,
                        headers={"x-api-key": KEY, "content-type": "application/json"}, timeout=30)
    assert answer.status_code == 413
