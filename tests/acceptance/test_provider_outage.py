"""Issue 18's Done-when on two gateway processes: a provider outage the clients do not
notice. Its route's requests are answered by the fallback; its circuit breaker opens
(both processes stop sending it traffic), lets one probe through after its cool-down,
closes when the probe succeeds, and Slack hears of each transition once. The ledger
holds one record per request with its attempts, and every attempt the provider saw.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import httpx
import pytest
from django.core.management import call_command

from gateway.proxy.routes import seed_routes
from tests.acceptance.support import slack_environment
from tests.fakes.provider import FakeProvider
from tests.fakes.slack import FakeSlack
from tests.proxy.conftest import Gateway, ledger
from tests.proxy.support import assert_refused, bearer, cost_usd, remaining
from tests.support.processes import wait_for

pytestmark = pytest.mark.production_only  # two processes sharing the breakers

PRIMARY, FALLBACK = "llama3-8b-instruct", "openai-gpt-4o"
COOLDOWN = 4.0
BREAKERS = {
    "BREAKER_FAILURES": "3",
    "BREAKER_WINDOW_SECONDS": "30",
    "BREAKER_COOLDOWN_SECONDS": str(COOLDOWN),
    "BREAKER_SYNC_SECONDS": "0.2",
}


class Client:
    """A paid device's chat requests, alternating between the two processes."""

    def __init__(self, gateway: Gateway, token: str) -> None:
        self.gateway, self.token, self.sent = gateway, token, 0

    def chat(self, text: str = "Hello there") -> httpx.Response:
        server = self.gateway.servers[self.sent % len(self.gateway.servers)]
        self.sent += 1
        body = {"model": PRIMARY, "messages": [{"role": "user", "content": text}]}
        return httpx.post(
            f"{server.url}/v1/chat/completions", json=body, headers=bearer(self.token), timeout=30
        )


def breaker_alerts(slack: FakeSlack) -> list[str]:
    return [text for text in slack.texts() if "Circuit breaker" in text]


@pytest.fixture
def outage(start_gateway: Callable[..., Gateway], slack: FakeSlack, paid_token: str) -> Client:
    seed_routes()
    call_command("set_fallbacks", PRIMARY, FALLBACK, stdout=io.StringIO())
    return Client(start_gateway(2, **BREAKERS, **slack_environment(slack)), paid_token)


def test_an_outage_is_routed_around_the_breaker_opens_and_closes_and_the_ledger_is_exact(
    outage: Client, provider: FakeProvider, slack: FakeSlack
) -> None:
    provider.fail_next("http_500", provider="digitalocean", count=10_000)
    # The outage: every request is answered by the fallback, none sees an error.
    for _ in range(6):
        reply = outage.chat()
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-route-target"] == FALLBACK
        assert reply.json()["model"] == PRIMARY
    (opened,) = wait_for_alerts(slack, 1)
    assert opened.startswith(":red_circle: Circuit breaker opened for route *llama3-8b-instruct*")
    # Open: neither process sends the failing provider anything during the cool-down.
    time.sleep(0.5)  # more than BREAKER_SYNC_SECONDS: both views have it
    failed = len(provider.requests_for("digitalocean"))
    assert 1 <= failed <= 6  # (the store's threshold itself: tests/usage/test_breaker_store.py)
    for _ in range(4):
        reply = outage.chat()
        assert reply.status_code == 200 and reply.headers["x-route-target"] == FALLBACK
    assert len(provider.requests_for("digitalocean")) == failed

    # The provider recovers; after the cool-down one request probes it and closes the breaker.
    seen_before_recovery = len(provider.requests)
    provider.reset()
    deadline = time.monotonic() + COOLDOWN + 10
    while (reply := outage.chat()).headers["x-route-target"] != PRIMARY:
        assert reply.status_code == 200, reply.text
        assert time.monotonic() < deadline, "the breaker never let a probe through"
        time.sleep(0.2)
    opened_then_closed = wait_for_alerts(slack, 2)
    assert opened_then_closed[1] == (
        ":white_check_mark: Circuit breaker closed for route *llama3-8b-instruct*: "
        "its probe succeeded."
    )
    time.sleep(0.5)
    for _ in range(4):  # both processes send it traffic again
        reply = outage.chat()
        assert reply.status_code == 200 and reply.headers["x-route-target"] == PRIMARY
    time.sleep(1)
    assert breaker_alerts(slack) == opened_then_closed  # once per transition

    # One record per request; every attempt any provider saw is counted in one.
    records = ledger(outage.sent)
    assert sum(r.attempts for r in records) == seen_before_recovery + len(provider.requests)
    assert {r.requested_model for r in records} == {PRIMARY}
    for record in records:
        assert record.status == "ok"
        assert record.cost_usd == cost_usd(record.model, record.tokens_in, record.tokens_out)


def test_timeouts_are_charged_not_retried_and_open_the_breaker_for_the_fallback(
    start_gateway: Callable[..., Gateway],
    provider: FakeProvider,
    slack: FakeSlack,
    paid_token: str,
) -> None:
    seed_routes()
    call_command("set_fallbacks", PRIMARY, FALLBACK, stdout=io.StringIO())
    gateway = start_gateway(
        2, UPSTREAM_TIMEOUT_SECONDS="0.3", **BREAKERS, **slack_environment(slack)
    )
    client = Client(gateway, paid_token)
    provider.fail_next("slow", provider="digitalocean", count=3, seconds=1)
    timeouts = [client.chat() for _ in range(3)]
    assert [reply.status_code for reply in timeouts] == [504, 504, 504]
    assert provider.requests_for("openai") == []  # a timeout is never retried
    wait_for_alerts(slack, 1)
    time.sleep(0.5)
    reply = client.chat()
    assert reply.status_code == 200 and reply.headers["x-route-target"] == FALLBACK
    records = ledger(4)
    # Each timeout is charged the whole output bound (the provider may still bill it).
    assert [(r.status, r.attempts) for r in records[:3]] == [("upstream_timeout", 1)] * 3
    assert all(r.tokens_out == 8192 and r.cost_usd > 0 for r in records[:3])
    assert (records[3].model, records[3].attempts) == (FALLBACK, 1)
    # Let the breaker close again so no later test meets it open.
    provider.reset()
    deadline = time.monotonic() + COOLDOWN + 10
    while client.chat().headers.get("x-route-target") != PRIMARY:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    ledger(client.sent)


def wait_for_alerts(slack: FakeSlack, count: int) -> list[str]:
    wait_for(lambda: len(breaker_alerts(slack)) >= count, timeout=15, what=f"{count} alerts")
    return breaker_alerts(slack)


def test_without_a_fallback_an_open_breaker_refuses_before_admission_at_no_quota(
    start_gateway: Callable[..., Gateway],
    provider: FakeProvider,
    slack: FakeSlack,
    paid_token: str,
) -> None:
    gateway = start_gateway(2, **BREAKERS, **slack_environment(slack))
    client = Client(gateway, paid_token)
    provider.fail_next("http_500", provider="digitalocean", count=3)
    assert [client.chat().status_code for _ in range(3)] == [502, 502, 502]
    wait_for_alerts(slack, 1)
    time.sleep(0.5)
    before = remaining(gateway, paid_token)
    seen = len(provider.requests)

    refused = client.chat()

    assert_refused(refused, 503, "upstream_overloaded")
    assert 1 <= int(refused.headers["retry-after"]) <= COOLDOWN
    assert len(provider.requests) == seen  # the provider was not asked
    assert remaining(gateway, paid_token) == before  # nor was any quota taken
    # After the cool-down the probe finds the provider back and closes the breaker.
    deadline = time.monotonic() + COOLDOWN + 10
    while (reply := client.chat()).status_code != 200:
        assert reply.status_code == 503 and time.monotonic() < deadline
        time.sleep(0.2)
    assert wait_for_alerts(slack, 2)[1].startswith(":white_check_mark: Circuit breaker closed")
    records = ledger(4)
    assert [r.status for r in records] == ["upstream_error"] * 3 + ["ok"]
