"""The staff dashboard page and its forms (Django test client)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from pytest_django import Settings

from billing.models import BudgetAuditEvent
from billing.selectors import pause_state_get
from devices.models import AuditEvent, Device
from gateway.core import clock as gateway_clock
from gateway.core import store
from gateway.models import ModelRoute
from tests.conftest import TestClock
from tests.dashboard.support import record_usage, register_device
from tests.support.staff import verified_client
from usage import breakers
from usage.days import budget_day
from usage.types import AttemptOutcome

pytestmark = pytest.mark.django_db

POLICY_START = "default-src 'self'; script-src 'self'; style-src 'self'"


@pytest.fixture
def staff(settings: Settings, staff_user: tuple[User, TOTPDevice | None]) -> Client:
    settings.ADMIN_REQUIRE_2FA = True
    user, device = staff_user
    return verified_client(user, device)


def test_the_page_lists_pending_devices_with_approve_and_reject_forms(staff: Client) -> None:
    pending, _ = register_device("Ada's laptop")
    register_device("Already approved", status="approved")
    page = staff.get("/dashboard/")
    assert page.status_code == 200
    html = page.content.decode()
    queue = html.split('id="pending"')[1].split("</section>")[0]
    assert "Ada&#x27;s laptop" in queue
    assert "Already approved" not in queue
    assert f'action="/dashboard/devices/{pending.pk}/approve"' in html
    assert f'action="/dashboard/devices/{pending.pk}/reject"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert page["Content-Security-Policy"].startswith(POLICY_START)
    assert "<script" not in html and "style=" not in html


def test_approving_goes_through_the_service_with_the_staff_user_and_ip(staff: Client) -> None:
    device, _ = register_device()
    response = staff.post(
        f"/dashboard/devices/{device.pk}/approve", {"tier": "paid"}, REMOTE_ADDR="198.51.100.4"
    )
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    device.refresh_from_db()
    assert (device.status, device.tier) == ("approved", "paid")
    event = AuditEvent.objects.filter(device=device, action="approve").get()
    assert (event.actor, event.ip) == ("ops", "198.51.100.4")
    assert "approved" in staff.get("/dashboard/").content.decode()


def test_rejecting_goes_through_the_service(staff: Client) -> None:
    device, _ = register_device()
    staff.post(f"/dashboard/devices/{device.pk}/reject")
    device.refresh_from_db()
    assert device.status == "rejected"
    assert AuditEvent.objects.filter(device=device, action="reject", actor="ops").exists()


def test_a_refused_transition_is_a_message_not_an_error_page(staff: Client) -> None:
    device, _ = register_device(status="rejected")
    response = staff.post(f"/dashboard/devices/{device.pk}/approve", follow=True)
    assert response.status_code == 200
    assert "Cannot approve device" in response.content.decode()
    device.refresh_from_db()
    assert device.status == "rejected"
    missing = staff.post("/dashboard/devices/dev_doesnotexist/reject", follow=True)
    assert "No such device" in missing.content.decode()


def test_pause_and_resume_are_audited_with_the_staff_user(staff: Client) -> None:
    staff.post("/dashboard/pause", {"reason": "provider incident"}, REMOTE_ADDR="198.51.100.4")
    state = pause_state_get()
    assert state.is_paused and state.reason == "provider incident"
    page = staff.get("/dashboard/").content.decode()
    assert "Paused: provider incident" in page
    staff.post("/dashboard/resume")
    assert not pause_state_get().is_paused
    actions = list(BudgetAuditEvent.objects.order_by("id").values_list("action", "actor", "ip"))
    assert actions == [("pause", "ops", "198.51.100.4"), ("resume", "ops", "127.0.0.1")]


def test_a_pause_without_a_reason_is_refused(staff: Client) -> None:
    response = staff.post("/dashboard/pause", {"reason": "  "}, follow=True)
    assert "needs a reason" in response.content.decode()
    assert not pause_state_get().is_paused


def test_charts_and_tables_show_the_ledger(
    staff: Client, settings: Settings, clock: TestClock
) -> None:
    settings.DAILY_BUDGET_USD = Decimal("10")
    # Mid-month, so "three days ago" is in this month's by-model chart.
    clock.set_offset(datetime(2026, 11, 15, 12, tzinfo=UTC).timestamp() - time.time())
    today = budget_day(gateway_clock.now())
    ada, _ = register_device("Ada's laptop", status="approved")
    bob, _ = register_device("Bob's phone", status="approved")
    record_usage(ada, day=today, cost="2.500000", model="openai-gpt-4o", provider="openai")
    record_usage(bob, day=today, cost="0.250000")
    record_usage(ada, day=today - timedelta(days=3), cost="1.000000")
    record_usage(ada, day=today - timedelta(days=40), cost="9.000000")  # outside both charts
    html = staff.get("/dashboard/").content.decode()
    assert '<dd id="spent">$2.75</dd>' in html
    assert '<dd id="budget">$10.00</dd>' in html
    assert ">28%</text>" in html  # the gauge (2.75 of 10)
    assert html.count('<rect class="bar"') == 30 + 2  # 30 days, 2 models
    # This month by model: gpt-4o $2.50 (the longest bar), llama $0.25 + $1.00.
    assert 'width="100.0" height="10"' in html and 'width="50.0" height="10"' in html
    assert "openai-gpt-4o" in html and "llama3.3-70b-instruct" in html
    top = html.split('id="top-devices"')[1].split("</section>")[0]
    assert top.index("Ada&#x27;s laptop") < top.index("Bob&#x27;s phone")
    assert "$2.50" in top and "$0.25" in top


def test_an_empty_ledger_still_renders(staff: Client) -> None:
    html = staff.get("/dashboard/").content.decode()
    assert "No spend in this period" in html
    assert "No spend this month." in html
    assert "No usage today." in html
    assert "No device is waiting." in html


def test_recent_audit_events_name_who_did_what(staff: Client) -> None:
    device, _ = register_device("Ada's laptop")
    staff.post(f"/dashboard/devices/{device.pk}/approve")
    events = staff.get("/dashboard/").content.decode().split('id="events"')[1]
    assert "approve" in events and "register" in events and "ops" in events
    assert Device.objects.get().status == "approved"


async def _report(attempts: list[tuple[str, AttemptOutcome]]) -> None:
    """This process's attempts, synced to the store as its background task would."""
    for target, outcome in attempts:
        breakers.report(target, outcome)
    await breakers.sync()
    await store.close_async_clients()


def test_the_providers_panel_shows_each_routes_breaker_and_error_rate(
    staff: Client, settings: Settings
) -> None:
    settings.BREAKER_FAILURES = 3
    for name in ("panel-down", "panel-up", "panel-idle"):
        ModelRoute.objects.create(
            public_name=name,
            provider="openai",
            provider_model="gpt-x",
            input_price_usd=Decimal(1),
            output_price_usd=Decimal(1),
        )
    down, up = breakers.route_target("panel-down"), breakers.route_target("panel-up")
    key = breakers.key_target("openai", "f1ngerpr1nt")
    attempts: list[tuple[str, AttemptOutcome]] = [
        (down, "failure"),
        (down, "failure"),
        (down, "timeout"),
        (up, "ok"),
        (up, "ok"),
        (up, "ok"),
        (up, "failure"),
        (key, "failure"),
    ]
    async_to_sync(_report)(attempts)

    html = staff.get("/dashboard/").content.decode()
    panel = html.split('id="providers"')[1].split("</section>")[0]
    rows = {row.split('"')[0]: row.split("</tr>")[0] for row in panel.split('<tr data-route="')[1:]}
    assert '<td class="breaker open">Open <span' in rows["panel-down"]
    assert "<td>OpenAI</td>" in rows["panel-down"] and ">3</td>" in rows["panel-down"]
    assert "100.0 %" in rows["panel-down"]
    assert '<td class="breaker closed">Closed</td>' in rows["panel-up"]
    assert '<td class="num">4</td><td class="num">25.0 %</td>' in rows["panel-up"]
    assert '<td class="num">0</td><td class="num">–</td>' in rows["panel-idle"]
    assert "f1ngerpr1nt" not in html and "key" not in panel.lower()
