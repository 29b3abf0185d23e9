"""Issue 18 over HTTP: a route whose provider fails before any output is answered by its
fallback, the client sees no error, and the ledger says what happened at what cost.

What is retried is what costs nothing under the cost-truth rules (a refusal, a connection
never made); a timeout, the client's own 400 and a stream that already sent output are not.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest
from django.core.management import call_command

from gateway.proxy.routes import seed_routes
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger
from tests.proxy.support import assert_refused, chat_body, cost_usd, post, sse_events

PRIMARY = "llama3-8b-instruct"  # DigitalOcean, free and paid
FALLBACK = "openai-gpt-4o"  # OpenAI, paid only
FREE_FALLBACK = "llama3.3-70b-instruct"  # DigitalOcean, free and paid
REFUSALS = ("http_500", "http_502", "http_529", "http_503")


def set_fallbacks(model: str, *fallbacks: str) -> None:
    seed_routes()  # start_gateway seeds them too; this may come first
    call_command("set_fallbacks", model, *fallbacks, stdout=io.StringIO())


def hello(text: str = "Hello there", **fields: object) -> dict[str, object]:
    return chat_body(model=PRIMARY, messages=[{"role": "user", "content": text}], **fields)


@pytest.fixture
def fallback_gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    set_fallbacks(PRIMARY, FALLBACK)
    return start_gateway()


@pytest.mark.parametrize("fault", REFUSALS)
def test_a_refusal_before_output_is_answered_by_the_fallback_and_costs_only_its_answer(
    fallback_gateway: Gateway, provider: FakeProvider, paid_token: str, fault: str
) -> None:
    provider.fail_next(fault, provider="digitalocean")
    response = post(fallback_gateway, hello(), token=paid_token)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == PRIMARY  # the name the client asked for
    assert response.headers["x-route-target"] == FALLBACK
    assert [r.provider for r in provider.requests] == ["digitalocean", "openai"]
    (record,) = ledger(1)
    assert (record.model, record.provider, record.requested_model) == (FALLBACK, "openai", PRIMARY)
    assert (record.attempts, record.status) == (2, "ok")
    usage = answer["usage"]
    # The refused attempt costs nothing; the answer, the fallback's prices.
    assert (record.tokens_in, record.tokens_out) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert record.cost_usd == cost_usd(FALLBACK, record.tokens_in, record.tokens_out) > 0
    assert Decimal(response.headers["x-request-cost-usd"]) == record.cost_usd


def test_a_rate_limited_key_sends_requests_to_the_fallback_until_its_retry_after(
    fallback_gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    provider.fail_next("http_429", provider="digitalocean", retry_after=2)
    first = post(fallback_gateway, hello(), token=paid_token)
    second = post(fallback_gateway, hello(), token=paid_token)

    assert first.status_code == second.status_code == 200
    assert first.headers["x-route-target"] == second.headers["x-route-target"] == FALLBACK
    # The benched key is not sent again before its Retry-After: the second request
    # went straight to the fallback, in one attempt.
    assert [r.provider for r in provider.requests] == ["digitalocean", "openai", "openai"]
    assert [(r.attempts, r.cost_usd > 0) for r in ledger(2)] == [(2, True), (1, True)]
    # Once the Retry-After has passed, the route's own provider answers again.
    sent = 2
    deadline = time.monotonic() + 10
    while post(fallback_gateway, hello(), token=paid_token).headers["x-route-target"] != PRIMARY:
        sent += 1
        assert time.monotonic() < deadline, "the benched key never came back in turn"
        time.sleep(0.2)
    ledger(sent + 1)


def test_a_stream_refused_before_output_is_streamed_by_the_fallback(
    fallback_gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    provider.fail_next("http_500", provider="digitalocean")
    body = hello(stream=True, stream_options={"include_usage": True})
    response = post(fallback_gateway, body, token=paid_token)

    assert response.status_code == 200, response.text
    assert response.headers["x-route-target"] == FALLBACK
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [httpx.Response(200, content=event).json() for event in events[:-1]]
    assert {chunk["model"] for chunk in chunks} == {PRIMARY}
    (record,) = ledger(1)
    assert (record.model, record.attempts, record.status, record.is_streamed) == (
        FALLBACK,
        2,
        "ok",
        True,
    )
    assert chunks[-1]["usage"]["cost_usd"] == float(record.cost_usd)


def test_a_provider_that_cannot_be_reached_is_skipped_for_the_fallback(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, paid_token: str
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    set_fallbacks(PRIMARY, FALLBACK)
    gateway = start_gateway(DIGITALOCEAN_BASE_URL=f"http://127.0.0.1:{closed_port}/v1")

    response = post(gateway, hello(), token=paid_token)

    assert response.status_code == 200, response.text
    assert response.headers["x-route-target"] == FALLBACK
    (record,) = ledger(1)
    assert (record.model, record.attempts) == (FALLBACK, 2)
    assert record.cost_usd == cost_usd(FALLBACK, record.tokens_in, record.tokens_out)


def test_only_fallbacks_the_tier_may_use_are_tried(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, free_token: str
) -> None:
    set_fallbacks(PRIMARY, FALLBACK, FREE_FALLBACK)  # gpt-4o is paid only
    gateway = start_gateway()
    provider.fail_next("http_500", provider="digitalocean")

    response = post(gateway, hello(), token=free_token)

    assert response.status_code == 200, response.text
    assert response.headers["x-route-target"] == FREE_FALLBACK
    assert provider.requests_for("openai") == []
    (record,) = ledger(1)
    assert (record.model, record.requested_model, record.attempts) == (
        FREE_FALLBACK,
        PRIMARY,
        2,
    )


def test_when_every_route_fails_the_client_gets_the_last_error_and_pays_nothing(
    fallback_gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    provider.fail_next("http_500", provider="digitalocean")
    provider.fail_next("http_529", provider="openai")

    response = post(fallback_gateway, hello(), token=paid_token)

    assert_refused(response, 503, "upstream_overloaded")
    assert response.headers["x-route-target"] == FALLBACK
    (record,) = ledger(1)
    assert (record.status, record.attempts, record.cost_usd) == (
        "upstream_overloaded",
        2,
        Decimal(0),
    )
    assert (record.tokens_in, record.tokens_out) == (0, 0)


def test_a_timeout_is_not_retried_and_is_charged_as_the_cost_truth_rules_say(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, paid_token: str
) -> None:
    set_fallbacks(PRIMARY, FALLBACK)
    gateway = start_gateway(UPSTREAM_TIMEOUT_SECONDS="0.5")

    response = post(gateway, hello("Hi [[fault:slow:seconds=2]]", max_tokens=100), token=paid_token)

    assert_refused(response, 504, "upstream_timeout")
    assert provider.requests_for("openai") == []
    (record,) = ledger(1)
    assert (record.model, record.attempts, record.status) == (PRIMARY, 1, "upstream_timeout")
    # The provider may still finish it: the whole output bound is charged.
    assert record.tokens_out == 100 and record.cost_usd > 0


def test_the_clients_own_400_is_not_retried(
    fallback_gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    response = post(fallback_gateway, hello("Long [[fault:http_400]]"), token=paid_token)

    error = assert_refused(response, 400, "upstream_rejected")
    assert "context length" in error["message"]
    assert provider.requests_for("openai") == []
    (record,) = ledger(1)
    assert (record.attempts, record.status, record.cost_usd) == (1, "upstream_rejected", Decimal(0))


def test_a_stream_that_fails_after_its_first_chunk_is_not_retried_and_pays_what_it_sent(
    fallback_gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    text = "Tell me [[tokens:40]] [[fault:drop_mid_stream:after=3]]"
    response = post(fallback_gateway, hello(text, stream=True), token=paid_token)

    assert response.status_code == 200
    events = sse_events(response.text)
    assert '"upstream_error"' in events[-2] and events[-1] == "[DONE]"
    assert provider.requests_for("openai") == []
    (record,) = ledger(1)
    assert (record.model, record.attempts, record.status) == (PRIMARY, 1, "upstream_error")
    assert record.tokens_out >= 3 and record.cost_usd > 0


def test_the_reservation_covers_the_priciest_route_the_request_may_reach(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, paid_token: str
) -> None:
    # max_tokens 1000 costs at most $0.0001 on llama3-8b, about $0.01 on gpt-4o: a
    # device cap between the two admits the request alone, not with its fallback.
    set_fallbacks(PRIMARY, FALLBACK)
    gateway = start_gateway(DEVICE_DAILY_BUDGET_USD_PAID="0.005")
    body = hello(max_tokens=1000)

    assert_refused(post(gateway, body, token=paid_token), 429, "device_budget_exceeded")
    assert provider.requests == []

    set_fallbacks(PRIMARY)  # no fallback: the running gateway reloads its routes
    response = post(gateway, body, token=paid_token)
    assert response.status_code == 200, response.text
    assert "x-route-target" not in response.headers
    (record,) = ledger(1)
    assert (record.model, record.requested_model, record.attempts) == (PRIMARY, PRIMARY, 1)
