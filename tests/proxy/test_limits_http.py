"""Admission over HTTP: each limit layer's 429, the device cap and the global budget, with
SPEC's fields, and a refusal that takes nothing from any layer and leaves no record."""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from tests.devices.support import Registered
from tests.proxy.conftest import Gateway, ledger
from tests.proxy.support import assert_refused, chat_body, post, remaining
from usage.windows import BURST_SECONDS, DAY

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# Makes (with the make_device fixture) the devices a test sends from.
DevicesFor = Callable[[Callable[..., Registered]], list[Registered]]


def owned_by(name: str) -> DevicesFor:
    return lambda make_device: [make_device("approved", owner=name) for _ in range(2)]


# layer -> (the environment that makes it tiny, its code, its window, the devices to use)
LAYERS: dict[str, tuple[dict[str, str], str, str, DevicesFor]] = {
    "device": (
        {"RATE_LIMIT_FREE_DEVICE_PER_DAY": "2"},
        "device_rate_limit_exceeded",
        "24 hours",
        lambda make_device: [make_device("approved")],
    ),
    "ip": (
        {"RATE_LIMIT_FREE_IP_PER_DAY": "2"},
        "ip_rate_limit_exceeded",
        "24 hours",
        lambda make_device: [make_device("approved") for _ in range(2)],
    ),
    "user": (
        {"RATE_LIMIT_FREE_USER_PER_DAY": "2"},
        "user_rate_limit_exceeded",
        "24 hours",
        owned_by("acme-user-layer"),
    ),
    "burst": (
        {"RATE_LIMIT_FREE_DEVICE_PER_MINUTE": "2"},
        "burst_rate_limit_exceeded",
        "1 minute",
        lambda make_device: [make_device("approved")],
    ),
    "global": (
        {"RATE_LIMIT_GLOBAL_PER_DAY": "2"},
        "global_rate_limit_exceeded",
        "24 hours",
        lambda make_device: [make_device("approved") for _ in range(2)],
    ),
}


@pytest.mark.parametrize("layer", LAYERS)
def test_each_limit_layer_refuses_with_its_code_limit_window_and_reset(
    start_gateway: Callable[..., Gateway], make_device: Callable[..., Registered], layer: str
) -> None:
    env, code, window, devices_for = LAYERS[layer]
    gateway = start_gateway(**env)
    devices = devices_for(make_device)
    for index in range(2):  # the limit, spread over the devices
        device = devices[index % len(devices)]
        assert post(gateway, chat_body(), token=device.token).status_code == 200
    last = devices[-1]
    before = remaining(gateway, last.token)
    response = post(gateway, chat_body(), token=last.token)
    error = assert_refused(response, 429, code)
    assert error["limit"] == 2
    assert error["window"] == window
    assert ISO.match(error["resetAt"])
    # A day's slot frees at most one bucket late (usage.windows); a burst slot exactly.
    longest = BURST_SECONDS if layer == "burst" else DAY.seconds + DAY.bucket_seconds
    assert 1 <= int(response.headers["retry-after"]) <= longest
    # Refused by one layer, it took nothing from the others.
    assert remaining(gateway, last.token) == before
    assert len(ledger(2)) == 2


def refused_worst_case(
    gateway: Gateway, token: str, status: int, code: str
) -> tuple[httpx.Response, dict[str, int]]:
    """A 1000-token request is refused with ``status`` and ``code`` and takes nothing
    from the limits; the refusal, and what remained before it (and still does)."""
    before = remaining(gateway, token)
    response = post(gateway, chat_body(max_tokens=1000), token=token)
    assert_refused(response, status, code)
    assert remaining(gateway, token) == before
    return response, before


def test_a_request_whose_worst_case_passes_the_device_cap_is_refused_and_costs_nothing(
    start_gateway: Callable[..., Gateway], free_token: str
) -> None:
    # 30 micro-dollars a day; llama3-8b costs 0.1 micro-dollar a token either way:
    # the small request's worst case (about 230 tokens) fits, 1000 more do not.
    gateway = start_gateway(DEVICE_DAILY_BUDGET_USD_FREE="0.00003")
    _, before = refused_worst_case(gateway, free_token, 429, "device_budget_exceeded")
    small = post(gateway, chat_body(max_tokens=10), token=free_token)
    assert small.status_code == 200
    assert int(small.headers["x-ratelimit-remaining-device"]) == before["device"] - 1
    assert len(ledger(1)) == 1


def test_a_worst_case_beyond_the_daily_budget_is_refused_and_pauses_nothing(
    start_gateway: Callable[..., Gateway], free_token: str
) -> None:
    # 100 micro-dollars: 1000 tokens at 0.1 do not fit, 10 do.
    gateway = start_gateway(DAILY_BUDGET_USD="0.0001")
    refused, _ = refused_worst_case(gateway, free_token, 503, "budget_exceeded")
    assert int(refused.headers["retry-after"]) > 5  # it cannot fit today: the next budget day
    # One large request never stops everyone else.
    assert post(gateway, chat_body(max_tokens=10), token=free_token).status_code == 200
    assert len(ledger(1)) == 1


def test_concurrent_requests_never_reserve_past_the_budget_and_in_flight_refusals_do_not_pause(
    start_gateway: Callable[..., Gateway], make_device: Callable[..., Registered]
) -> None:
    # 600 micro-dollars; each request's worst case is a little over 100 (1000 tokens at 0.1).
    gateway = start_gateway(DAILY_BUDGET_USD="0.0006", UPSTREAM_TIMEOUT_SECONDS="5")
    devices = [make_device("approved") for _ in range(10)]
    slow = chat_body(
        max_tokens=1000, messages=[{"role": "user", "content": "hi [[fault:slow:seconds=1]]"}]
    )

    def call(device: Registered) -> httpx.Response:
        return post(gateway, slow, token=device.token)

    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        responses = list(pool.map(call, devices))
    statuses = sorted(response.status_code for response in responses)
    admitted = statuses.count(200)
    assert 1 <= admitted <= 5 and statuses.count(503) == len(devices) - admitted, statuses
    for response in responses:
        if response.status_code == 503:
            assert_refused(response, 503, "budget_exceeded")
    records = ledger(admitted)
    assert sum(record.cost_usd for record in records) <= Decimal("0.0006")
    # Refused only because of the others in flight: the service did not pause.
    after = post(gateway, chat_body(max_tokens=10), token=devices[0].token)
    assert after.status_code == 200, after.text
    assert len(ledger(admitted + 1)) == admitted + 1
