from __future__ import annotations

import pytest
from django.http import StreamingHttpResponse
from django.test import Client
from pytest_django import Settings


def test_cors_preflight_is_answered_for_an_allowed_origin(client: Client) -> None:
    response = client.options(
        "/v1/chat/completions",
        HTTP_ORIGIN="tauri://localhost",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type, x-device-id",
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "tauri://localhost"
    assert "x-device-id" in response["Access-Control-Allow-Headers"]


def test_cors_ignores_an_unknown_origin(client: Client) -> None:
    response = client.get("/health", HTTP_ORIGIN="https://evil.example")
    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.django_db
def test_the_admin_works_with_debug_off_including_its_static_files(
    client: Client, settings: Settings
) -> None:
    assert settings.DEBUG is False
    login = client.get("/admin/login/")
    assert login.status_code == 200
    assert login["X-Request-ID"].startswith("req_")
    css = client.get("/static/admin/css/base.css")
    assert css.status_code == 200
    assert isinstance(css, StreamingHttpResponse)
    assert b"".join(css.streaming_content)
