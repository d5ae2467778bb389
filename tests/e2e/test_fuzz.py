"""The real service from outside: fuzzed from its own OpenAPI document with conformance checks, other content
types, refused requests and their log lines, and implausible values."""

import json
import shutil
import time

import httpx
import pytest
import schemathesis
from schemathesis import GenerationMode

from benchmarks.fuzz import KEY, Tally, fuzz_operation
from nbo.config import get_paths
from serving.openapi import OPENAPI_PATH
from serving.process import free_port, start_service, stop_service, wait_ready

DOCUMENT = json.loads(OPENAPI_PATH.read_text())
OPERATIONS = [(path, method.upper()) for path, methods in DOCUMENT["paths"].items() for method in methods]
POST_ROUTES = [path for path, method in OPERATIONS if method == "POST"]
WITH_KEY = {"x-api-key": KEY}


@pytest.fixture(scope="module")
def fuzzed(trained_home, tmp_path_factory):
    """The service on a private copy of the trained home, so fuzzed events touch no other test's store."""
    source, _ = trained_home
    paths = get_paths(tmp_path_factory.mktemp("fuzz") / "home")
    shutil.copytree(source.home, paths.home)
    port = free_port()
    log = paths.home / "service.log"
    process = start_service(paths, port, log, env={"NBO_API_KEY": KEY})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url, timeout_s=120)
        yield url, log
    finally:
        stop_service(process)


def test_every_route_of_the_live_service_is_fuzzed():
    assert {"/recommend", "/events", "/campaign", "/admin/reload", "/status"} <= set(POST_ROUTES)
    assert ("/customers/{customer_id}", "DELETE") in OPERATIONS


@pytest.mark.parametrize("path, method", OPERATIONS)
def test_no_input_breaks_the_contract(fuzzed, path, method):
    """Valid and invalid inputs alike: no 5xx, a declared status, and a body that conforms to its schema."""
    url, _ = fuzzed
    operation = schemathesis.openapi.from_url(f"{url}/docs.json")[path][method]
    tally = Tally()
    for mode in GenerationMode:  # an erasure rewrites the home's files (about 1.5 s): fewer of them
        fuzz_operation(operation, url, 3 if method == "DELETE" else 15, mode, tally)
    assert tally.cases > 0 and tally.server_errors == 0, tally.statuses
    assert not tally.failures, tally.examples


def test_the_committed_openapi_document_is_the_live_one(fuzzed):
    url, _ = fuzzed
    assert httpx.get(f"{url}/docs.json", timeout=10).json() == DOCUMENT


def error_of(answer: httpx.Response) -> dict:
    """The error document of an answer, checked to have the documented shape."""
    body = answer.json()
    assert (
        set(body["error"]) == {"status", "code", "message", "details"} and body["error"]["status"] == answer.status_code
    ), body
    return body["error"]


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=b",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/xml",
        "application/vnd.bentoml+pickle",
    ],
)
@pytest.mark.parametrize("route", POST_ROUTES)
def test_a_body_that_is_not_json_gets_415(fuzzed, route, content_type):
    url, _ = fuzzed
    answer = httpx.post(
        f"{url}{route}", content=b"--b--", headers={"content-type": content_type, **WITH_KEY}, timeout=10
    )
    assert answer.status_code == 415 and error_of(answer)["code"] == "unsupported_media_type"


@pytest.mark.parametrize("route", ["/events", "/campaign", "/admin/reload"])
def test_the_key_is_checked_before_the_body(fuzzed, route):
    url, _ = fuzzed
    answer = httpx.post(
        f"{url}{route}", content=b"{broken", headers={"content-type": "multipart/form-data"}, timeout=10
    )
    assert answer.status_code == 401 and error_of(answer)["code"] == "unauthorized"


def log_growth(log, calls) -> str:
    """What the service log gained while `calls` ran."""
    before = log.stat().st_size
    calls()
    time.sleep(1)  # the workers' output reaches the file through a pipe
    with log.open("rb") as text:
        text.seek(before)
        return text.read().decode(errors="replace")


def test_a_hundred_unauthenticated_malformed_calls_get_401_and_one_short_line_each(fuzzed):
    url, log = fuzzed
    statuses = []
    calls = lambda: statuses.extend(
        httpx.post(
            f"{url}/events", content=b'{"events": [{"amount": "x"}', headers={"content-type": ctype}, timeout=10
        ).status_code
        for ctype in ["application/json", "multipart/form-data"] * 50
    )
    grown = log_growth(log, calls)
    assert statuses == [401] * 100
    assert "Traceback" not in grown and len(grown.encode()) < 100 * 400  # one access line each (~330 bytes)


def test_a_refused_request_leaves_no_raw_value_in_the_log_or_the_answer(fuzzed):
    url, log = fuzzed
    answers = []
    calls = lambda: answers.extend(
        [
            httpx.post(f"{url}/recommend", json={"customer_id": "alice@example.com", "channel": "fax"}, timeout=10),
            httpx.post(
                f"{url}/events",
                json={
                    "events": [
                        {
                            "ts": "2025-01-01T00:00:00Z",
                            "customer_id": "alice@example.com",
                            "channel": "web",
                            "event_type": "purchase",
                            "amount": "lots",
                        }
                    ]
                },
                headers=WITH_KEY,
                timeout=10,
            ),
        ]
    )
    grown = log_growth(log, calls)
    assert [a.status_code for a in answers] == [400, 400]
    assert [d["loc"] for a in answers for d in error_of(a)["details"]] == [["channel"], ["events", 0, "amount"]]
    assert "refused POST /recommend with 400: literal_error" in grown
    assert "alice" not in grown and "Traceback" not in grown
    assert not any("alice" in a.text for a in answers)


@pytest.mark.parametrize("amount", [b"Infinity", b"-Infinity", b"NaN", b"1e309", b'"NaN"', b'"Infinity"'])
def test_amounts_that_are_not_finite_numbers_are_refused(fuzzed, amount):
    url, _ = fuzzed
    body = (
        b'{"events": [{"ts": "2025-01-01T00:00:00Z", "customer_id": "c1", "channel": "web", '
        b'"event_type": "purchase", "amount": ' + amount + b"}]}"
    )
    answer = httpx.post(
        f"{url}/events", content=body, headers={"content-type": "application/json", **WITH_KEY}, timeout=10
    )
    assert answer.status_code == 400
    assert [(d["loc"], d["type"]) for d in error_of(answer)["details"]] == [(["events", 0, "amount"], "finite_number")]


def test_implausible_and_unknown_values_are_quarantined_with_their_reason(fuzzed, trained_home):
    url, _ = fuzzed
    paths, _ = trained_home
    import pandas as pd

    known = pd.read_parquet(paths.raw / "customers.parquet")["customer_id"].iloc[0]
    decision = httpx.post(f"{url}/recommend", json={"customer_id": known, "channel": "web"}, timeout=10).json()
    offer = decision["offers"][0]["offer_id"]
    now = pd.Timestamp.now(tz="UTC").isoformat()
    event = {"ts": now, "customer_id": known, "channel": "web", "event_type": "offer_shown"}
    batch = [
        {**event, "offer_id": offer, "decision_id": decision["decision_id"]},
        {**event, "customer_id": "c\x00 1"},
        {**event, "ts": "1677-09-22T00:00:00Z"},
        {**event, "ts": "\uff12\uff10\uff12\uff15-01-01"},
        {**event, "offer_id": "no-such-offer"},
        {**event, "offer_id": offer, "decision_id": "no-such-decision"},
        {**event, "event_type": "product_view", "category": "no-such-category"},
    ]
    answer = httpx.post(f"{url}/events", json={"events": batch}, headers=WITH_KEY, timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["accepted"] == 1
    assert [(r["row"], r["field"], r["reason"].split(":")[0]) for r in body["rejected"]] == [
        (2, "customer_id", "customer_id contains a control character"),
        (3, "ts", "timestamp before 1990-01-01"),
        (4, "ts", "not a valid timestamp"),
        (5, "offer_id", "unknown offer"),
        (6, "decision_id", "unknown decision (not served by /recommend)"),
        (7, "category", "unknown category (in no item or offer)"),
    ]
    alone = httpx.post(f"{url}/events", json={"events": batch[4:5]}, headers=WITH_KEY, timeout=10)
    assert alone.status_code == 422
    assert error_of(alone)["details"] == [
        {"loc": ["events", 0, "offer_id"], "msg": "unknown offer", "type": "rejected_event"}
    ]


@pytest.mark.parametrize("route", ["/recommend", "/events", "/campaign"])
@pytest.mark.parametrize("chunked", [False, True])
def test_a_2_mb_body_is_refused_with_413(fuzzed, route, chunked):
    url, _ = fuzzed
    body = b'{"events": [' + b'{"ts": "2025-01-01T00:00:00Z"},' * 70_000 + b"{}]}"
    answer = httpx.post(
        f"{url}{route}",
        content=iter([body]) if chunked else body,
        headers={"content-type": "application/json", **WITH_KEY},
        timeout=30,
    )
    assert answer.status_code == 413 and error_of(answer)["code"] == "request_entity_too_large"
