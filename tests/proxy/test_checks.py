"""SPEC's check table over HTTP, up to admission: each row answers with its status, type and
code (never a 500), in SPEC's order, and a refused request consumes nothing."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import httpx
import pytest
from django.core.management import call_command

from tests.devices.support import Registered
from tests.proxy.conftest import Gateway, ledger
from tests.proxy.support import assert_refused, bearer, chat_body, post, remaining
from usage.models import BlockedNetwork

# A small size cap, and 127.0.0.1 (the test) as the trusted proxy so X-Forwarded-For
# gives each request the client address a test wants.
CHECKS_ENV = {
    "MAX_REQUEST_BYTES": "65536",
    "TRUSTED_PROXIES": "127.0.0.1/32",
    "AUTH_FAILURES_PER_IP_PER_HOUR": "5",
}
TOO_LARGE = b'{"model": "llama3-8b-instruct", "messages": [], "pad": "' + b"x" * 70_000 + b'"}'


@pytest.fixture
def checks(start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway(**CHECKS_ENV)


def test_an_address_in_a_blocked_network_is_refused_before_any_other_check(
    checks: Gateway, free_token: str
) -> None:
    BlockedNetwork.objects.create(cidr="198.51.100.0/24", reason="abuse")
    blocked = {"X-Forwarded-For": "198.51.100.7"}
    # Too large and unauthenticated, yet the block answers first.
    assert_refused(post(checks, TOO_LARGE, headers=blocked), 403, "ip_blocked")
    assert_refused(post(checks, chat_body(), token=free_token, headers=blocked), 403, "ip_blocked")
    other = {"X-Forwarded-For": "203.0.113.9"}
    assert post(checks, chat_body(), token=free_token, headers=other).status_code == 200
    assert len(ledger(1)) == 1


def test_an_address_with_too_many_failed_authentications_is_blocked(
    checks: Gateway, free_token: str
) -> None:
    guessing = {"X-Forwarded-For": "192.0.2.44"}
    for _ in range(5):
        assert_refused(
            post(checks, chat_body(), token="hzt_" + "G" * 43, headers=guessing),
            401,
            "invalid_credentials",
        )
    response = post(checks, chat_body(), token=free_token, headers=guessing)
    assert_refused(response, 403, "ip_blocked")
    assert 1 <= int(response.headers["retry-after"]) <= 15 * 60
    elsewhere = {"X-Forwarded-For": "192.0.2.45"}
    assert post(checks, chat_body(), token=free_token, headers=elsewhere).status_code == 200
    assert len(ledger(1)) == 1


def test_a_body_over_max_request_bytes_is_413_before_authentication_declared_or_chunked(
    checks: Gateway, free_token: str
) -> None:
    assert_refused(post(checks, TOO_LARGE), 413, "request_too_large")
    assert_refused(post(checks, TOO_LARGE, token=free_token), 413, "request_too_large")

    def chunked() -> Iterator[bytes]:  # no Content-Length: the cap is enforced while reading
        yield TOO_LARGE[:30_000]
        yield TOO_LARGE[30_000:]

    response = post(checks, chunked(), token=free_token)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert_refused(response, 413, "request_too_large")
    assert remaining(checks, free_token)["device"] == 100


def test_every_authentication_failure_is_one_generic_401(
    gateway: Gateway, make_device: Callable[..., Registered]
) -> None:
    device = make_device("approved")
    other = make_device("approved")
    revoked = make_device("revoked")
    body = chat_body()
    attempts = {
        "missing": {},
        "unknown token": bearer("hzt_" + "A" * 43),
        "malformed token": bearer("not-a-token"),
        "other scheme": {"Authorization": f"Basic {device.token}"},
        "revoked": bearer(revoked.token),
        "id of another device": {"X-Device-ID": other.id, "X-Session-Token": device.token},
        "bearer with another id": {**bearer(device.token), "X-Device-ID": other.id},
        "unknown id": {"X-Device-ID": "dev_" + "B" * 22, "X-Session-Token": device.token},
    }
    messages = set()
    for reason, headers in attempts.items():
        response = post(gateway, body, headers=headers)
        error = assert_refused(response, 401, "invalid_credentials")
        assert device.token not in response.text, reason
        messages.add(error["message"])
    assert len(messages) == 1
    # The same token with its own id works both ways.
    pair = {"X-Device-ID": device.id, "X-Session-Token": device.token}
    assert post(gateway, body, headers=pair).status_code == 200
    assert post(gateway, body, token=device.token).status_code == 200
    assert len(ledger(2)) == 2


def test_pending_rejected_and_suspended_devices_get_their_own_403(
    gateway: Gateway, make_device: Callable[..., Registered]
) -> None:
    pending = make_device("pending_approval")
    rejected = make_device("rejected")
    suspended = make_device("suspended")
    assert_refused(post(gateway, chat_body(), token=pending.token), 403, "device_pending_approval")
    assert_refused(post(gateway, chat_body(), token=rejected.token), 403, "device_rejected")
    error = assert_refused(
        post(gateway, chat_body(), token=suspended.token), 403, "device_suspended"
    )
    suspended.device.refresh_from_db()
    assert error["reason"] == "too many IPs"
    assert suspended.device.suspended_until is not None
    assert error["suspendedUntil"] == suspended.device.suspended_until.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


DEEP = "[" * 10_000 + "]" * 10_000
HI = '"messages": [{"role": "user", "content": "hi"}]'


def llama(fields: str) -> bytes:
    """A body for the free model with these raw JSON fields (text, so anything can be said)."""
    return ('{"model": "llama3-8b-instruct", ' + fields + "}").encode()


MALFORMED = {
    "not json": llama('"messages": [')[:-1],
    "not an object": b'[{"role": "user", "content": "hi"}]',
    "a string": b'"hello"',
    "empty body": b"",
    "invalid utf-8": b'{"model": "llama3-8b-instruct", "messages": "\xff\xfe"}',
    "no messages": b'{"model": "llama3-8b-instruct"}',
    "empty messages": llama('"messages": []'),
    "messages not a list": llama('"messages": "hi"'),
    "message not an object": llama('"messages": ["hi"]'),
    "unknown role": llama('"messages": [{"role": "x", "content": "hi"}]'),
    "content a number": llama('"messages": [{"role": "user", "content": 5}]'),
    "null user content": llama('"messages": [{"role": "user", "content": null}]'),
    "lone surrogate": llama('"messages": [{"role": "user", "content": "\\ud800"}]'),
    "tool message without its call id": llama('"messages": [{"role": "tool", "content": "x"}]'),
    "an image part": llama(
        '"messages": [{"role": "user", "content": '
        '[{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]'
    ),
    "model a number": b'{"model": 5, "messages": [{"role": "user", "content": "hi"}]}',
    "no model": b'{"messages": [{"role": "user", "content": "hi"}]}',
    "stream a string": llama('"stream": "yes", ' + HI),
    "boolean max_tokens": llama('"max_tokens": true, ' + HI),
    "negative max_tokens": llama('"max_tokens": -5, ' + HI),
    "zero max_tokens": llama('"max_tokens": 0, ' + HI),
    "fractional max_tokens": llama('"max_tokens": 10.5, ' + HI),
    "max_tokens a string": llama('"max_tokens": "10", ' + HI),
    "huge max_tokens": llama('"max_tokens": 1' + "0" * 30 + ", " + HI),
    "NaN": llama('"temperature": NaN, ' + HI),
    "Infinity": llama('"temperature": Infinity, ' + HI),
    "1e400": llama('"temperature": 1e400, ' + HI),
    "10 000-deep nesting": llama(HI + ', "metadata": ' + DEEP),
    "deep nesting in messages": llama('"messages": ' + DEEP),
    "max_tokens and max_completion_tokens differ": llama(
        '"max_tokens": 10, "max_completion_tokens": 11, ' + HI
    ),
    "temperature out of range": llama('"temperature": 7, ' + HI),
    "tools not a list": llama('"tools": {}, ' + HI),
    "n of 9": llama('"n": 9, ' + HI),
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_each_malformed_body_is_a_400_invalid_request(
    checks: Gateway, free_token: str, body: bytes
) -> None:
    response = post(checks, body, token=free_token, headers={"Content-Type": "application/json"})
    assert_refused(response, 400, "invalid_request")


def test_unknown_paths_are_404_and_wrong_methods_405(gateway: Gateway, free_token: str) -> None:
    missing = httpx.get(f"{gateway.url}/v1/nothing-here", headers=bearer(free_token), timeout=30)
    assert_refused(missing, 404, "not_found")
    for method, path in (("GET", "/v1/chat/completions"), ("POST", "/v1/models")):
        response = httpx.request(
            method, f"{gateway.url}{path}", headers=bearer(free_token), timeout=30
        )
        assert_refused(response, 405, "method_not_allowed")
        assert response.headers["allow"]


def test_route_and_tier_rules_answer_404_403_and_400(
    gateway: Gateway, free_token: str, paid_token: str
) -> None:
    assert_refused(
        post(gateway, chat_body(model="gpt-17"), token=free_token), 404, "model_not_found"
    )
    assert_refused(
        post(gateway, chat_body(model="openai-gpt-4o"), token=free_token), 403, "model_not_allowed"
    )
    for field in ("max_tokens", "max_completion_tokens"):
        error = assert_refused(
            post(gateway, chat_body(**{field: 1025}), token=free_token), 400, "max_tokens_exceeded"
        )
        assert error["limit"] == 1024
    assert_refused(
        post(gateway, chat_body(model="openai-gpt-4o", max_tokens=8193), token=paid_token),
        400,
        "max_tokens_exceeded",
    )
    # At the cap exactly is fine.
    assert post(gateway, chat_body(max_tokens=1024), token=free_token).status_code == 200
    assert len(ledger(1)) == 1


def test_the_first_failing_check_in_spec_order_answers(
    checks: Gateway, make_device: Callable[..., Registered]
) -> None:
    free = make_device("approved")
    pending = make_device("pending_approval")
    # auth before validation, validation before the route, route before tier, tier before cap
    assert_refused(post(checks, b"{nope", token=pending.token), 403, "device_pending_approval")
    assert_refused(post(checks, b"{nope"), 401, "invalid_credentials")
    assert_refused(
        post(checks, chat_body(model="gpt-17", messages=[]), token=free.token),
        400,
        "invalid_request",
    )
    assert_refused(
        post(checks, chat_body(model="gpt-17", max_tokens=99_999), token=free.token),
        404,
        "model_not_found",
    )
    assert_refused(
        post(checks, chat_body(model="openai-gpt-5", max_tokens=99_999), token=free.token),
        403,
        "model_not_allowed",
    )


def test_requests_refused_before_admission_consume_nothing_and_leave_no_record(
    gateway: Gateway, free_token: str
) -> None:
    before = remaining(gateway, free_token)
    refusals = [
        post(gateway, b"{nope", token=free_token),
        post(gateway, chat_body(model="gpt-17"), token=free_token),
        post(gateway, chat_body(model="openai-gpt-4o"), token=free_token),
        post(gateway, chat_body(max_tokens=5000), token=free_token),
    ]
    assert [r.status_code for r in refusals] == [400, 404, 403, 400]
    assert remaining(gateway, free_token) == before
    admitted = post(gateway, chat_body(), token=free_token)
    assert admitted.status_code == 200
    assert int(admitted.headers["x-ratelimit-remaining-device"]) == before["device"] - 1
    (record,) = ledger(1)
    assert record.request_id == admitted.headers["x-request-id"]


def test_a_paused_service_answers_503_service_paused_until_resumed(
    gateway: Gateway, free_token: str
) -> None:
    before = remaining(gateway, free_token)
    call_command("pause_service", reason="maintenance window", stdout=io.StringIO())
    try:
        response = post(gateway, chat_body(), token=free_token)
        assert_refused(response, 503, "service_paused")
        # Earlier checks still answer first while paused.
        assert_refused(
            post(gateway, chat_body(model="gpt-17"), token=free_token), 404, "model_not_found"
        )
        assert remaining(gateway, free_token) == before
    finally:
        call_command("resume_service", stdout=io.StringIO())
    assert post(gateway, chat_body(), token=free_token).status_code == 200
    assert len(ledger(1)) == 1


def test_the_request_id_is_the_gateways_own_whatever_the_client_sends(
    gateway: Gateway, free_token: str
) -> None:
    chosen = {"X-Request-ID": "req_chosen-by-the-client"}
    first = post(gateway, chat_body(), token=free_token, headers=chosen)
    second = post(gateway, chat_body(), token=free_token, headers=chosen)
    assert first.status_code == second.status_code == 200
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2 and "req_chosen-by-the-client" not in ids
    assert {record.request_id for record in ledger(2)} == ids
