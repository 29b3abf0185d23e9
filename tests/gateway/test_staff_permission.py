"""IsVerifiedStaff: the admin JSON API asks for the same login as the admin."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from pytest_django import Settings

from tests.support.staff import STAFF_PASSWORD, admin_login, make_staff, totp_code, verified_client

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.gateway.staff_api_views")]

URLS = ["/api/admin/staff-only", "/api/admin/default"]
DEVICE_TOKEN = "hzt_" + "A" * 43


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("require_2fa", [True, False])
def test_anonymous_callers_and_device_tokens_are_refused(
    settings: Settings, url: str, require_2fa: bool
) -> None:
    settings.ADMIN_REQUIRE_2FA = require_2fa
    client = Client()
    assert client.get(url).status_code == 401
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {DEVICE_TOKEN}").status_code == 401
    headers: dict[str, Any] = {"HTTP_X_DEVICE_ID": "dev_123", "HTTP_X_SESSION_TOKEN": DEVICE_TOKEN}
    assert client.get(url, **headers).status_code == 401
    assert client.post(url, {}, content_type="application/json", **headers).status_code == 401


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("require_2fa", [True, False])
def test_a_logged_in_user_who_is_not_staff_is_refused(
    settings: Settings, plain_user: User, url: str, require_2fa: bool
) -> None:
    settings.ADMIN_REQUIRE_2FA = require_2fa
    response = verified_client(plain_user, None).get(url)
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize(
    ("past_second_factor", "status"),
    [(False, 403), (True, 200)],
    ids=["without-second-factor-refused", "past-second-factor-served"],
)
def test_staff_is_served_only_past_the_second_factor_when_it_is_required(
    settings: Settings,
    staff_user: tuple[User, TOTPDevice | None],
    url: str,
    past_second_factor: bool,
    status: int,
) -> None:
    settings.ADMIN_REQUIRE_2FA = True
    user, device = staff_user
    client = verified_client(user, device if past_second_factor else None)
    assert client.get(url).status_code == status


def test_staff_logged_in_through_the_admin_form_is_served(
    settings: Settings, staff_user: tuple[User, TOTPDevice | None]
) -> None:
    settings.ADMIN_REQUIRE_2FA = True
    _user, device = staff_user
    client = Client()
    assert admin_login(client, "ops", STAFF_PASSWORD, totp_code(device)).status_code == 302
    assert client.get("/api/admin/staff-only").json() == {"user": "ops"}


def test_staff_with_a_password_is_enough_when_two_factor_is_off(settings: Settings) -> None:
    settings.ADMIN_REQUIRE_2FA = False
    user, _ = make_staff("ops", enrol=False)
    assert verified_client(user, None).get("/api/admin/staff-only").status_code == 200


def test_an_unverified_session_cannot_post_either(
    settings: Settings, staff_user: tuple[User, TOTPDevice | None]
) -> None:
    settings.ADMIN_REQUIRE_2FA = True
    user, _ = staff_user
    client = verified_client(user, None)
    response = client.post("/api/admin/staff-only", {}, content_type="application/json")
    assert response.status_code == 403
