"""Admin login: password, plus a TOTP code when ADMIN_REQUIRE_2FA is on."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from pytest_django import Settings

from tests.support.staff import (
    STAFF_PASSWORD,
    admin_login,
    make_staff,
    totp_code,
    verified_client,
    wrong_code,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_factor(settings: Settings) -> None:
    settings.ADMIN_REQUIRE_2FA = True


@pytest.fixture
def password_only(settings: Settings) -> None:
    settings.ADMIN_REQUIRE_2FA = False


def is_logged_into_admin(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


def test_the_login_page_asks_for_an_authentication_code_when_two_factor_is_on(
    two_factor: None,
) -> None:
    page = Client().get("/admin/login/")
    assert page.status_code == 200
    assert b'name="otp_token"' in page.content


def test_staff_with_password_and_current_code_reach_the_admin(
    two_factor: None, staff_user: tuple[User, TOTPDevice | None]
) -> None:
    _user, device = staff_user
    client = Client()
    response = admin_login(client, "ops", STAFF_PASSWORD, totp_code(device))
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert is_logged_into_admin(client)


def test_the_right_password_with_a_wrong_code_is_refused_like_a_wrong_password(
    two_factor: None, staff_user: tuple[User, TOTPDevice | None]
) -> None:
    _user, device = staff_user
    wrong_code_page = admin_login(Client(), "ops", STAFF_PASSWORD, wrong_code(device))
    wrong_password_page = admin_login(Client(), "ops", "not the password", totp_code(device))
    assert wrong_code_page.status_code == wrong_password_page.status_code == 200
    assert wrong_code_page.context["form"].non_field_errors() == (
        wrong_password_page.context["form"].non_field_errors()
    )
    assert wrong_code(device) not in wrong_code_page.content.decode()  # not shown again
    client = Client()
    admin_login(client, "ops", STAFF_PASSWORD, wrong_code(device))
    assert not is_logged_into_admin(client)


def test_the_right_password_without_a_code_is_refused(
    two_factor: None, staff_user: tuple[User, TOTPDevice | None]
) -> None:
    client = Client()
    response = admin_login(client, "ops", STAFF_PASSWORD)
    assert response.status_code == 200
    assert not is_logged_into_admin(client)


def test_a_code_cannot_be_used_twice(
    two_factor: None, staff_user: tuple[User, TOTPDevice | None]
) -> None:
    _user, device = staff_user
    code = totp_code(device)
    assert admin_login(Client(), "ops", STAFF_PASSWORD, code).status_code == 302
    replay = Client()
    assert admin_login(replay, "ops", STAFF_PASSWORD, code).status_code == 200
    assert not is_logged_into_admin(replay)


def test_a_staff_user_without_an_authenticator_cannot_log_in(two_factor: None) -> None:
    make_staff("fresh", enrol=False)
    client = Client()
    assert admin_login(client, "fresh", STAFF_PASSWORD, "123456").status_code == 200
    assert not is_logged_into_admin(client)


def test_a_password_only_session_is_sent_back_to_the_login_when_two_factor_is_on(
    two_factor: None, staff_user: tuple[User, TOTPDevice | None]
) -> None:
    user, _ = staff_user
    response = verified_client(user, None).get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_without_two_factor_the_password_alone_opens_the_admin(
    password_only: None, staff_user: tuple[User, TOTPDevice | None]
) -> None:
    page = Client().get("/admin/login/")
    assert b'name="otp_token"' not in page.content
    client = Client()
    assert admin_login(client, "ops", STAFF_PASSWORD).status_code == 302
    assert is_logged_into_admin(client)


@pytest.mark.parametrize("require_2fa", [True, False])
def test_a_user_who_is_not_staff_is_refused_by_the_admin(
    settings: Settings, require_2fa: bool, plain_user: User
) -> None:
    settings.ADMIN_REQUIRE_2FA = require_2fa
    client = Client()
    assert admin_login(client, "visitor", STAFF_PASSWORD).status_code == 200
    assert not is_logged_into_admin(client)
    assert verified_client(plain_user, None).get("/admin/").status_code == 302
