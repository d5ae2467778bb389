"""The ASGI middleware in front of the service's routes, before BentoML parses anything.

It refuses a request without the API key (401) or with a body that is not JSON (415) before the body is read,
rewrites every answer of status 400 or more into the error document of serving.errors, and serves the OpenAPI
document completed by serving.openapi.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable

from nbo.settings import read_setting
from serving.errors import error_document, normalise_error

logger = logging.getLogger("nbo.serving")
KEYED_ROUTES = ("/events", "/campaign", "/admin/reload")  # writes and admin: the key, whenever one is set
OPTIONALLY_KEYED_ROUTES = ("/recommend",)  # the key when $NBO_RECOMMEND_NEEDS_KEY is true
JSON_TYPES = (b"", b"application/json")
Send = Callable


def key_matches(given: bytes) -> bool:
    """Whether a request may pass: no key is configured ($NBO_API_KEY), or it carries it (constant-time)."""
    expected = read_setting("api_key")
    return not expected or hmac.compare_digest(given, expected.encode())


def recommend_needs_key() -> bool:
    """Whether /recommend is protected too ($NBO_RECOMMEND_NEEDS_KEY=true); write and admin endpoints always are."""
    return read_setting("recommend_needs_key")


def needs_key(path: str) -> bool:
    """Whether a route asks for the API key now."""
    return path in KEYED_ROUTES or (path in OPTIONALLY_KEYED_ROUTES and recommend_needs_key())


def media_type(headers: dict[bytes, bytes]) -> bytes:
    """The request's media type without parameters, lower case (empty when absent)."""
    return headers.get(b"content-type", b"").split(b";")[0].strip().lower()


def warn_when_open() -> None:
    """One warning per worker at start when anybody who reaches the port may write."""
    if not read_setting("api_key"):
        logger.warning(
            "NBO_API_KEY is not set: %s and DELETE /customers/{id} accept requests from anybody who can "
            "reach this port",
            ", ".join(KEYED_ROUTES),
        )


async def answer(send: Send, document: dict) -> None:
    """Send an error document as the whole response."""
    body = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": document["error"]["status"],
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def is_error(status: int) -> bool:
    return status >= 400


def rewriting(send: Send, rewrite: Callable[[int, bytes], bytes], when: Callable[[int], bool] = is_error) -> Send:
    """A send that holds a response whose status is `when`'s, to send `rewrite`(status, whole body) as its body
    (JSON), and passes any other response through untouched."""
    held: dict = {}
    chunks: list[bytes] = []

    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            if not when(message["status"]):
                return await send(message)
            held.update(message)
            return None
        if not held or message["type"] != "http.response.body":
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return None
        body = rewrite(held["status"], b"".join(chunks))
        headers = [(k, v) for k, v in held.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
        await send(
            {
                **held,
                "headers": [
                    *headers,
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        return await send({"type": "http.response.body", "body": body})

    return wrapped


def as_error_document(status: int, body: bytes) -> bytes:
    """The error document of a response of status 400 or more, as bytes."""
    return json.dumps(normalise_error(status, body)).encode()


class Guard:
    """ASGI middleware: the key and the media type before the body, one error document after."""

    def __init__(self, app, routes: tuple[str, ...], openapi: Callable[[dict], dict]) -> None:
        self.app, self.routes, self.openapi = app, frozenset(routes), openapi
        warn_when_open()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == "/docs.json":
            return await self.app(scope, receive, rewriting(send, self.complete_docs, lambda status: True))
        if scope["method"] == "POST" and path in self.routes:
            headers = dict(scope["headers"])
            if needs_key(path) and not key_matches(headers.get(b"x-api-key", b"")):
                return await answer(send, error_document(401, "missing or wrong x-api-key header"))
            if media_type(headers) not in JSON_TYPES:
                return await answer(
                    send,
                    error_document(415, "send the request body as application/json", code="unsupported_media_type"),
                )
        return await self.app(scope, receive, rewriting(send, as_error_document))

    def complete_docs(self, status: int, body: bytes) -> bytes:
        """The OpenAPI document BentoML generates, completed (errors, security); an error as any other."""
        return json.dumps(self.openapi(json.loads(body))).encode() if status == 200 else as_error_document(status, body)
