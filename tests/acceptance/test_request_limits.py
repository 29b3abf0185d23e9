"""Issue 3 over HTTP: request limits hold exactly, and a refusal consumes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.acceptance.support import PROCESSES, chat, codes, send_all, spread
from tests.devices.support import Registered
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger

SHARED_IP = "198.51.100.10"
OTHER_IP = "198.51.100.20"


def test_a_hundred_simultaneous_requests_from_one_device_admit_exactly_its_limit(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, free_token: str
) -> None:
    gateway = start_gateway(
        PROCESSES,
        RATE_LIMIT_FREE_DEVICE_PER_DAY="20",
        RATE_LIMIT_FREE_DEVICE_PER_MINUTE="1000",
        MAX_CONCURRENT_REQUESTS_FREE="100",  # the day layer is the one tested
    )
    outcomes = send_all(gateway, spread([chat(free_token) for _ in range(100)]))

    assert codes(outcomes) == {(200, None): 20, (429, "device_rate_limit_exceeded"): 80}
    for refused in (o for o in outcomes if o.status == 429):
        assert int(refused.headers["retry-after"]) > 0
    admitted = [o for o in outcomes if o.status == 200]
    remaining = sorted(int(o.headers["x-ratelimit-remaining-device"]) for o in admitted)
    assert remaining == list(range(20))  # each admission took exactly one slot
    records = ledger(20)
    assert {r.request_id for r in records} == {o.headers["x-request-id"] for o in admitted}
    assert len(provider.requests) == 20


def _from(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


def _stats(gateway: Gateway, token: str, ip: str) -> dict[str, Any]:
    response = httpx.get(
        f"{gateway.url}/v1/usage/stats",
        headers={"Authorization": f"Bearer {token}", **_from(ip)},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    limits: dict[str, Any] = response.json()["limits"]
    return limits


def test_refusals_by_the_ip_layer_and_by_the_device_layer_leave_the_other_layer_untouched(
    start_gateway: Callable[..., Gateway], make_device: Callable[..., Registered]
) -> None:
    gateway = start_gateway(
        PROCESSES,
        TRUSTED_PROXIES="127.0.0.1/32",
        RATE_LIMIT_FREE_DEVICE_PER_DAY="3",
        RATE_LIMIT_FREE_IP_PER_DAY="4",
        RATE_LIMIT_FREE_DEVICE_PER_MINUTE="1000",
    )
    a, b, c = (make_device("approved", name=name).token for name in ("a", "b", "c"))

    first = [send_all(gateway, [chat(a, headers=_from(SHARED_IP))])[0] for _ in range(3)]
    assert [o.headers["x-ratelimit-remaining-ip"] for o in first] == ["3", "2", "1"]
    assert [o.headers["x-ratelimit-remaining-device"] for o in first] == ["2", "1", "0"]

    # Device A is spent: its refusals, however many at once, cost the IP nothing.
    refused = send_all(gateway, spread([chat(a, headers=_from(SHARED_IP)) for _ in range(10)]))
    assert codes(refused) == {(429, "device_rate_limit_exceeded"): 10}
    assert _stats(gateway, b, SHARED_IP)["ip"]["remaining"] == 1
    (last,) = send_all(gateway, [chat(b, headers=_from(SHARED_IP), server=PROCESSES - 1)])
    assert last.status == 200
    assert last.headers["x-ratelimit-remaining-ip"] == "0"
    assert last.headers["x-ratelimit-remaining-device"] == "2"

    # The IP is spent: its refusals of B and C cost those devices nothing.
    calls = [chat(token, headers=_from(SHARED_IP)) for token in (b, c) for _ in range(5)]
    refused = send_all(gateway, spread(calls))
    assert codes(refused) == {(429, "ip_rate_limit_exceeded"): 10}
    assert {o.headers["x-ratelimit-remaining-device"] for o in refused[:5]} == {"2"}
    assert {o.headers["x-ratelimit-remaining-device"] for o in refused[5:]} == {"3"}
    assert _stats(gateway, b, SHARED_IP)["device"]["remaining"] == 2
    assert _stats(gateway, c, SHARED_IP)["device"]["remaining"] == 3

    # From another address both devices go on, with every slot they did not use.
    elsewhere = send_all(
        gateway, [chat(b, headers=_from(OTHER_IP)), chat(c, headers=_from(OTHER_IP))]
    )
    assert [o.status for o in elsewhere] == [200, 200]
    assert [o.headers["x-ratelimit-remaining-device"] for o in elsewhere] == ["1", "2"]
    assert sorted(o.headers["x-ratelimit-remaining-ip"] for o in elsewhere) == ["2", "3"]
    stats_a = _stats(gateway, a, OTHER_IP)
    assert (stats_a["device"]["remaining"], stats_a["ip"]["remaining"]) == (0, 2)
    ledger(6)


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(
    start_gateway: Callable[..., Gateway], make_device: Callable[..., Registered]
) -> None:
    gateway = start_gateway(
        PROCESSES, RATE_LIMIT_FREE_IP_PER_DAY="2", RATE_LIMIT_FREE_DEVICE_PER_MINUTE="1000"
    )
    tokens = [make_device("approved", name=f"d{n}").token for n in range(3)]
    calls = [chat(token, headers=_from(f"192.0.2.{n}")) for n, token in enumerate(tokens)]
    outcomes = [send_all(gateway, [call])[0] for call in calls]
    assert [(o.status, o.code) for o in outcomes] == [
        (200, None),
        (200, None),
        (429, "ip_rate_limit_exceeded"),
    ]
    assert {r.ip for r in ledger(2)} == {"127.0.0.1"}
