"""Refused requests are logged as one line without the request's values; faults keep their traceback."""

from __future__ import annotations

import logging
import sys

import pytest
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, ValidationError

from serving.errors import QuietRefusals, normalise_error


class Asked(BaseModel):
    customer_id: int


def logged(error: BaseException) -> logging.LogRecord:
    """The record BentoML's log_exception makes for an exception, passed through the filter."""
    try:
        raise error
    except BaseException:
        record = logging.LogRecord(
            "bentoml._internal.server.http_app",
            logging.ERROR,
            __file__,
            1,
            "Exception on %s [%s]",
            ("/recommend", "POST"),
            sys.exc_info(),
        )
    assert QuietRefusals().filter(record)
    return record


def test_a_validation_error_is_one_warning_line_without_the_input():
    with pytest.raises(ValidationError) as raised:
        Asked.model_validate({"customer_id": "alice@example.com"})
    assert "alice@example.com" in str(raised.value)  # what BentoML's traceback would have shown
    record = logged(raised.value)
    line = logging.Formatter().format(record)
    assert line == "refused POST /recommend with 400: int_parsing"
    assert record.levelno == logging.WARNING and "\n" not in line


def test_a_client_error_raised_by_the_service_is_one_line():
    line = logging.Formatter().format(logged(BentoMLException("segment alice", error_code=409)))
    assert line == "refused POST /recommend with 409: BentoMLException"


def test_a_fault_keeps_its_traceback():
    record = logged(KeyError("boundary"))
    assert record.levelno == logging.ERROR and "Traceback" in logging.Formatter().format(record)


def test_an_error_document_is_kept_and_anything_else_becomes_one():
    document = {"error": {"status": 409, "code": "conflict", "message": "m", "details": []}}
    assert (
        normalise_error(409, b'{"error": {"status": 409, "code": "conflict", "message": "m", "details": []}}')
        == document
    )
    assert normalise_error(503, b"") == {
        "error": {"status": 503, "code": "service_unavailable", "message": "Service Unavailable", "details": []}
    }
    assert normalise_error(404, b'{"detail": "Not Found"}')["error"]["message"] == "Not Found"
    assert normalise_error(401, b'{"error": "Authorization error"}')["error"]["code"] == "unauthorized"
