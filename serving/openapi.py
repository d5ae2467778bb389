"""The service's OpenAPI document: BentoML's, completed with the error document, the API-key scheme and every
status a route may answer. The live /docs.json and docs/openapi.json are both this document."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

from serving.campaign_api import DEFAULT_PAGE_SIZE
from serving.campaign_jobs import MAX_PAGE_SIZE
from serving.errors import ErrorResponse
from serving.guard import KEYED_ROUTES, OPTIONALLY_KEYED_ROUTES

SCHEMA_REF = "#/components/schemas/{model}"
ERROR = {"content": {"application/json": {"schema": {"$ref": SCHEMA_REF.format(model="ErrorResponse")}}}}
COMMON_ERRORS = {
    "400": "The body is not valid JSON or not the route's schema: `details` names each field.",
    "413": "The body is over 1 MB.",
    "415": "The body is not `application/json`.",
    "500": "A fault of the service (a bug): reported in its log.",
}
ROUTE_ERRORS = {
    "/recommend": {"503": "The service cannot decide now (no model and no fallback ready); see `Retry-After`."},
    "/events": {
        "409": "An event_id already applied with different content.",
        "422": "No event of the batch was accepted: `details` gives each row's field and reason.",
        "503": "The online store is unreachable or loading: nothing was applied; retry after `Retry-After`.",
    },
    "/campaign": {
        "409": "No uplift model trained yet (`nbo uplift train`).",
        "503": "The service cannot plan now; see `Retry-After`.",
    },
    "/admin/reload": {
        "409": "The registry has no champion this code can serve: the current model stays.",
        "503": "The registry is unreachable: the current model stays.",
    },
    "/status": {},
    "/campaign/{job_id}": {
        "400": "`offset` or `page_size` is not an integer in bounds.",
        "404": "No campaign job has this id.",
    },
    "/customers/{customer_id}": {
        "400": "The customer id is blank or over 128 characters.",
        "404": "No customer id in the path.",
    },
}
FORGET: dict[
    str, Any
] = {  # DELETE /customers/{customer_id}: a Starlette route beside BentoML's, so BentoML does not document it
    "tags": ["Service APIs"],
    "operationId": "NextBestOffer__forget",
    "security": [{"ApiKey": []}],
    "description": "Erase a customer from raw events and tables, the online store, the decision log and outcomes, "
    "quarantine files, lifetime tables and training sets (docs/privacy.md).",
    "parameters": [
        {
            "name": "customer_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 128},
        }
    ],
    "responses": {
        "200": {
            "description": "Rows or keys erased, per place.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["erased"],
                        "properties": {"erased": {"type": "object", "additionalProperties": {"type": "integer"}}},
                    }
                }
            },
        }
    },
}
FORGET_ROUTE = ("/customers/{customer_id}",)
CAMPAIGN_JOB: dict[str, Any] = {  # GET /campaign/{job_id}: a Starlette route (serving.campaign_api), as FORGET
    "tags": ["Service APIs"],
    "operationId": "NextBestOffer__campaign_job",
    "security": [{"ApiKey": []}],
    "description": "A campaign job started by POST /campaign: its status (queued, running, done, failed with the "
    "reason), once done its counts and what was sent and why, and one page of its chosen rows, best first.",
    "parameters": [
        {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}},
        {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0, "default": 0}},
        {
            "name": "page_size",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
        },
    ],
}
JOB_ANSWER = {"content": {"application/json": {"schema": {"$ref": SCHEMA_REF.format(model="CampaignJobIODescriptor")}}}}
UNAUTHORISED = "Missing or wrong `x-api-key` header (checked before the body is read)."
DESCRIPTION = (
    "Next-best-offer decisions, live events and campaign plans. Every answer with a status of 400 or more "
    "carries the `ErrorResponse` document. Write and admin routes need the `x-api-key` header when "
    "`NBO_API_KEY` is set; `/recommend` too when `NBO_RECOMMEND_NEEDS_KEY` is true."
)
OPENAPI_PATH = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def error_schemas() -> dict:
    """The JSON schemas of the error document and its parts, by name."""
    schema = ErrorResponse.model_json_schema(ref_template=SCHEMA_REF)
    parts = schema.pop("$defs", {})
    return {**parts, "ErrorResponse": schema}


def _errors(path: str, statuses: tuple[str, ...] | None = None) -> dict:
    """The error answers of a route (those of `statuses` only, when given), each in the error document."""
    errors = {**COMMON_ERRORS, **ROUTE_ERRORS.get(path, {})}
    if path in KEYED_ROUTES or path in OPTIONALLY_KEYED_ROUTES or path in (*FORGET_ROUTE, "/campaign/{job_id}"):
        errors["401"] = UNAUTHORISED
    return {
        status: {"description": text, **ERROR}
        for status, text in sorted(errors.items())
        if statuses is None or status in statuses
    }


def _responses(path: str, responses: dict) -> dict:
    """A route's documented answers: its success, then each error it may answer."""
    kept = {str(status): answer for status, answer in responses.items() if int(status) < 400}
    return {**kept, **_errors(path)}


def _security(path: str) -> list[dict] | None:
    if path in KEYED_ROUTES:
        return [{"ApiKey": []}]
    if path in OPTIONALLY_KEYED_ROUTES:
        return [{}, {"ApiKey": []}]
    return None


def _by_reference(content: dict, schemas: dict) -> None:
    """Point a body's schema at its complete copy in the components: BentoML inlines a flattened one, whose
    top-level fields lose `null` (it keeps the first choice of an anyOf, so an optional field looks required)."""
    for media in content.values():
        title = media.get("schema", {}).get("title")
        if title in schemas:
            media["schema"] = {"$ref": SCHEMA_REF.format(model=title)}


def complete_openapi(document: dict) -> dict:
    """BentoML's document with the service's own title, the error document on every error status of every route
    of the service, the API-key scheme, and /readyz's 503."""
    document = json.loads(json.dumps(document))  # a copy, with the status codes as text
    document["info"] = {"title": "nbo: next best offer", "version": version("nbo"), "description": DESCRIPTION}
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(unused, None)
    schemas.update(error_schemas())
    document["components"]["securitySchemes"] = {
        "ApiKey": {
            "type": "apiKey",
            "in": "header",
            "name": "x-api-key",
            "description": "The value of $NBO_API_KEY on the server.",
        }
    }
    for path, operations in document["paths"].items():
        for operation in operations.values():
            if path in ROUTE_ERRORS:
                operation["responses"] = _responses(path, operation["responses"])
                for body in [operation.get("requestBody", {}), *operation["responses"].values()]:
                    _by_reference(body.get("content", {}), schemas)
                if (security := _security(path)) is not None:
                    operation["security"] = security
    document["paths"]["/customers/{customer_id}"] = {
        "delete": {
            **FORGET,
            "responses": {**FORGET["responses"], **_errors("/customers/{customer_id}", ("400", "401", "404", "500"))},
        }
    }
    campaign = document["paths"]["/campaign"]["post"]["responses"]
    campaign["202"] = {**campaign.pop("200"), "description": "The job is started; follow it at `status_url`."}
    document["paths"]["/campaign"]["post"]["responses"] = dict(sorted(campaign.items()))
    document["paths"]["/campaign/{job_id}"] = {
        "get": {
            **CAMPAIGN_JOB,
            "responses": {
                "200": {"description": "The job, with one page of its rows once done.", **JOB_ANSWER},
                **_errors("/campaign/{job_id}", ("400", "401", "404", "500")),
            },
        }
    }
    document["paths"]["/readyz"]["get"]["responses"]["503"] = {"description": "Not ready to serve yet.", **ERROR}
    return document


def openapi_document() -> dict:
    """The service's OpenAPI document, as /docs.json serves it."""
    from serving.service import NextBestOffer

    return complete_openapi(cast(Any, NextBestOffer).openapi_spec.asdict())


def write_openapi(path: Path = OPENAPI_PATH) -> Path:
    """Write the service's OpenAPI document (docs/openapi.json by default)."""
    path.write_text(json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n")
    return path
