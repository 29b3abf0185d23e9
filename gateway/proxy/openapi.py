"""``GET /openapi.json``: the admin JSON API (drf-spectacular) and the client API, together.

drf-spectacular describes the DRF views (devices/api.py) from their
serializers. The client API (the async /v1 endpoints and the probes, which
are not DRF views), the OpenAI-shaped error object and the response headers
are written by hand in gateway/proxy/openapi.yaml; ``merge_client_api``, a
postprocessing hook, merges them in and gives every admin operation the same
error responses. The document is built once per process: it only changes with
the code.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer

CLIENT_API = Path(__file__).with_name("openapi.yaml")

# Errors every admin operation may answer; 404 and 409 only where a device is named.
ADMIN_ERRORS = {"400": "BadRequest", "401": "Unauthorized", "403": "Forbidden"}
ADMIN_DEVICE_ERRORS = {"404": "NotFound", "409": "Conflict"}


def _client_api() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CLIENT_API.read_text())
    return document


def merge_client_api(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    client_api = _client_api()
    components = result.setdefault("components", {})
    for section, entries in client_api["components"].items():
        components.setdefault(section, {}).update(entries)
    for path, item in result.get("paths", {}).items():
        for operation in item.values():
            _add_admin_errors(operation, names_a_device="{device_id}" in path)
    result["paths"] = {**client_api["paths"], **result.get("paths", {})}
    return result


def _add_admin_errors(operation: dict[str, Any], *, names_a_device: bool) -> None:
    responses = operation.setdefault("responses", {})
    errors = {**ADMIN_ERRORS, **(ADMIN_DEVICE_ERRORS if names_a_device else {})}
    for status, name in errors.items():
        responses.setdefault(status, {"$ref": f"#/components/responses/{name}"})
    for status, response in responses.items():
        if status.startswith("2") and "$ref" not in response:
            response.setdefault("headers", {})["X-Request-ID"] = {
                "$ref": "#/components/headers/X-Request-ID"
            }


@functools.cache
def openapi_document() -> bytes:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return bytes(OpenApiJsonRenderer().render(schema, renderer_context={}))


@require_GET
def openapi_json(request: HttpRequest) -> HttpResponse:
    """Public: the API's description is no secret."""
    return HttpResponse(openapi_document(), content_type="application/vnd.oai.openapi+json")
