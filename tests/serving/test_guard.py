"""The ASGI guard: the key before the body, JSON only, and one error document for every error answer."""

from __future__ import annotations

import json
import logging
import warnings

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from serving.guard import Guard

with warnings.catch_warnings():  # Starlette asks for httpx2; httpx is what the project has
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ROUTES = ("/recommend", "/events", "/campaign", "/admin/reload", "/status")
VALIDATION = {
    "error": "1 validation error for EventsRequestIODescriptor",
    "detail": [
        {
            "type": "finite_number",
            "loc": ["events", 0, "amount"],
            "msg": "Input should be a finite number",
            "input": "alice@example.com",
            "url": "https://errors.pydantic.dev",
        }
    ],
}


def inner_app(seen: list[str]) -> Starlette:
    """A stand-in for BentoML's app: it notes each body it reads and answers in the shapes BentoML does."""

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        seen.append(body.decode())
        answers = {
            "validation": lambda: JSONResponse(VALIDATION, status_code=400),
            "bentoml": lambda: JSONResponse([{"error": "no uplift model"}], status_code=409),
            "text": lambda: PlainTextResponse("request body over 10 bytes", status_code=413),
            "outage": lambda: JSONResponse({"error": "store down"}, status_code=503, headers={"Retry-After": "2"}),
        }
        return answers.get(body.decode(), lambda: JSONResponse({"ok": True}))()

    async def docs(request: Request) -> Response:
        return JSONResponse({"paths": {}})

    routes = [Route(path, endpoint, methods=["POST"]) for path in ROUTES] + [Route("/docs.json", docs)]
    return Starlette(routes=routes)


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setenv("NBO_API_KEY", "s3cret")
    monkeypatch.delenv("NBO_RECOMMEND_NEEDS_KEY", raising=False)
    seen: list[str] = []
    guarded = Guard(inner_app(seen), routes=ROUTES, openapi=lambda document: {**document, "completed": True})
    with TestClient(guarded) as client:
        client.seen = seen
        yield client


def error_of(answer) -> dict:
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message", "details"}, body
    assert body["error"]["status"] == answer.status_code
    assert answer.headers["content-type"] == "application/json"
    return body["error"]


@pytest.mark.parametrize("path", ["/events", "/campaign", "/admin/reload"])
@pytest.mark.parametrize("headers", [{}, {"x-api-key": "s3cre"}, {"x-api-key": "s3cret "}])
def test_a_request_without_the_key_is_refused_before_its_body_is_read(client, path, headers):
    answer = client.post(path, content=b"{not json", headers={"content-type": "multipart/form-data", **headers})
    assert answer.status_code == 401
    assert error_of(answer)["code"] == "unauthorized"
    assert client.seen == []


def test_the_key_opens_protected_routes_and_recommend_is_open_unless_asked(client, monkeypatch):
    assert client.post("/events", json={}, headers={"x-api-key": "s3cret"}).json() == {"ok": True}
    assert client.post("/recommend", json={}).json() == {"ok": True}
    assert client.post("/status", json={}).json() == {"ok": True}
    monkeypatch.setenv("NBO_RECOMMEND_NEEDS_KEY", "true")
    assert client.post("/recommend", json={}).status_code == 401
    monkeypatch.delenv("NBO_API_KEY")
    assert client.post("/events", json={}).json() == {"ok": True}


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/xml",
        "application/vnd.bentoml+pickle",
        "image/png",
    ],
)
@pytest.mark.parametrize("path", ROUTES)
def test_a_body_that_is_not_json_gets_415(client, path, content_type):
    answer = client.post(path, content=b"x", headers={"content-type": content_type, "x-api-key": "s3cret"})
    assert answer.status_code == 415
    assert error_of(answer)["code"] == "unsupported_media_type"
    assert client.seen == []


@pytest.mark.parametrize("content_type", [None, "application/json", "Application/JSON; charset=utf-8"])
def test_json_and_a_missing_content_type_pass(client, content_type):
    headers = {"x-api-key": "s3cret", **({"content-type": content_type} if content_type else {})}
    assert client.post("/events", content=b"{}", headers=headers).status_code == 200


def test_validation_errors_keep_loc_msg_and_type_and_never_the_input(client):
    answer = client.post("/events", content=b"validation", headers={"x-api-key": "s3cret"})
    error = error_of(answer)
    assert answer.status_code == 400 and error["code"] == "invalid_request"
    assert error["details"] == [
        {"loc": ["events", 0, "amount"], "msg": "Input should be a finite number", "type": "finite_number"}
    ]
    assert "alice" not in answer.text and "EventsRequestIODescriptor" not in answer.text


@pytest.mark.parametrize(
    "body, status, message",
    [("bentoml", 409, "no uplift model"), ("text", 413, "request body over 10 bytes"), ("outage", 503, "store down")],
)
def test_every_error_shape_becomes_the_error_document(client, body, status, message):
    answer = client.post("/campaign", content=body.encode(), headers={"x-api-key": "s3cret"})
    assert answer.status_code == status
    assert error_of(answer)["message"] == message
    if status == 503:
        assert answer.headers["retry-after"] == "2"


def test_unknown_routes_and_methods_get_the_error_document_too(client):
    assert error_of(client.get("/nowhere"))["code"] == "not_found"
    assert error_of(client.get("/events"))["code"] == "method_not_allowed"


def test_successful_answers_pass_untouched_and_the_openapi_document_is_completed(client):
    assert client.post("/recommend", json={}).content == json.dumps({"ok": True}, separators=(",", ":")).encode()
    assert client.get("/docs.json").json() == {"paths": {}, "completed": True}


def test_open_write_endpoints_are_warned_about_at_start(monkeypatch, caplog):
    monkeypatch.delenv("NBO_API_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="nbo.serving"):
        Guard(inner_app([]), routes=ROUTES, openapi=dict)
    assert [r.getMessage() for r in caplog.records] == [
        "NBO_API_KEY is not set: /events, /campaign, /admin/reload and DELETE /customers/{id} accept requests from "
        "anybody who can reach this port"
    ]
    caplog.clear()
    monkeypatch.setenv("NBO_API_KEY", "s3cret")
    with caplog.at_level(logging.WARNING, logger="nbo.serving"):
        Guard(inner_app([]), routes=ROUTES, openapi=dict)
    assert caplog.records == []
