"""Issue 15, staff findings: each attack performed over HTTP against a running gateway.

* staff without Django permissions acted through /api/admin/, /dashboard/
  and the IP-block page;
* the admin lockout counted per full IPv6 address (a /64 gave fresh tries);
* the TOTP device admin showed the seed (hex, QR page);
* the device admin answered ``?token_hash__startswith=`` lookups.

Staff log in through the admin's login form, password and TOTP code, as a
browser would; the gateway believes X-Forwarded-For from the test (a trusted
proxy on 127.0.0.1) so a test can come from any address.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django_otp.plugins.otp_totp.models import TOTPDevice
from pytest_django import Settings

from billing.models import BudgetAuditEvent
from billing.selectors import pause_state_get
from billing.services import budget_pause
from devices.models import AuditEvent, Device
from tests.devices.support import Registered
from tests.support.processes import GatewayServer
from tests.support.staff import STAFF_PASSWORD, make_staff, totp_code, wrong_code

FAILURE_LIMIT = 5
BLOCK_AFTER_FAILURES = 2

DEVICE_CHANGE = "devices.change_device"
DEVICE_VIEW = "devices.view_device"
PAUSE = "billing.pause_service"
BLOCK_CHANGE = "usage.change_blockednetwork"
BLOCK_VIEW = "usage.view_blockednetwork"


@pytest.fixture(autouse=True)
def _fast_test_hashing(settings: Settings) -> None:
    # Users are hashed for the servers (make_staff for_servers); the test
    # process itself never checks a password.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def server(gateway_servers: Callable[..., list[GatewayServer]]) -> GatewayServer:
    """A gateway with the second factor on, behind a "proxy" on 127.0.0.1.

    Plain HTTP: the production profile's Secure cookies would not come back.
    """
    return gateway_servers(
        ADMIN_REQUIRE_2FA="true",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        TRUSTED_PROXIES="127.0.0.1/32",
        ADMIN_LOGIN_FAILURE_LIMIT=str(FAILURE_LIMIT),
        AUTH_FAILURES_PER_IP_PER_HOUR=str(BLOCK_AFTER_FAILURES),
    )[0]


@pytest.fixture
def clients() -> Iterator[list[httpx.Client]]:
    opened: list[httpx.Client] = []
    yield opened
    for client in opened:
        client.close()


def login_form(client: httpx.Client, username: str, password: str, code: str, ip: str) -> int:
    """Post the admin login form from ``ip``: 302 logged in, 200 refused, 429 locked out."""
    client.get("/admin/login/", headers={"X-Forwarded-For": ip})
    response = client.post(
        "/admin/login/?next=/admin/",
        data={
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
            "username": username,
            "password": password,
            "otp_token": code,
            "next": "/admin/",
        },
        headers={"X-Forwarded-For": ip},
    )
    return response.status_code


def right_login(server: GatewayServer, username: str, otp_device: TOTPDevice, ip: str) -> int:
    """The right password and current code, from a fresh browser at ``ip``."""
    return attempt(server, username, STAFF_PASSWORD, totp_code(otp_device), ip)


def attempt(server: GatewayServer, username: str, password: str, code: str, ip: str) -> int:
    """One login from a fresh browser at ``ip`` (see ``login_form``)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return login_form(client, username, password, code, ip)


@pytest.fixture
def staff_session(
    server: GatewayServer, clients: list[httpx.Client]
) -> Callable[..., httpx.Client]:
    """``staff_session("name", DEVICE_CHANGE, ...)``: a logged-in browser-like client.

    The user is staff with a TOTP device and exactly the permissions named
    (``superuser=True`` for one holding all). Its posts carry the CSRF token.
    """

    def open_session(username: str, *permissions: str, superuser: bool = False) -> httpx.Client:
        user, otp_device = make_staff(username, for_servers=True, permissions=permissions)
        if superuser:
            get_user_model().objects.filter(pk=user.pk).update(is_superuser=True)
        client = httpx.Client(base_url=server.url, timeout=30)
        clients.append(client)
        status = login_form(client, username, STAFF_PASSWORD, totp_code(otp_device), "127.0.0.1")
        assert status == 302, f"{username} could not log in"
        client.headers["X-CSRFToken"] = client.cookies["csrftoken"]  # rotated at login
        return client

    return open_session


def audit_actions(device: Device) -> list[str]:
    events = AuditEvent.objects.filter(device=device).order_by("id")
    return list(events.values_list("action", flat=True))


# --- Finding: staff without permissions could do everything ----------------------------


def test_staff_without_permissions_are_refused_every_device_action_of_the_admin_api(
    staff_session: Callable[..., httpx.Client], make_device: Callable[..., Registered]
) -> None:
    pending = make_device().device
    approved = make_device("approved").device
    client = staff_session("nobody")
    attempts = [
        (f"/api/admin/devices/{pending.pk}/approve", {"tier": "paid", "user": "mallory"}),
        (f"/api/admin/devices/{pending.pk}/reject", {}),
        (f"/api/admin/devices/{approved.pk}/revoke", {}),
        (f"/api/admin/devices/{approved.pk}/suspend", {"hours": 1, "reason": "gotcha"}),
    ]
    for url, body in attempts:
        response = client.post(url, json=body)
        assert response.status_code == 403, (url, response.text)
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("permission_error", "permission_denied"), url
    listing = client.get("/api/admin/devices?status=pending_approval")
    assert listing.status_code == 403
    assert pending.pk not in listing.text
    pending.refresh_from_db()
    approved.refresh_from_db()
    assert (pending.status, pending.tier, pending.owner) == ("pending_approval", "free", None)
    assert (approved.status, approved.suspended_until) == ("approved", None)
    assert audit_actions(pending) == ["register"]
    assert audit_actions(approved) == ["register", "approve"]


def test_staff_with_the_device_change_permission_may_act_through_the_admin_api(
    staff_session: Callable[..., httpx.Client], make_device: Callable[..., Registered]
) -> None:
    pending = make_device().device
    approved = make_device("approved").device
    reader = staff_session("reader", DEVICE_VIEW)
    assert reader.get("/api/admin/devices").status_code == 200
    assert reader.post(f"/api/admin/devices/{pending.pk}/approve", json={}).status_code == 403

    operator = staff_session("operator", DEVICE_CHANGE)
    assert operator.get("/api/admin/devices").status_code == 200
    approve = operator.post(f"/api/admin/devices/{pending.pk}/approve", json={"tier": "paid"})
    assert approve.status_code == 200, approve.text
    suspend = operator.post(
        f"/api/admin/devices/{approved.pk}/suspend", json={"hours": 1, "reason": "abuse"}
    )
    assert suspend.status_code == 200, suspend.text
    pending.refresh_from_db()
    assert (pending.status, pending.tier) == ("approved", "paid")
    event = AuditEvent.objects.get(device=pending, action="approve")
    assert event.actor == "operator"


def test_staff_without_permissions_see_no_controls_and_are_refused_every_dashboard_action(
    staff_session: Callable[..., httpx.Client], make_device: Callable[..., Registered]
) -> None:
    pending = make_device(name="Pending laptop").device
    client = staff_session("nobody")
    page = client.get("/dashboard/")
    assert page.status_code == 200
    html = page.text
    assert "<form" in html  # the log-out form: the page's forms are rendered at all
    for control in ("/approve", "/reject", "/dashboard/pause", "/dashboard/resume", "ip-blocks"):
        assert control not in html, control
    assert pending.pk not in html.split('id="pending"')[1].split("</section>")[0]

    for url, data in [
        (f"/dashboard/devices/{pending.pk}/approve", {"tier": "paid"}),
        (f"/dashboard/devices/{pending.pk}/reject", {}),
        ("/dashboard/pause", {"reason": "gotcha"}),
    ]:
        assert client.post(url, data=data).status_code == 403, url
    assert not pause_state_get().is_paused
    budget_pause(reason="incident", actor="someone else")
    assert client.post("/dashboard/resume").status_code == 403
    assert pause_state_get().is_paused

    pending.refresh_from_db()
    assert (pending.status, pending.tier) == ("pending_approval", "free")
    assert audit_actions(pending) == ["register"]
    assert list(BudgetAuditEvent.objects.values_list("action", "actor")) == [
        ("pause", "someone else")
    ]
    assert "ip-blocks" not in client.get("/admin/").text


def test_each_dashboard_control_needs_exactly_its_permission(
    staff_session: Callable[..., httpx.Client], make_device: Callable[..., Registered]
) -> None:
    pending = make_device(name="Pending laptop").device
    approver = staff_session("approver", DEVICE_CHANGE)
    html = approver.get("/dashboard/").text
    assert f"/dashboard/devices/{pending.pk}/approve" in html
    assert "/dashboard/pause" not in html
    assert approver.post("/dashboard/pause", data={"reason": "x"}).status_code == 403
    approved = approver.post(f"/dashboard/devices/{pending.pk}/approve", data={"tier": "paid"})
    assert approved.status_code == 302
    pending.refresh_from_db()
    assert (pending.status, pending.tier) == ("approved", "paid")

    pauser = staff_session("pauser", PAUSE)
    html = pauser.get("/dashboard/").text
    assert 'action="/dashboard/pause"' in html
    assert "/approve" not in html and "/reject" not in html
    assert pauser.post("/dashboard/pause", data={"reason": "provider incident"}).status_code == 302
    assert pause_state_get().is_paused
    assert 'action="/dashboard/resume"' in pauser.get("/dashboard/").text
    assert pauser.post("/dashboard/resume").status_code == 302
    assert not pause_state_get().is_paused
    assert list(BudgetAuditEvent.objects.order_by("id").values_list("action", "actor")) == [
        ("pause", "pauser"),
        ("resume", "pauser"),
    ]


def block(server: GatewayServer, ip: str) -> None:
    """Fail authentication from ``ip`` until the gateway blocks it."""
    for _ in range(BLOCK_AFTER_FAILURES):
        httpx.get(
            f"{server.url}/v1/models",
            headers={"Authorization": "Bearer hzt_" + "0" * 43, "X-Forwarded-For": ip},
        )
    assert is_blocked(server, ip)


def is_blocked(server: GatewayServer, ip: str) -> bool:
    response = httpx.get(f"{server.url}/v1/models", headers={"X-Forwarded-For": ip})
    return response.status_code == 403 and response.json()["error"]["code"] == "ip_blocked"


def test_only_staff_with_the_block_change_permission_may_lift_an_ip_block(
    server: GatewayServer, staff_session: Callable[..., httpx.Client]
) -> None:
    # The in-process store of the embedded profile outlives a test: an address of its own.
    ip = "198.51.100.151"
    block(server, ip)
    nobody = staff_session("nobody")
    assert nobody.get("/admin/ip-blocks/").status_code == 403
    assert nobody.post("/admin/ip-blocks/", data={"ip": ip}).status_code == 403
    assert is_blocked(server, ip)

    reader = staff_session("reader", BLOCK_VIEW)
    page = reader.get("/admin/ip-blocks/")
    assert page.status_code == 200
    assert ip in page.text and 'value="Lift"' not in page.text
    assert reader.post("/admin/ip-blocks/", data={"ip": ip}).status_code == 403
    assert is_blocked(server, ip)

    lifter = staff_session("lifter", BLOCK_CHANGE)
    assert 'value="Lift"' in lifter.get("/admin/ip-blocks/").text
    assert lifter.post("/admin/ip-blocks/", data={"ip": ip}).status_code == 302
    assert not is_blocked(server, ip)


# --- Finding: the admin lockout counted per full IPv6 address ---------------------------


def test_twelve_addresses_of_one_ipv6_64_share_one_failure_count(
    server: GatewayServer, clients: list[httpx.Client]
) -> None:
    _, otp_device = make_staff("ops", for_servers=True)
    statuses = [
        attempt(server, f"guess{n}", "guess", "123456", ip)
        for n, ip in enumerate(f"2001:db8:5:6::{n:x}" for n in range(1, 13))
    ]
    # Each user name failed once: only the network's count can lock.
    assert statuses == [200] * (FAILURE_LIMIT - 1) + [429] * (12 - FAILURE_LIMIT + 1)
    same_64 = right_login(server, "ops", otp_device, "2001:db8:5:6:ffff:ffff:ffff:ffff")
    assert same_64 == 429
    next_64 = right_login(server, "ops", otp_device, "2001:db8:5:7::1")
    assert next_64 == 302


def test_a_user_name_is_locked_whatever_the_address(server: GatewayServer) -> None:
    _, ops_device = make_staff("ops", for_servers=True)
    _, dev_device = make_staff("dev", for_servers=True)
    statuses = [
        attempt(server, "ops", "guess", wrong_code(ops_device), ip)
        for ip in (f"198.51.{n}.7" for n in range(1, 13))
    ]
    assert statuses == [200] * (FAILURE_LIMIT - 1) + [429] * (12 - FAILURE_LIMIT + 1)
    fresh = "203.0.113.50"
    right = right_login(server, "ops", ops_device, fresh)
    assert right == 429
    other = right_login(server, "dev", dev_device, fresh)
    assert other == 302


def test_logging_in_to_another_account_does_not_forget_the_guesses_at_a_user_name(
    server: GatewayServer,
) -> None:
    _, ops_device = make_staff("ops", for_servers=True)
    _, own_device = make_staff("mallory", for_servers=True)
    here = "198.51.100.77"
    guesses = [attempt(server, "ops", "guess", "123456", here) for _ in range(FAILURE_LIMIT - 1)]
    assert guesses == [200] * (FAILURE_LIMIT - 1)
    own = right_login(server, "mallory", own_device, here)
    assert own == 302
    last_guess = attempt(server, "ops", "guess", "123456", here)
    assert last_guess == 429
    elsewhere = right_login(server, "ops", ops_device, "203.0.113.51")
    assert elsewhere == 429


# --- Finding: TOTP seeds shown in the admin ---------------------------------------------


def test_no_admin_page_shows_a_totp_seed_or_its_qr_code(
    staff_session: Callable[..., httpx.Client],
) -> None:
    root = staff_session("root", superuser=True)
    _, device = make_staff("ops", for_servers=True)
    assert device is not None
    device = TOTPDevice.objects.get(pk=device.pk)
    secrets = [
        device.key.lower(),
        device.key.upper(),
        base64.b32encode(device.bin_key).decode().rstrip("="),
    ]
    base = "/admin/otp_totp/totpdevice/"
    pages = {
        url: root.get(url, follow_redirects=True)
        for url in (
            base,
            f"{base}{device.pk}/change/",
            f"{base}{device.pk}/config/",
            f"{base}{device.pk}/qrcode/",
            f"{base}add/",
            f"{base}{device.pk}/history/",
            f"{base}{device.pk}/delete/",
            f"/admin/auth/user/{device.user_id}/change/",
        )
    }
    assert pages[f"{base}{device.pk}/change/"].status_code == 200  # the pages are real
    assert "authenticator" in pages[base].text
    for url, response in pages.items():
        for secret in secrets:
            assert secret not in response.text, url
        assert "otpauth://" not in response.text, url
        # django-otp's "QR Code" column and its link to the config page.
        assert "QR Code" not in response.text and ">qrcode</a>" not in response.text, url
        assert f"{device.pk}/config/" not in response.text, url
        assert response.status_code in (200, 403, 404), url
    for url in (f"{base}{device.pk}/config/", f"{base}{device.pk}/qrcode/"):
        # django-otp's QR views are gone: the admin's catch-all sends these elsewhere.
        assert pages[url].url.path != url, url
        assert pages[url].headers["Content-Type"].startswith("text/html"), url
    # Nor can a lookup tell the seed a character at a time.
    right, wrong = device.key[0], "0" if device.key[0] != "0" else "1"
    answers = [root.get(base, params={"key__startswith": prefix}) for prefix in (right, wrong)]
    assert [answer.status_code for answer in answers] == [400, 400]


# --- Finding: token-hash prefix enumeration in the admin --------------------------------


def test_an_admin_list_never_answers_a_question_about_a_token_hash(
    staff_session: Callable[..., httpx.Client], make_device: Callable[..., Registered]
) -> None:
    root = staff_session("root", superuser=True)
    device = make_device("approved", owner="acme").device
    digest = Device.objects.get(pk=device.pk).token_hash
    wrong_digest = "".join("0" if char != "0" else "1" for char in digest)
    questions = [
        ("/admin/devices/device/", "token_hash__startswith", 1),
        ("/admin/devices/device/", "token_hash__startswith", 8),
        ("/admin/devices/device/", "token_hash", 64),
        ("/admin/devices/device/", "token_hash__lte", 64),
        ("/admin/devices/auditevent/", "device__token_hash__startswith", 1),
        ("/admin/devices/owneraccount/", "devices__token_hash__startswith", 1),
    ]
    for url, lookup, length in questions:
        answers = [
            root.get(url, params={lookup: value[:length]}) for value in (digest, wrong_digest)
        ]
        # Refused whatever the value: a list that answered would differ between the two.
        assert [answer.status_code for answer in answers] == [400, 400], (url, lookup)
        assert not any(device.pk in answer.text for answer in answers), (url, lookup)


def test_the_user_list_never_answers_a_question_about_a_password_hash(
    staff_session: Callable[..., httpx.Client],
) -> None:
    # Django's own UserAdmin refuses these; pinned here beside the token hash.
    root = staff_session("root", superuser=True)
    stored = User.objects.get(username="root").password
    for lookup in ("password__startswith", "password", "password__regex"):
        for value in (stored[:12], "x"):
            answer = root.get("/admin/auth/user/", params={lookup: value})
            assert answer.status_code == 400, (lookup, value)
