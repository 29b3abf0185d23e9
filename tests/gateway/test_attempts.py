"""The retry loop (gateway.proxy.attempts) against the fake provider: which failures move
on to another key or route, which never do, and what the settlement is left holding."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pytest_django import Settings

from devices.auth import AuthenticatedDevice
from gateway.proxy import attempts, keys, upstream
from gateway.proxy.providers.base import (
    NO_USAGE,
    Completion,
    Outbound,
    UpstreamAuthRejected,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    Usage,
)
from gateway.proxy.settlement import Settlement
from gateway.proxy.validation import ChatRequest
from tests.fakes.provider import DEFAULT_KEYS, FakeProvider
from tests.gateway.upstream_support import (
    ANTHROPIC,
    DIGITALOCEAN,
    END_USER,
    OPENAI,
    ROUTES,
    TEN_TOKENS,
    chat,
    collect,
    fake_fixture,  # noqa: F401  (the ``fake`` fixture)
    text_of,
)
from usage import breakers, liveness
from usage.backends.base import Reservation

DEVICE = AuthenticatedDevice("dev_attempts", "Attempts", "approved", "paid", None, None)
STALE = "sk-stale-0123456789abcdef"

Settle = Callable[..., Settlement[Outbound]]


@pytest.fixture(autouse=True)
def env_keys(settings: Settings) -> None:
    settings.SECRETS_BACKEND = "env"
    settings.PROVIDER_ENV_KEYS = dict(DEFAULT_KEYS)
    keys.clear_cache()


@pytest.fixture
async def settlement_for() -> AsyncIterator[Settle]:
    """``settlement_for(route, request, fallbacks=(...))``: an admitted request's settlement,
    as the endpoint opens it, its routes built as the proxy builds them (never closed here:
    these tests read what it holds)."""
    opened: list[Settlement[Outbound]] = []

    def settle(
        name: str, request: ChatRequest, *, fallbacks: tuple[str, ...] = ()
    ) -> Settlement[Outbound]:
        routes = [
            upstream.outbound(ROUTES[each], request, max_tokens=10, end_user=END_USER)
            for each in (name, *fallbacks)
        ]
        settlement = Settlement(
            request_id=f"req_attempts_{len(opened)}",
            device=DEVICE,
            ip="127.0.0.1",
            outbound=routes[0],
            reservation=Reservation(
                f"req_attempts_{len(opened)}", DEVICE.id, "2026-12-06", 0, "", ""
            ),
            started=time.monotonic(),
            log={},
            fallbacks=tuple(routes[1:]),
        )
        opened.append(settlement)
        return settlement

    yield settle
    for _ in opened:
        liveness.release()


async def complete(settlement: Settlement[Outbound]) -> Completion:
    return await attempts.run(
        settlement,
        lambda each, key, meter, deadline: upstream.complete(
            each, key=key, meter=meter, deadline=deadline
        ),
        epoch=0,
    )


def stream(settlement: Settlement[Outbound]) -> Any:
    return attempts.stream(
        settlement,
        lambda each, key, meter, deadline: upstream.stream(
            each, key=key, meter=meter, deadline=deadline
        ),
        epoch=0,
    )


def sent_keys(fake: FakeProvider, provider: str = "openai") -> list[str]:
    return [r.headers["authorization"].removeprefix("Bearer ") for r in fake.requests_for(provider)]


# --- keys -------------------------------------------------------------------------------


@pytest.fixture
async def stale_openai_key(fake: FakeProvider, settings: Settings) -> str:
    """The process caches a key the provider no longer accepts; the env now holds the right one."""
    settings.SECRETS_BACKEND = "env"
    settings.PROVIDER_ENV_KEYS = {**DEFAULT_KEYS, "openai": STALE}
    await keys.pool("openai", epoch=0)
    settings.PROVIDER_ENV_KEYS = dict(DEFAULT_KEYS)
    return STALE


async def test_a_refused_key_is_refetched_and_the_completion_sent_with_the_new_one(
    fake: FakeProvider, stale_openai_key: str, settlement_for: Settle
) -> None:
    settlement = settlement_for(OPENAI, chat())
    answer = await complete(settlement)
    assert answer.body["choices"][0]["message"]["content"]
    assert sent_keys(fake) == [stale_openai_key, DEFAULT_KEYS["openai"]]
    # The refused attempt cost nothing; the second is billed as reported.
    assert settlement.attempts == 2 and settlement.prior_cost == 0
    assert settlement.billed_usage() == Usage(5, 10, True)


async def test_a_refused_key_is_refetched_and_the_stream_sent_before_any_chunk(
    fake: FakeProvider, stale_openai_key: str, settlement_for: Settle
) -> None:
    settlement = settlement_for(OPENAI, chat(stream=True))
    chunks, _ = await collect(stream(settlement))
    assert text_of(chunks) == TEN_TOKENS
    assert sent_keys(fake) == [stale_openai_key, DEFAULT_KEYS["openai"]]
    assert settlement.billed_usage() == Usage(5, 10, True)


async def test_a_key_still_refused_after_a_refetch_is_not_sent_again(
    fake: FakeProvider, settings: Settings, settlement_for: Settle
) -> None:
    settings.SECRETS_BACKEND = "env"
    settings.PROVIDER_ENV_KEYS = {**DEFAULT_KEYS, "openai": "sk-wrong-0123456789abcdef"}
    answered = settlement_for(OPENAI, chat())
    with pytest.raises(UpstreamAuthRejected) as caught:
        await complete(answered)
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")
    assert "sk-wrong" not in str(caught.value.payload())
    # Refused, refetched, the same key given: benched until the keys are next fetched,
    # so a second request does not send it at all.
    assert len(sent_keys(fake)) == 1
    with pytest.raises(attempts.NoRouteAvailable) as benched:
        await collect(stream(settlement_for(OPENAI, chat(stream=True))))
    assert (benched.value.status, benched.value.code) == (503, "upstream_overloaded")
    assert int(benched.value.headers()["Retry-After"]) >= 1
    assert len(sent_keys(fake)) == 1
    assert answered.billed_usage() == NO_USAGE and answered.attempts == 1


async def test_a_rate_limited_key_is_benched_and_the_next_key_in_the_pool_answers(
    fake: FakeProvider, settings: Settings, settlement_for: Settle
) -> None:
    second = "sk-second-0123456789abcdef"
    fake.extra_keys["openai"] = [second]
    settings.PROVIDER_ENV_KEY_LISTS = {**settings.PROVIDER_ENV_KEY_LISTS, "openai": [second]}
    fake.fail_key(DEFAULT_KEYS["openai"], "http_429", retry_after=30)
    for _ in range(4):
        assert (await complete(settlement_for(OPENAI, chat()))).body["choices"]
    # The limited key was sent once, then benched for its Retry-After.
    assert sent_keys(fake).count(DEFAULT_KEYS["openai"]) == 1
    assert sent_keys(fake).count(second) == 4
    assert 29 <= (keys.soonest_free("openai") or 0) <= 30


# --- routes -----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["http_500", "http_529", "http_503"])
async def test_a_refusal_moves_on_to_the_fallback_which_answers_under_its_own_prices(
    fake: FakeProvider, settlement_for: Settle, fault: str
) -> None:
    fake.fail_next(fault, provider="digitalocean")
    settlement = settlement_for(DIGITALOCEAN, chat(), fallbacks=(ANTHROPIC,))
    answer = await complete(settlement)
    assert answer.body["choices"][0]["message"]["content"] == TEN_TOKENS
    assert [r.provider for r in fake.requests] == ["digitalocean", "anthropic"]
    assert settlement.route is ROUTES[ANTHROPIC]
    assert (settlement.attempts, settlement.prior_cost) == (2, 0)


async def test_a_stream_from_a_fallback_names_the_model_the_client_asked_for(
    fake: FakeProvider, settlement_for: Settle
) -> None:
    fake.fail_next("http_500", provider="digitalocean")
    settlement = settlement_for(DIGITALOCEAN, chat(stream=True), fallbacks=(OPENAI,))
    chunks, done = await collect(stream(settlement))
    assert text_of(chunks) == TEN_TOKENS
    assert {chunk["model"] for chunk in chunks} == {done.model} == {DIGITALOCEAN}
    assert settlement.route is ROUTES[OPENAI]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("slow:seconds=2", UpstreamTimeout),  # the provider may still finish and bill it
        ("http_400", UpstreamRejected),  # the client's own fault
        ("drop", UpstreamError),  # sent, then cut: it may have been processed
        ("malformed", UpstreamError),  # a 200 the gateway cannot read: billed
    ],
)
async def test_what_may_have_been_billed_or_is_the_clients_fault_is_never_retried(
    fake: FakeProvider,
    settings: Settings,
    settlement_for: Settle,
    fault: str,
    error: type[UpstreamError],
) -> None:
    settings.UPSTREAM_TIMEOUT_SECONDS = 0.5
    settlement = settlement_for(DIGITALOCEAN, chat(f"Hi [[fault:{fault}]]"), fallbacks=(OPENAI,))
    with pytest.raises(error):
        await complete(settlement)
    assert [r.provider for r in fake.requests] == ["digitalocean"]
    assert settlement.attempts == 1


async def test_a_stream_that_failed_after_its_first_chunk_is_not_retried(
    fake: FakeProvider, settlement_for: Settle
) -> None:
    request = chat("Hi [[tokens:20]] [[fault:drop_mid_stream:after=2]]", stream=True)
    settlement = settlement_for(DIGITALOCEAN, request, fallbacks=(OPENAI,))
    events = stream(settlement)
    first = await anext(events)
    assert first["choices"]
    with pytest.raises(UpstreamError):
        async for _ in events:
            pass
    assert [r.provider for r in fake.requests] == ["digitalocean"]
    # Charged what it delivered (cost-truth), at the route that delivered it.
    assert settlement.attempts == 1 and settlement.billed_usage().tokens_out > 0


async def test_no_more_attempts_than_upstream_max_attempts(
    fake: FakeProvider, settings: Settings, settlement_for: Settle
) -> None:
    settings.UPSTREAM_MAX_ATTEMPTS = 2
    fake.fail_next("http_500", count=3)
    settlement = settlement_for(DIGITALOCEAN, chat(), fallbacks=(OPENAI, ANTHROPIC))
    with pytest.raises(UpstreamError):
        await complete(settlement)
    assert [r.provider for r in fake.requests] == ["digitalocean", "openai"]
    assert settlement.attempts == 2


async def test_no_attempt_starts_after_the_overall_deadline(
    fake: FakeProvider, settings: Settings, settlement_for: Settle
) -> None:
    settings.UPSTREAM_TOTAL_TIMEOUT_SECONDS = 0.000001
    fake.fail_next("http_500", provider="digitalocean")
    settlement = settlement_for(DIGITALOCEAN, chat(), fallbacks=(OPENAI,))
    with pytest.raises(UpstreamError) as caught:
        await complete(settlement)
    assert caught.value.code == "upstream_error"
    assert [r.provider for r in fake.requests] == ["digitalocean"]


async def test_a_retry_waits_no_longer_than_the_overall_deadline_leaves(
    fake: FakeProvider, settings: Settings, settlement_for: Settle
) -> None:
    # The fallback answers after 3 s, well inside the read timeout (10 s here), but the
    # request's deadline leaves its retry only about 0.5 s: a timeout, charged as one.
    settings.UPSTREAM_TOTAL_TIMEOUT_SECONDS = 0.5
    fake.fail_next("http_500", provider="digitalocean")
    fake.fail_next("slow", provider="openai", seconds=3)
    settlement = settlement_for(DIGITALOCEAN, chat(), fallbacks=(OPENAI,))
    with pytest.raises(UpstreamTimeout):
        await complete(settlement)
    assert [r.provider for r in fake.requests] == ["digitalocean", "openai"]
    assert settlement.attempts == 2 and settlement.meter.is_output_unseen


async def test_a_stream_that_breaks_mid_way_counts_against_its_route_and_one_left_does_not(
    fake: FakeProvider, settings: Settings, settlement_for: Settle
) -> None:
    settings.BREAKER_FAILURES = 1
    target = breakers.route_target(DIGITALOCEAN)
    # The client leaves after the first chunk: nothing is learned of the provider.
    left = stream(settlement_for(DIGITALOCEAN, chat("Hi [[tokens:20]]", stream=True)))
    assert (await anext(left))["choices"]
    await left.aclose()
    await breakers.sync()
    assert breakers.state(target) == "closed"
    # The provider breaks the stream after its first chunks: its route's failure.
    request = chat("Hi [[tokens:20]] [[fault:drop_mid_stream:after=2]]", stream=True)
    with pytest.raises(UpstreamError):
        await collect(stream(settlement_for(DIGITALOCEAN, request)))
    await breakers.sync()
    assert breakers.state(target) == "open"
