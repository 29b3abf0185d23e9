"""Security headers on admin pages; HSTS and secure cookies only in production."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from pytest_django import Settings

from tests.support.staff import verified_client

pytestmark = pytest.mark.django_db

IS_PRODUCTION = settings.GATEWAY_PROFILE == "production"
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


@pytest.mark.parametrize("url", ["/admin/login/", "/admin/"])
def test_admin_pages_allow_no_inline_script_and_no_framing(
    url: str, staff_user: tuple[User, TOTPDevice | None]
) -> None:
    user, device = staff_user
    client = Client() if url == "/admin/login/" else verified_client(user, device)
    response = client.get(url, secure=IS_PRODUCTION)
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == POLICY
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.skipif(not IS_PRODUCTION, reason="the production profile sits behind TLS")
def test_production_pages_carry_hsts_and_secure_cookies() -> None:
    response = Client().get("/admin/login/", secure=True)
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")
    assert response.cookies["csrftoken"]["secure"] is True
    assert settings.SESSION_COOKIE_SECURE is True


@pytest.mark.skipif(IS_PRODUCTION, reason="the embedded profile serves plain HTTP")
def test_embedded_pages_work_over_plain_http_without_hsts_or_secure_cookies() -> None:
    response = Client().get("/admin/login/")
    assert response.status_code == 200
    assert "Strict-Transport-Security" not in response
    assert not response.cookies["csrftoken"]["secure"]
    assert settings.SESSION_COOKIE_SECURE is False


def test_the_deploy_check_warns_when_production_runs_without_two_factor(settings: Settings) -> None:
    from gateway.staff.admin_checks import two_factor_off_in_production

    settings.GATEWAY_PROFILE = "production"
    settings.ADMIN_REQUIRE_2FA = False
    assert [warning.id for warning in two_factor_off_in_production()] == ["hanzo.W070"]
    settings.ADMIN_REQUIRE_2FA = True
    assert two_factor_off_in_production() == []
    settings.GATEWAY_PROFILE = "embedded"
    settings.ADMIN_REQUIRE_2FA = False
    assert two_factor_off_in_production() == []
