"""The admin's "Blocked IPs" page: blocks for failed authentications, liftable."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from pytest_django import Settings

from gateway.core import clock
from tests.support.staff import verified_client
from usage import guard as usage_guard
from usage.errors import IpBlocked

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Block:
    ip: str
    until: float


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """usage.guard's admin functions over a dict, to show every kind of row."""
    blocks = {
        "198.51.100.7": clock.now() + 600,
        "2001:db8:0:1::/64": clock.now() + 60,
        "203.0.113.1": clock.now() - 1,  # already over
    }
    monkeypatch.setattr(
        usage_guard, "list_ip_blocks", lambda: [Block(ip, until) for ip, until in blocks.items()]
    )
    monkeypatch.setattr(usage_guard, "lift_ip_block", lambda ip: blocks.pop(ip, None) is not None)
    return blocks


@pytest.fixture
def staff(settings: Settings, staff_user: tuple[User, TOTPDevice | None]) -> Client:
    settings.ADMIN_REQUIRE_2FA = True
    return verified_client(*staff_user)


def test_current_blocks_are_listed_with_a_lift_button(
    guard: dict[str, float], staff: Client
) -> None:
    page = staff.get("/admin/ip-blocks/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "198.51.100.7" in html and "2001:db8:0:1::/64" in html
    assert "203.0.113.1" not in html
    assert html.count('value="Lift"') == 2
    assert "10 min" in html


def test_lifting_a_block_calls_the_guard(guard: dict[str, float], staff: Client) -> None:
    response = staff.post("/admin/ip-blocks/", {"ip": "198.51.100.7"}, follow=True)
    assert "Lifted the block on 198.51.100.7." in response.content.decode()
    assert "198.51.100.7" not in guard
    again = staff.post("/admin/ip-blocks/", {"ip": "198.51.100.7"}, follow=True)
    assert "198.51.100.7 was not blocked." in again.content.decode()


def test_the_admin_index_and_the_dashboard_link_to_the_page(
    guard: dict[str, float], staff: Client
) -> None:
    assert 'href="/admin/ip-blocks/"' in staff.get("/admin/").content.decode()
    assert 'href="/admin/ip-blocks/"' in staff.get("/dashboard/").content.decode()


def test_only_verified_staff_may_see_or_lift(
    guard: dict[str, float],
    settings: Settings,
    staff_user: tuple[User, TOTPDevice | None],
    plain_user: User,
) -> None:
    settings.ADMIN_REQUIRE_2FA = True
    user, _ = staff_user
    for client in (Client(), verified_client(plain_user, None), verified_client(user, None)):
        assert client.get("/admin/ip-blocks/").status_code == 302
        assert client.post("/admin/ip-blocks/", {"ip": "198.51.100.7"}).status_code == 302
    assert "198.51.100.7" in guard


def test_blocks_from_real_authentication_failures_can_be_lifted(
    settings: Settings, staff: Client
) -> None:
    settings.AUTH_FAILURES_PER_IP_PER_HOUR = 2
    for _ in range(2):
        async_to_sync(usage_guard.record_auth_failure)("198.51.100.9")
    with pytest.raises(IpBlocked):
        async_to_sync(usage_guard.check_ip)("198.51.100.9")
    assert "198.51.100.9" in staff.get("/admin/ip-blocks/").content.decode()
    lifted = staff.post("/admin/ip-blocks/", {"ip": "198.51.100.9"}, follow=True)
    assert "Lifted the block on 198.51.100.9." in lifted.content.decode()
    async_to_sync(usage_guard.check_ip)("198.51.100.9")  # no longer raises IpBlocked
    assert "No address is blocked." in staff.get("/admin/ip-blocks/").content.decode()
