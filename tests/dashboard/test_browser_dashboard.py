"""The approval flow and the charts in headless Chromium, against a running gateway."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from gateway.core import clock
from gateway.proxy.routes import seed_routes
from tests.dashboard.conftest import log_in, screenshot
from tests.dashboard.support import record_usage, register_device
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import provider_environment
from tests.support.processes import GatewayServer, wait_for
from tests.support.staff import OPERATOR_PERMISSIONS, make_staff
from usage.days import budget_day
from usage.models import UsageRecord

MODELS = [
    ("openai-gpt-4o", "openai"),
    ("anthropic-claude-4-sonnet", "anthropic"),
    ("llama3.3-70b-instruct", "digitalocean"),
]


@pytest.fixture
def server(
    gateway_servers: Callable[..., list[GatewayServer]], provider: FakeProvider
) -> GatewayServer:
    """A gateway in front of the fake provider, with the second factor on.

    Plain HTTP on 127.0.0.1: the production profile's Secure cookies would
    not come back (its TLS is the proxy's).
    """
    seed_routes()
    return gateway_servers(
        **provider_environment(
            provider,
            ADMIN_REQUIRE_2FA="true",
            SESSION_COOKIE_SECURE="false",
            CSRF_COOKIE_SECURE="false",
            DAILY_BUDGET_USD="20",
        )
    )[0]


def chat(base_url: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"model": "llama3-8b-instruct", "messages": [{"role": "user", "content": "Hi"}]},
        headers=headers,
        timeout=30,
    )


def fill_ledger() -> None:
    today = budget_day(clock.now())
    regulars = [register_device(name, status="approved")[0] for name in ("Ada", "Bob", "Cy")]
    for days_ago in range(30):
        for index, device in enumerate(regulars):
            if days_ago == 0 or (days_ago * 2 + index) % 4:
                model, provider = MODELS[(days_ago + index) % 3]
                cost = f"{0.4 + ((days_ago * 7 + index * 5) % 11) / 10:.6f}"
                record_usage(
                    device,
                    day=today - timedelta(days=days_ago),
                    cost=cost,
                    model=model,
                    provider=provider,
                )


def test_staff_approve_a_pending_device_which_then_gets_through(
    server: GatewayServer, browser_page: Any
) -> None:
    _, otp_device = make_staff("ops", for_servers=True, permissions=OPERATOR_PERMISSIONS)
    registered = httpx.post(
        f"{server.url}/v1/devices/register",
        json={"deviceName": "Grace's workstation", "platform": "linux", "version": "2.0.1"},
    )
    assert registered.status_code == 201, registered.text
    device_id = registered.json()["deviceId"]
    bearer = {"Authorization": f"Bearer {registered.json()['sessionToken']}"}
    before = chat(server.url, bearer)
    assert before.status_code == 403
    assert before.json()["error"]["code"] == "device_pending_approval"
    fill_ledger()

    page = browser_page
    log_in(page, f"{server.url}/dashboard/", otp_device)
    pending = page.locator(f'#pending li[data-device-id="{device_id}"]')
    assert "Grace's workstation" in pending.inner_text()
    pending.get_by_role("button", name="Approve").click()
    page.wait_for_url(f"{server.url}/dashboard/")
    assert f"Device {device_id} approved." in page.inner_text(".messages")
    assert page.locator(f'#pending li[data-device-id="{device_id}"]').count() == 0

    after = chat(server.url, bearer)
    assert after.status_code == 200, after.text
    assert after.json()["object"] == "chat.completion"
    stats = httpx.get(f"{server.url}/v1/usage/stats", headers=bearer).json()
    assert stats["device"] == {"id": device_id, "status": "approved", "tier": "free"}
    # The usage record is settled after the response; it lands shortly.
    wait_for(
        lambda: UsageRecord.objects.filter(device_id=device_id, status="ok").exists(),
        timeout=10,
        what="the approved device's usage record",
    )

    day_bars = page.locator("#by-day rect.bar")
    assert day_bars.count() == 30
    heights = [float(day_bars.nth(index).get_attribute("height")) for index in range(30)]
    assert sum(1 for height in heights if height > 0) == 30
    assert page.locator("#by-model rect.bar").count() == 3
    assert page.locator("#top-devices tbody tr").count() == 3
    assert "approve" in page.inner_text("#events")
    screenshot(page, "dashboard.png")
    assert page.console_errors == []


def test_the_dashboard_fits_a_phone_screen(server: GatewayServer, browser_page: Any) -> None:
    _, otp_device = make_staff("ops", for_servers=True, permissions=OPERATOR_PERMISSIONS)
    register_device("Grace's phone")
    fill_ledger()
    page = browser_page
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, f"{server.url}/dashboard/", otp_device)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    box = page.locator("#by-day svg").bounding_box()
    assert box is not None and box["width"] <= 390
    screenshot(page, "dashboard-phone.png")
    assert page.console_errors == []
