from __future__ import annotations

import logging
from typing import Any, Protocol

import pytest
from django.test import Client

from tests.devices.support import Answer

pytestmark = pytest.mark.urls("tests.gateway.error_views")


class DjangoAnswer(Answer, Protocol):
    """A response of Django's test client: its headers read by name."""

    def __getitem__(self, header: str) -> str: ...


def assert_openai_error(
    response: DjangoAnswer, status: int, error_type: str, code: str
) -> dict[str, Any]:
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == error_type
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize("path", ["/v1/nope", "/api/nope", "/v1", "/v1/chat/completion"])
def test_unknown_api_paths_answer_openai_shaped_404(client: Client, path: str) -> None:
    response = client.get(path)
    assert_openai_error(response, 404, "not_found_error", "not_found")
    assert response["X-Request-ID"].startswith("req_")


def test_a_wrong_method_answers_405_with_allow(client: Client) -> None:
    response = client.get("/v1/post-only")
    assert_openai_error(response, 405, "invalid_request_error", "method_not_allowed")
    assert response["Allow"] == "POST"


@pytest.mark.parametrize("path", ["/v1/explode", "/api/explode"])
def test_an_unhandled_exception_is_a_json_500_with_the_request_id_and_no_details(
    client: Client, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    client.raise_request_exception = False
    with caplog.at_level(logging.ERROR):
        response = client.get(path)
    error = assert_openai_error(response, 500, "api_error", "internal_error")
    body = response.content.decode()
    assert "hunter2" not in body and "sk-live" not in body and "Traceback" not in body
    assert "RuntimeError" not in body
    assert error["requestId"] == response["X-Request-ID"]
    assert response["X-Request-ID"] in error["message"]
    # The operator still finds the traceback in the log, with the secret masked.
    logged = "\n".join(handler.format(r) for r in caplog.records for handler in [_formatter()])
    assert "RuntimeError" in logged
    assert "sk-live-abcdefghijklmnop" not in logged


def _formatter() -> logging.Handler:
    from gateway.core.logs import RedactingFormatter

    handler = logging.Handler()
    handler.setFormatter(RedactingFormatter("%(message)s"))
    return handler


def test_a_gateway_error_keeps_its_fields_and_retry_after(client: Client) -> None:
    response = client.get("/v1/limited")
    error = assert_openai_error(response, 429, "rate_limit_error", "rate_limit_exceeded")
    assert error["message"] == "Device rate limit exceeded"
    assert error["limit"] == 100 and error["window"] == "24 hours"
    assert response["Retry-After"] == "30"


def test_non_api_paths_keep_django_pages(client: Client) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
        (413, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "service_unavailable_error"),
        (504, "api_error"),
    ],
)
def test_the_error_type_follows_the_status_as_spec_says(status: int, expected: str) -> None:
    from gateway.core.errors import error_for_status, error_type_for

    assert error_type_for(status) == expected
    assert error_for_status(status).payload()["error"]["type"] == expected
