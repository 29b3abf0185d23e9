"""The upstream client against the fake provider's faults: every fault mapped to
SPEC's error and to what it may cost (SPEC: "What a request costs when the
provider's usage is unknown"), and cancellation. Retries with another key or
route: test_attempts.py."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from pytest_django import Settings

from gateway.proxy.providers.base import (
    NO_USAGE,
    StreamEvent,
    UpstreamAuthRejected,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    Usage,
)
from gateway.proxy.validation import ChatRequest
from tests.fakes.provider import FakeProvider
from tests.gateway.upstream_support import (
    ANTHROPIC,
    ONE_ROUTE_PER_PROVIDER,
    OPENAI,
    Call,
    call_to,
    chat,
    collect,
    fake_fixture,  # noqa: F401  (the ``fake`` fixture)
    route,
    serving,
    text_of,
)
from tests.gateway.upstream_support import complete_via as complete

# --- faults ---------------------------------------------------------------------------


def directive(fault: str, **params: Any) -> ChatRequest:
    suffix = ":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else ""
    return chat(f"hello [[fault:{fault}{suffix}]]")


def streamed(fault: str, **params: Any) -> ChatRequest:
    suffix = ":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else ""
    return chat(f"hello [[fault:{fault}{suffix}]]", stream=True)


async def failure_of(call: Call) -> UpstreamError:
    """The error ``call`` ends with, streamed or not (its request says which)."""
    with pytest.raises(UpstreamError) as caught:
        if call.outbound.request.stream:
            await collect(call.stream())
        else:
            await call.complete()
    return caught.value


async def whole_reservation_failure(
    name: str, request: ChatRequest, error: type[UpstreamError]
) -> UpstreamError:
    """``request`` to route ``name`` fails with exactly ``error`` and costs the whole
    reservation; returns the failure."""
    call = call_to(name, request)
    failure = await failure_of(call)
    assert type(failure) is error
    assert call.billed == call.whole_bound
    return failure


# The provider says it did not process the request: SPEC's "what costs nothing".
REFUSALS = [
    ("http_500", UpstreamError, 502, "upstream_error"),
    ("http_502", UpstreamError, 502, "upstream_error"),
    ("http_429", UpstreamRateLimited, 503, "upstream_overloaded"),  # the key's limit
    ("http_529", UpstreamOverloaded, 503, "upstream_overloaded"),
    ("http_400", UpstreamRejected, 400, "upstream_rejected"),
    ("http_401", UpstreamAuthRejected, 502, "upstream_error"),
]


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
@pytest.mark.parametrize(
    ("fault", "error", "status", "code"), REFUSALS, ids=[f[0] for f in REFUSALS]
)
async def test_each_refusal_maps_to_its_error_and_costs_nothing(
    fake: FakeProvider,
    name: str,
    fault: str,
    error: type[UpstreamError],
    status: int,
    code: str,
) -> None:
    for request in (directive(fault), streamed(fault)):
        call = call_to(name, request)
        failure = await failure_of(call)
        assert type(failure) is error
        assert (failure.status, failure.code) == (status, code)
        assert call.meter.is_refused
        assert call.billed == NO_USAGE
        body = json.dumps(failure.payload())
        assert fake.keys[route(name).provider] not in body


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
@pytest.mark.parametrize("fault", ["non_json", "malformed"])
async def test_a_200_the_gateway_cannot_read_costs_the_whole_reservation(
    fake: FakeProvider, name: str, fault: str
) -> None:
    # Streamed, the fake answers the same JSON or text body: a "stream" of no events.
    for request in (directive(fault), streamed(fault)):
        failure = await whole_reservation_failure(name, request, UpstreamError)
        assert (failure.status, failure.code) == (502, "upstream_error")


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_connection_dropped_before_an_answer_costs_the_input_and_any_unseen_output(
    fake: FakeProvider, name: str
) -> None:
    # The request reached the provider. Not streamed, it may have generated the
    # whole answer; streamed, it produced nothing before the drop.
    await whole_reservation_failure(name, directive("drop"), UpstreamError)
    streamed_call = call_to(name, streamed("drop"))
    assert type(await failure_of(streamed_call)) is UpstreamError
    assert streamed_call.billed == Usage(streamed_call.outbound.input_bound, 0, False)


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_overloaded_carries_the_provider_retry_after(fake: FakeProvider, name: str) -> None:
    with pytest.raises(UpstreamOverloaded) as caught:
        await complete(name, directive("http_429", retry_after=7))
    assert caught.value.headers()["Retry-After"] == "7"
    with pytest.raises(UpstreamOverloaded) as caught:
        await complete(name, directive("http_529"))
    assert int(caught.value.headers()["Retry-After"]) >= 1


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_rejection_carries_the_provider_message_text_only(
    fake: FakeProvider, name: str
) -> None:
    with pytest.raises(UpstreamRejected) as caught:
        await complete(name, directive("http_400", message="prompt is too long for this model"))
    error = caught.value.payload()["error"]
    assert error == {
        "message": "prompt is too long for this model",
        "type": "invalid_request_error",
        "code": "upstream_rejected",
    }


async def test_a_wrong_key_is_auth_rejected(fake: FakeProvider) -> None:
    fake.keys["openai"] = "sk-rotated-upstream-0123456789"
    with pytest.raises(UpstreamAuthRejected):
        await complete(OPENAI, chat())


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_slow_provider_is_a_timeout_that_costs_the_whole_reservation(
    fake: FakeProvider, settings: Settings, name: str
) -> None:
    # The provider may still finish and bill the whole answer.
    settings.UPSTREAM_TIMEOUT_SECONDS = 0.3
    for request in (directive("slow", seconds=2), streamed("slow", seconds=2)):
        failure = await whole_reservation_failure(name, request, UpstreamTimeout)
        assert (failure.status, failure.code) == (504, "upstream_timeout")


async def test_an_unreachable_provider_is_an_upstream_error_that_costs_nothing(
    fake: FakeProvider, settings: Settings
) -> None:
    from tests.support.processes import free_port

    settings.PROVIDER_BASE_URLS = {
        **settings.PROVIDER_BASE_URLS,
        "openai": f"http://127.0.0.1:{free_port()}/v1",
    }
    for request in (chat(), chat(stream=True)):
        call = call_to(OPENAI, request)
        assert type(await failure_of(call)) is UpstreamError
        assert not call.meter.is_sent
        assert call.billed == NO_USAGE


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_an_answer_cut_in_half_is_an_upstream_error_that_costs_the_whole_reservation(
    fake: FakeProvider, name: str
) -> None:
    # The half that arrived is never parsed: the output it holds is unseen.
    await whole_reservation_failure(name, directive("drop_mid_stream"), UpstreamError)


async def consume_until_error(
    events: AsyncIterator[StreamEvent],
) -> tuple[list[StreamEvent], UpstreamError]:
    chunks: list[StreamEvent] = []
    with pytest.raises(UpstreamError) as caught:
        async for event in events:
            chunks.append(event)
    return chunks, caught.value


def input_billed(call: Call) -> int:
    """The input a failed stream costs: Anthropic's own count from message_start
    (the fake counts 2 words + 3 for the message), else the input bound."""
    return 5 if call.outbound.route.public_name == ANTHROPIC else call.outbound.input_bound


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_stream_dropped_midway_fails_after_its_chunks_costing_the_bytes_seen(
    fake: FakeProvider, name: str
) -> None:
    call = call_to(name, streamed("drop_mid_stream", after=3))
    chunks, error = await consume_until_error(call.stream())
    assert type(error) is UpstreamError
    assert text_of(chunks) == "tok0 tok1 tok2 "
    # No token is shorter than a byte: 15 bytes seen bound the output billed.
    assert call.billed == Usage(input_billed(call), 15, False)


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_slow_chunks_beyond_the_read_timeout_are_a_timeout_costing_the_whole_output(
    fake: FakeProvider, settings: Settings, name: str
) -> None:
    settings.UPSTREAM_TIMEOUT_SECONDS = 0.2
    call = call_to(name, streamed("slow_chunks", delay=1))
    chunks, error = await consume_until_error(call.stream())
    assert type(error) is UpstreamTimeout
    # Nothing streamed yet but the role chunk; the provider goes on generating.
    assert text_of(chunks) == ""
    assert call.billed == Usage(input_billed(call), call.outbound.max_tokens, False)


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_an_error_event_mid_stream_fails_the_stream_after_its_chunks(
    fake: FakeProvider, name: str
) -> None:
    call = call_to(name, streamed("error_mid_stream", after=2))
    chunks, error = await consume_until_error(call.stream())
    assert text_of(chunks) == "tok0 tok1 "
    expected = UpstreamOverloaded if name == ANTHROPIC else UpstreamError
    assert type(error) is expected
    assert call.billed == Usage(input_billed(call), 10, False)  # two deltas, 10 bytes


# --- cancellation -----------------------------------------------------------------------


class WatchedProvider(FakeProvider):
    """The fake, noting how each streamed answer ended on its side."""

    def __init__(self) -> None:
        super().__init__()
        self.stream_ended = threading.Event()
        self.outcome: str | None = None

    async def _stream(self, *args: Any, **kwargs: Any) -> web.StreamResponse:
        try:
            response = await super()._stream(*args, **kwargs)
            self.outcome = "completed"
            return response
        except BaseException as exc:
            self.outcome = type(exc).__name__
            raise
        finally:
            self.stream_ended.set()


@pytest.fixture
async def watched(settings: Settings) -> AsyncIterator[WatchedProvider]:
    async with serving(WatchedProvider(), settings) as provider:
        yield provider


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_closing_a_stream_early_cancels_the_upstream_request(
    watched: WatchedProvider, name: str
) -> None:
    # 50 chunks 0.2 s apart: ten seconds of answer if nobody hangs up.
    request = chat("hello [[tokens:50]] [[fault:slow_chunks:delay=0.2]]", stream=True)
    call = call_to(name, request)
    events = call.stream()
    chunks = [await anext(events) for _ in range(3)]
    assert "tok1 " in text_of(chunks)
    await events.aclose()
    assert await asyncio.to_thread(watched.stream_ended.wait, 5)
    assert watched.outcome != "completed"
    # What the client left with is what the provider produced so far.
    assert call.meter.output_bytes == len(text_of(chunks))
