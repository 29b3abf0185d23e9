"""``GET /openapi.json`` describes what the running gateway really answers.

The document is fetched from a running gateway, checked as OpenAPI 3.1, and
then every live response below, errors included, is validated against it by
openapi-core: status, content type, body schema and the declared headers
(X-Request-ID, X-RateLimit-*, Retry-After, X-Request-Cost-USD).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
from django.http import HttpResponse
from django.test import Client
from openapi_core import Config, OpenAPI
from openapi_core.contrib.django import DjangoOpenAPIRequest, DjangoOpenAPIResponse
from openapi_core.datatypes import RequestParameters
from openapi_core.exceptions import OpenAPIError
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from werkzeug.datastructures import Headers, ImmutableMultiDict

from tests.devices.support import Registered
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway

if TYPE_CHECKING:
    # What Django's test client returns (a type django-stubs declares, not Django).
    from django.test.client import _MonkeyPatchedWSGIResponse as TestResponse

REGISTRATION = {"deviceName": "Ada's laptop", "platform": "macos", "version": "1.4.2"}


class HttpxRequest:
    """openapi-core's request protocol over an httpx request."""

    def __init__(self, request: httpx.Request) -> None:
        self.request = request
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qs(request.url.query.decode())),
            header=Headers(dict(request.headers)),
            cookie=ImmutableMultiDict(),
        )

    @property
    def host_url(self) -> str:
        return f"{self.request.url.scheme}://{self.request.url.netloc.decode()}"

    @property
    def path(self) -> str:
        return self.request.url.path

    @property
    def method(self) -> str:
        return self.request.method.lower()

    @property
    def body(self) -> bytes | None:
        return self.request.content or None

    @property
    def content_type(self) -> str:
        content_type: str = self.request.headers.get("content-type", "")
        return content_type


class HttpxResponse:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status_code = response.status_code
        self.content_type = response.headers.get("content-type", "")
        self.headers = Headers(dict(response.headers))
        self.data = response.content


class Described(NamedTuple):
    gateway: Gateway
    openapi: OpenAPI
    document: dict[str, Any]


@pytest.fixture
def described(
    start_gateway: Callable[..., Gateway], make_device: Callable[..., Registered]
) -> Described:
    gateway = start_gateway(REGISTRATIONS_PER_IP_PER_HOUR="2", RATE_LIMIT_FREE_DEVICE_PER_DAY="1")
    response = httpx.get(f"{gateway.url}/openapi.json")  # no credentials: it is public
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.oai.openapi+json")
    document = response.json()
    validate(document)  # a valid OpenAPI 3.1 document
    # Server-sent events are text to openapi-core; their chunks are checked by ``stream_chunks``.
    config = Config(extra_media_type_deserializers={"text/event-stream": bytes.decode})
    return Described(gateway, OpenAPI.from_dict(document, config=config), document)


def stream_chunks(document: dict[str, Any], response: httpx.Response) -> list[dict[str, Any]]:
    """Each ``data:`` event of a stream, validated as a ChatCompletionChunk."""
    components = document["components"]
    schema = {"$ref": "#/components/schemas/ChatCompletionChunk", "components": components}
    events = [line[len("data: ") :] for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(event) for event in events[:-1]]
    for chunk in chunks:
        OAS31Validator(schema).validate(chunk)
    return chunks


def conforms(openapi: OpenAPI, response: httpx.Response) -> httpx.Response:
    openapi.validate_response(HttpxRequest(response.request), HttpxResponse(response))
    return response


def test_the_description_covers_every_client_and_admin_endpoint(described: Described) -> None:
    paths = set(described.document["paths"])
    assert paths >= {
        "/health",
        "/health/ready",
        "/v1/devices/register",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/messages",
        "/v1/models",
        "/v1/usage/stats",
        "/api/admin/devices",
        "/api/admin/devices/{device_id}/approve",
        "/api/admin/devices/{device_id}/reject",
        "/api/admin/devices/{device_id}/revoke",
        "/api/admin/devices/{device_id}/suspend",
    }


def test_live_client_responses_and_errors_match_the_description(
    described: Described, make_device: Callable[..., Registered], provider: FakeProvider
) -> None:
    gateway, openapi, document = described
    url = gateway.url
    paid = make_device("approved", tier="paid", owner="acme").token
    free = make_device("approved").token
    pending = make_device().token

    def check(response: httpx.Response, status: int) -> httpx.Response:
        assert response.status_code == status, response.text
        return conforms(openapi, response)

    check(httpx.get(f"{url}/health"), 200)
    check(httpx.get(f"{url}/health/ready"), 200)

    register = f"{url}/v1/devices/register"
    check(httpx.post(register, json=REGISTRATION), 201)
    check(httpx.post(register, json={"deviceName": ""}), 400)
    check(httpx.post(register, json=REGISTRATION), 201)
    limited = check(httpx.post(register, json=REGISTRATION), 429)
    assert limited.json()["error"]["code"] == "registration_rate_limit_exceeded"

    completion = check(gateway.chat(paid, max_tokens=20), 200)
    assert completion.headers["x-request-cost-usd"]
    assert completion.headers["x-ratelimit-remaining-device"]
    streamed = check(gateway.chat(paid, stream=True, stream_options={"include_usage": True}), 200)
    chunks = stream_chunks(document, streamed)
    assert chunks[-1]["usage"]["cost_usd"] > 0
    check(gateway.chat(free), 200)
    refused = check(gateway.chat(free), 429)
    assert refused.json()["error"]["code"] == "device_rate_limit_exceeded"
    assert refused.headers["retry-after"]
    check(gateway.chat("hzt_" + "x" * 43), 401)
    check(gateway.chat(pending), 403)
    check(gateway.chat(paid, model="no-such-model"), 404)
    check(gateway.chat(paid, messages=[]), 400)
    check(gateway.chat(paid, model="openai-gpt-4o"), 200)
    check(gateway.chat(make_device("approved").token, model="openai-gpt-4o"), 403)
    failing = [{"role": "user", "content": "[[fault:http_500]]"}]
    check(gateway.chat(paid, messages=failing), 502)
    overloaded = [{"role": "user", "content": "[[fault:http_429]]"}]
    assert check(gateway.chat(paid, messages=overloaded), 503).headers["retry-after"]

    bearer = {"Authorization": f"Bearer {paid}"}
    check(httpx.get(f"{url}/v1/models", headers=bearer), 200)
    check(httpx.get(f"{url}/v1/models"), 401)
    stats = check(httpx.get(f"{url}/v1/usage/stats", headers=bearer), 200)
    assert stats.json()["limits"]["user"] is not None
    no_owner = {"Authorization": f"Bearer {free}"}
    assert (
        check(httpx.get(f"{url}/v1/usage/stats", headers=no_owner), 200).json()["limits"]["user"]
        is None
    )
    check(httpx.get(f"{url}/v1/usage/stats"), 401)


def test_live_embeddings_responses_and_errors_match_the_description(
    described: Described, make_device: Callable[..., Registered], provider: FakeProvider
) -> None:
    gateway, openapi, _document = described
    url = f"{gateway.url}/v1/embeddings"
    paid = {"Authorization": f"Bearer {make_device('approved', tier='paid').token}"}
    model = "openai-text-embedding-3-small"

    def check(status: int, headers: dict[str, str], **body: Any) -> httpx.Response:
        response = httpx.post(url, json=body, headers=headers, timeout=30)
        assert response.status_code == status, response.text
        return conforms(openapi, response)

    floats = check(200, paid, model=model, input=["a", "b"], dimensions=4)
    assert len(floats.json()["data"]) == 2 and floats.headers["x-request-cost-usd"]
    check(200, paid, model=model, input="a", encoding_format="base64")
    check(400, paid, model=model, input=[[1, 2]])
    check(400, paid, model="openai-gpt-4o", input="a")
    check(404, paid, model="no-such-model", input="a")
    check(401, {}, model=model, input="a")
    check(502, paid, model=model, input="[[fault:http_500]]")
    models = httpx.get(f"{gateway.url}/v1/models", headers=paid, timeout=30)
    assert {entry["kind"] for entry in conforms(openapi, models).json()["data"]} == {
        "chat",
        "embedding",
    }


def test_live_messages_responses_and_errors_match_the_description(
    described: Described, make_device: Callable[..., Registered], provider: FakeProvider
) -> None:
    gateway, openapi, _document = described
    url = f"{gateway.url}/v1/messages"
    paid = {"x-api-key": make_device("approved", tier="paid").token}
    free = {"x-api-key": make_device("approved").token}
    hello = [{"role": "user", "content": "hi [[tokens:3]]"}]

    def check(status: int, headers: dict[str, str], **body: Any) -> httpx.Response:
        body = {"model": "llama3-8b-instruct", "max_tokens": 20, "messages": hello, **body}
        response = httpx.post(url, json=body, headers=headers, timeout=30)
        assert response.status_code == status, response.text
        return conforms(openapi, response)

    message = check(200, paid)
    assert message.json()["type"] == "message" and message.headers["x-request-cost-usd"]
    streamed = check(200, paid, stream=True)
    assert streamed.text.startswith("event: message_start\n")
    assert streamed.text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')
    check(400, paid, max_tokens=None)
    check(401, {})
    check(403, free, model="anthropic-claude-4-sonnet")
    check(404, paid, model="no-such-model")
    check(502, paid, messages=[{"role": "user", "content": "[[fault:http_500]]"}])
    overloaded = check(503, paid, messages=[{"role": "user", "content": "[[fault:http_429]]"}])
    assert overloaded.headers["retry-after"]
    assert overloaded.json()["error"]["type"] == "overloaded_error"


def admin(
    openapi: OpenAPI, client: Client, method: str, path: str, status: int, **body: Any
) -> TestResponse:
    if method == "get":
        response = client.get(path, body)
    else:
        response = client.post(path, body, content_type="application/json")
    assert response.status_code == status, response.content
    assert isinstance(response, HttpResponse)
    request = DjangoOpenAPIRequest(response.wsgi_request)
    openapi.validate_response(request, DjangoOpenAPIResponse(response))
    return response


def test_admin_api_responses_and_errors_match_the_description(
    described: Described, staff_api: Client, make_device: Callable[..., Registered]
) -> None:
    openapi = described.openapi
    base = "/api/admin/devices"
    device = make_device()
    admin(openapi, staff_api, "get", base, 200)
    admin(openapi, staff_api, "get", f"{base}?status=pending_approval", 200)
    admin(openapi, staff_api, "get", f"{base}?status=sleeping", 400)
    admin(openapi, staff_api, "post", f"{base}/{device.id}/approve", 200, tier="paid", user="acme")
    admin(openapi, staff_api, "post", f"{base}/{device.id}/suspend", 200, hours=2, reason="x")
    admin(openapi, staff_api, "post", f"{base}/{device.id}/suspend", 400, hours=-1, reason="x")
    admin(openapi, staff_api, "post", f"{base}/{device.id}/revoke", 200)
    admin(openapi, staff_api, "post", f"{base}/{device.id}/approve", 409)
    admin(openapi, staff_api, "post", f"{base}/dev_doesnotexist0000000000/reject", 404)
    admin(openapi, Client(), "get", base, 401)


@pytest.mark.parametrize(
    ("headers", "error_type"),
    [
        ({"X-Request-ID": "req_" + "0" * 32}, "rate_limit_error"),  # no Retry-After
        ({"X-Request-ID": "req_" + "0" * 32, "Retry-After": "5"}, "api_error"),  # wrong type
        ({"Retry-After": "5"}, "rate_limit_error"),  # no request id
    ],
)
def test_a_response_that_strays_from_the_description_is_caught(
    described: Described, headers: dict[str, str], error_type: str
) -> None:
    request = httpx.Request("POST", f"{described.gateway.url}/v1/chat/completions", json={})
    stray = httpx.Response(
        429,
        json={"error": {"message": "slow down", "type": error_type, "code": "x"}},
        headers=headers,
        request=request,
    )
    with pytest.raises(OpenAPIError):
        conforms(described.openapi, stray)
