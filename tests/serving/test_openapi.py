"""The committed OpenAPI document is the service's, with one error document and the API-key scheme."""

from __future__ import annotations

import json

from serving.guard import KEYED_ROUTES
from serving.openapi import OPENAPI_PATH, openapi_document

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


def test_the_committed_document_is_the_generated_one():
    assert json.loads(OPENAPI_PATH.read_text()) == openapi_document(), "run `nbo openapi` and commit docs/openapi.json"


def test_every_error_answer_of_every_route_is_the_error_document():
    document = openapi_document()
    routes = {path: ops["post"] for path, ops in document["paths"].items() if "post" in ops}
    assert {"/recommend", "/events", "/campaign", "/admin/reload", "/status"} <= set(routes)
    for path, operation in routes.items():
        errors = {status: answer for status, answer in operation["responses"].items() if int(status) >= 400}
        assert {"400", "413", "415"} <= set(errors), path
        assert all(answer["content"]["application/json"]["schema"] == ERROR_REF for answer in errors.values()), path
    assert {"409", "422", "503"} <= set(routes["/events"]["responses"])
    schema = document["components"]["schemas"]["ErrorResponse"]
    assert schema["required"] == ["error"]
    assert set(document["components"]["schemas"]["ErrorBody"]["required"]) == {"status", "code", "message"}


def test_the_api_key_scheme_is_declared_on_the_protected_routes():
    document = openapi_document()
    assert document["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "The value of $NBO_API_KEY on the server.",
    }
    for path in KEYED_ROUTES:
        assert document["paths"][path]["post"]["security"] == [{"ApiKey": []}]
        assert "401" in document["paths"][path]["post"]["responses"]
    forget = document["paths"]["/customers/{customer_id}"]["delete"]
    assert forget["security"] == [{"ApiKey": []}] and "401" in forget["responses"]
    assert document["paths"]["/recommend"]["post"]["security"] == [{}, {"ApiKey": []}]
    assert "security" not in document["paths"]["/status"]["post"]


def test_optional_fields_of_bodies_keep_null():
    """BentoML's inlined body schemas drop `null` from optional fields; the document points at the full ones."""
    document = openapi_document()
    for path, model in [("/recommend", "RecommendResponseIODescriptor"), ("/status", "StatusIODescriptor")]:
        answer = document["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{model}"}
        version = document["components"]["schemas"][model]["properties"]["model_version"]
        assert {"type": "null"} in version["anyOf"]
