"""One error document for every refused request, and one quiet log line for each.

Every answer with a status of 400 or more carries
``{"error": {"status": int, "code": str, "message": str, "details": [{"loc": [...], "msg": str, "type": str}]}}``.
BentoML's own answers (pydantic validation errors, its exceptions, Starlette's plain-text ones) and the body-size
limit's are rewritten into it by serving.guard; the service's own refusals build it directly.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any, TypeGuard

from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import JSONResponse

MAX_MESSAGE = 500  # characters of a plain-text body kept as the message


class ErrorDetail(BaseModel):
    """One thing wrong with the request."""

    loc: list[str | int] = Field(
        ...,
        description="Where: field names and list positions, from the body's root.",
        examples=[["events", 0, "amount"]],
    )
    msg: str = Field(..., description="What is wrong, in plain words.", examples=["Input should be a finite number"])
    type: str = Field(..., description="A stable, machine-readable kind of error.", examples=["finite_number"])


class ErrorBody(BaseModel):
    status: int = Field(..., description="The HTTP status, repeated.", examples=[400])
    code: str = Field(..., description="A stable, machine-readable name of the error.", examples=["invalid_request"])
    message: str = Field(..., description="What went wrong, for a person.")
    details: list[ErrorDetail] = Field(default_factory=list, description="Each invalid field, when known.")


class ErrorResponse(BaseModel):
    """The body of every answer with a status of 400 or more."""

    error: ErrorBody


def status_code_name(status: int) -> str:
    """A stable code for a status: its HTTP name in snake case (unauthorized, conflict, ...)."""
    try:
        return HTTPStatus(status).name.lower()
    except ValueError:
        return "error"


def error_document(status: int, message: str, details: list[dict] | None = None, code: str | None = None) -> dict:
    """The error document of one refusal."""
    return {
        "error": {
            "status": status,
            "code": code or status_code_name(status),
            "message": message,
            "details": details or [],
        }
    }


def refuse(ctx, status: int, message: str, details: list[dict] | None = None, code: str | None = None) -> Any:
    """An endpoint's own refusal, in the error document (BentoML copies the context's status onto a response): a
    JSONResponse, returned in place of the route's declared response model (typed Any for that reason)."""
    ctx.response.status_code = status
    return JSONResponse(error_document(status, message, details, code), status_code=status)


def is_error_document(data: Any) -> TypeGuard[dict]:
    """Whether a decoded body already is an error document."""
    error = data.get("error") if isinstance(data, dict) else None
    return isinstance(error, dict) and {"status", "code", "message", "details"} <= set(error)


def _detail(item: dict) -> dict:
    """A pydantic error as BentoML sends it, reduced to loc, msg and type (no input, no context, no link)."""
    return {
        "loc": [p if isinstance(p, int) else str(p) for p in item.get("loc", [])],
        "msg": str(item.get("msg", "")),
        "type": str(item.get("type", "invalid")),
    }


def normalise_error(status: int, body: bytes) -> dict:
    """The error document for a body in any shape the stack answers with: BentoML's validation errors
    ({"error": str, "detail": [...]}), its exceptions ([{"error": str}]), Starlette's ({"detail": str} or plain
    text), or an empty body."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        text = body.decode("utf-8", errors="replace").strip()
        return error_document(status, text[:MAX_MESSAGE] or HTTPStatus(status).phrase)
    if is_error_document(data):
        return data
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    message = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
    if isinstance(data, dict) and isinstance(data.get("detail"), list):
        details = [_detail(d) for d in data["detail"] if isinstance(d, dict)]
        return error_document(
            status, f"invalid request: {len(details)} error(s), see details", details, code="invalid_request"
        )
    if isinstance(data, dict):
        message = next((data[k] for k in ("error", "detail", "message") if isinstance(data.get(k), str)), message)
    return error_document(status, message)


def refused_status(error: BaseException | None) -> int | None:
    """The client-error status BentoML answers an exception with, or None for a server error."""
    if isinstance(error, ValidationError):
        return 400
    if isinstance(error, BentoMLException) and error.error_code < 500:
        return int(error.error_code)
    return None


class QuietRefusals(logging.Filter):
    """BentoML logs each refused request as an ERROR with a traceback, whose text quotes the raw input. A client's
    mistake becomes one WARNING line with the route, the status and the kinds of error, never the input."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        status = refused_status(error)
        if status is None:
            return True
        kinds = (
            sorted({e["type"] for e in error.errors()})
            if isinstance(error, ValidationError)
            else [type(error).__name__]
        )
        path, method = record.args if isinstance(record.args, tuple) and len(record.args) == 2 else ("?", "?")
        record.msg, record.args = "refused %s %s with %d: %s", (method, path, status, ", ".join(kinds))
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_refusal_logs() -> None:
    """Install QuietRefusals on the logger BentoML reports request exceptions with (once per process)."""
    bentoml_requests = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, QuietRefusals) for f in bentoml_requests.filters):
        bentoml_requests.addFilter(QuietRefusals())
