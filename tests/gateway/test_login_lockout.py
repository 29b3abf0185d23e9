"""Brute-force protection: failures per user name and per client network, either factor."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from pytest_django import Settings

from tests.support.staff import STAFF_PASSWORD, admin_login, totp_code, wrong_code

pytestmark = pytest.mark.django_db

LIMIT = 3


@pytest.fixture(autouse=True)
def _guard(settings: Settings) -> None:
    settings.ADMIN_REQUIRE_2FA = True
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.ADMIN_LOGIN_COOLOFF_MINUTES = 15


def fail(device: TOTPDevice, kind: str, times: int, **extra: Any) -> None:
    for _ in range(times):
        if kind == "password":
            response = admin_login(Client(), "ops", "guess", totp_code(device), **extra)
        else:
            response = admin_login(Client(), "ops", STAFF_PASSWORD, wrong_code(device), **extra)
            # As if django-otp's backoff (1 s, 2 s, 4 s… after each wrong
            # code, per device) had passed before the next try.
            device.refresh_from_db()
            device.throttle_reset()
        assert response.status_code in (200, 429)


def log_in(device: TOTPDevice, **extra: Any) -> int:
    status: int = admin_login(
        Client(), "ops", STAFF_PASSWORD, totp_code(device), **extra
    ).status_code
    return status


@pytest.mark.parametrize("kind", ["password", "code"])
def test_one_failure_below_the_limit_still_lets_the_right_credentials_in(
    staff_user: tuple[User, TOTPDevice | None], kind: str
) -> None:
    _user, device = staff_user
    assert device is not None
    fail(device, kind, LIMIT - 1)
    assert log_in(device) == 302


@pytest.mark.parametrize("kind", ["password", "code"])
def test_at_the_limit_even_the_right_credentials_get_429(
    staff_user: tuple[User, TOTPDevice | None], kind: str
) -> None:
    _user, device = staff_user
    assert device is not None
    fail(device, kind, LIMIT)
    response = admin_login(Client(), "ops", STAFF_PASSWORD, totp_code(device))
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
    assert "sessionid" not in response.cookies


def test_a_locked_user_name_is_refused_from_any_address_and_a_locked_address_for_any_name(
    staff_user: tuple[User, TOTPDevice | None],
) -> None:
    _user, device = staff_user
    assert device is not None
    fail(device, "password", LIMIT)
    assert log_in(device, REMOTE_ADDR="203.0.113.9") == 429
    other = Client()
    assert admin_login(other, "someone-else", "guess", "123456").status_code == 429
    elsewhere = admin_login(Client(), "someone-else", "guess", "123456", REMOTE_ADDR="203.0.113.9")
    assert elsewhere.status_code == 200


def test_a_lockout_ends_after_the_cool_off_which_each_try_during_it_restarts(
    staff_user: tuple[User, TOTPDevice | None],
) -> None:
    _user, device = staff_user
    assert device is not None
    fail(device, "password", LIMIT)
    backdate(minutes=14)
    assert log_in(device) == 429
    backdate(minutes=14)
    assert log_in(device) == 429
    backdate(minutes=16)
    assert log_in(device) == 302


def backdate(*, minutes: int) -> None:
    """Move the recorded failures into the past (Axes reads Django's clock)."""
    attempt = AccessAttempt.objects.get()
    attempt.attempt_time -= timedelta(minutes=minutes)
    attempt.save()


def test_a_successful_login_clears_earlier_failures(
    staff_user: tuple[User, TOTPDevice | None],
) -> None:
    _user, device = staff_user
    assert device is not None
    fail(device, "password", LIMIT - 1)
    assert log_in(device) == 302
    fail(device, "password", LIMIT - 1)
    device.refresh_from_db()
    device.last_t = -1  # let the same time step's code be used again
    device.save()
    assert log_in(device) == 302


def test_a_code_sent_during_the_backoff_after_a_wrong_one_is_refused_but_not_counted(
    staff_user: tuple[User, TOTPDevice | None],
) -> None:
    _user, device = staff_user
    assert device is not None
    admin_login(Client(), "ops", STAFF_PASSWORD, wrong_code(device))
    assert log_in(device) == 200
    assert AccessAttempt.objects.get().failures_since_start == 1
