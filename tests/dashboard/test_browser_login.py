"""The admin login in a real browser, against a running gateway."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.dashboard.conftest import log_in, screenshot
from tests.support.processes import GatewayServer
from tests.support.staff import STAFF_PASSWORD, make_staff


@pytest.fixture
def server(gateway_servers: Callable[..., list[GatewayServer]]) -> GatewayServer:
    # Over plain HTTP on 127.0.0.1 the production profile's Secure cookies
    # would not come back; its TLS is the proxy's (tested elsewhere).
    return gateway_servers(
        ADMIN_REQUIRE_2FA="true", SESSION_COOKIE_SECURE="false", CSRF_COOKIE_SECURE="false"
    )[0]


def test_staff_log_into_the_admin_with_a_totp_code_in_a_browser(
    server: GatewayServer, browser_page: Any
) -> None:
    _, device = make_staff("ops", for_servers=True)
    page = browser_page
    log_in(page, f"{server.url}/admin/", device)
    assert page.title() == "Administration | Hanzo AI Gateway"
    screenshot(page, "admin.png")
    assert page.console_errors == []


def test_a_wrong_code_keeps_the_browser_on_the_login_page(
    server: GatewayServer, browser_page: Any
) -> None:
    make_staff("ops", for_servers=True)
    page = browser_page
    page.goto(f"{server.url}/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", STAFF_PASSWORD)
    page.fill("#id_otp_token", "000000")
    page.click("input[type=submit]")
    page.wait_for_load_state()
    assert "/admin/login/" in page.url
    assert "authentication code" in page.inner_text(".errornote")
    screenshot(page, "admin-login-refused.png")
