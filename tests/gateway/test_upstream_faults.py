"""The upstream client against the fake provider's faults: every fault mapped to
SPEC's error with the right usage, cancellation, and the one retry with a fresh key."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from gateway import keys, upstream
from gateway.providers.base import (
    NO_USAGE,
    UpstreamAuthRejected,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRejected,
    UpstreamTimeout,
)
from gateway.validation import estimate_input_tokens
from tests.fakes.provider import DEFAULT_KEYS, FakeProvider
from tests.gateway.upstream_support import (
    ANTHROPIC,
    ONE_ROUTE_PER_PROVIDER,
    OPENAI,
    TEN_TOKENS,
    chat,
    collect,
    fake_fixture,  # noqa: F401  (the ``fake`` fixture)
    route,
    serving,
    text_of,
)
from tests.gateway.upstream_support import complete_via as complete
from tests.gateway.upstream_support import stream_via as stream

# --- faults ---------------------------------------------------------------------------


def directive(fault, **params):
    suffix = ":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else ""
    return chat(f"hello [[fault:{fault}{suffix}]]")


def streamed(fault, **params):
    suffix = ":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else ""
    return chat(f"hello [[fault:{fault}{suffix}]]", stream=True)


FAULTS = [
    ("http_500", UpstreamError, 502, "upstream_error"),
    ("http_502", UpstreamError, 502, "upstream_error"),
    ("http_429", UpstreamOverloaded, 503, "upstream_overloaded"),
    ("http_529", UpstreamOverloaded, 503, "upstream_overloaded"),
    ("http_400", UpstreamRejected, 400, "upstream_rejected"),
    ("http_401", UpstreamAuthRejected, 502, "upstream_error"),
    ("non_json", UpstreamError, 502, "upstream_error"),
    ("malformed", UpstreamError, 502, "upstream_error"),
    ("drop", UpstreamError, 502, "upstream_error"),
]


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
@pytest.mark.parametrize(("fault", "error", "status", "code"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_each_fault_before_any_output_maps_to_its_error_and_costs_nothing(
    fake, name, fault, error, status, code
):
    for request in (directive(fault), streamed(fault)):
        with pytest.raises(UpstreamError) as caught:
            if request.stream:
                await collect(stream(name, request))
            else:
                await complete(name, request)
        assert type(caught.value) is error
        assert (caught.value.status, caught.value.code) == (status, code)
        assert caught.value.usage == NO_USAGE
        body = json.dumps(caught.value.payload())
        assert fake.keys[route(name).provider] not in body


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_overloaded_carries_the_provider_retry_after(fake, name):
    with pytest.raises(UpstreamOverloaded) as caught:
        await complete(name, directive("http_429", retry_after=7))
    assert caught.value.headers()["Retry-After"] == "7"
    with pytest.raises(UpstreamOverloaded) as caught:
        await complete(name, directive("http_529"))
    assert int(caught.value.headers()["Retry-After"]) >= 1


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_rejection_carries_the_provider_message_text_only(fake, name):
    with pytest.raises(UpstreamRejected) as caught:
        await complete(name, directive("http_400", message="prompt is too long for this model"))
    error = caught.value.payload()["error"]
    assert error == {
        "message": "prompt is too long for this model",
        "type": "invalid_request_error",
        "code": "upstream_rejected",
    }


async def test_a_wrong_key_is_auth_rejected(fake):
    fake.keys["openai"] = "sk-rotated-upstream-0123456789"
    with pytest.raises(UpstreamAuthRejected):
        await complete(OPENAI, chat())


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_slow_provider_is_a_timeout_charged_its_estimated_input(fake, settings, name):
    settings.UPSTREAM_TIMEOUT_SECONDS = 0.3
    for request in (directive("slow", seconds=2), streamed("slow", seconds=2)):
        with pytest.raises(UpstreamTimeout) as caught:
            if request.stream:
                await collect(stream(name, request))
            else:
                await complete(name, request)
        assert (caught.value.status, caught.value.code) == (504, "upstream_timeout")
        usage = caught.value.usage
        assert (usage.tokens_in, usage.tokens_out) == (estimate_input_tokens(request), 0)
        assert not usage.is_reported


async def test_an_unreachable_provider_is_an_upstream_error_that_costs_nothing(fake, settings):
    from tests.support.processes import free_port

    settings.PROVIDER_BASE_URLS = {
        **settings.PROVIDER_BASE_URLS,
        "openai": f"http://127.0.0.1:{free_port()}/v1",
    }
    for request in (chat(), chat(stream=True)):
        with pytest.raises(UpstreamError) as caught:
            if request.stream:
                await collect(stream(OPENAI, request))
            else:
                await complete(OPENAI, request)
        assert type(caught.value) is UpstreamError
        assert caught.value.usage == NO_USAGE


async def test_a_body_cut_in_half_is_an_upstream_error(fake):
    with pytest.raises(UpstreamError) as caught:
        await complete(OPENAI, directive("drop_mid_stream"))
    assert type(caught.value) is UpstreamError


async def consume_until_error(events):
    chunks = []
    with pytest.raises(UpstreamError) as caught:
        async for event in events:
            chunks.append(event)
    return chunks, caught.value


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_a_stream_dropped_midway_fails_after_its_chunks_with_the_usage_so_far(fake, name):
    request = streamed("drop_mid_stream", after=3)
    chunks, error = await consume_until_error(stream(name, request))
    assert type(error) is UpstreamError
    assert text_of(chunks) == "tok0 tok1 tok2 "
    # Estimated: at least a token per delta and per 4 characters (15 here).
    assert error.usage.tokens_out == 4
    assert not error.usage.is_reported
    if name == ANTHROPIC:
        # Reported by message_start: the fake counts 2 words + 3 for the message.
        assert error.usage.tokens_in == 5
    else:
        assert error.usage.tokens_in == estimate_input_tokens(request)


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_slow_chunks_beyond_the_read_timeout_are_an_upstream_timeout(fake, settings, name):
    settings.UPSTREAM_TIMEOUT_SECONDS = 0.2
    chunks, error = await consume_until_error(stream(name, streamed("slow_chunks", delay=1)))
    assert type(error) is UpstreamTimeout
    assert error.usage.tokens_in > 0
    assert not error.usage.is_reported
    # Nothing streamed yet but the role chunk; Anthropic's message_start already
    # counted one output token.
    assert text_of(chunks) == ""
    assert error.usage.tokens_out == (1 if name == ANTHROPIC else 0)


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_an_error_event_mid_stream_fails_the_stream_after_its_chunks(fake, name):
    chunks, error = await consume_until_error(stream(name, streamed("error_mid_stream", after=2)))
    assert text_of(chunks) == "tok0 tok1 "
    expected = UpstreamOverloaded if name == ANTHROPIC else UpstreamError
    assert type(error) is expected
    assert error.usage.tokens_out == 3  # two deltas, 10 characters
    assert not error.usage.is_reported


# --- cancellation -----------------------------------------------------------------------


class WatchedProvider(FakeProvider):
    """The fake, noting how each streamed answer ended on its side."""

    def __init__(self) -> None:
        super().__init__()
        self.stream_ended = threading.Event()
        self.outcome: str | None = None

    async def _stream(self, *args, **kwargs):
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
async def watched(settings):
    async with serving(WatchedProvider(), settings) as provider:
        yield provider


@pytest.mark.parametrize("name", ONE_ROUTE_PER_PROVIDER)
async def test_closing_a_stream_early_cancels_the_upstream_request(watched, name):
    # 50 chunks 0.2 s apart: ten seconds of answer if nobody hangs up.
    request = chat("hello [[tokens:50]] [[fault:slow_chunks:delay=0.2]]", stream=True)
    events = stream(name, request)
    chunks = [await anext(events) for _ in range(3)]
    assert "tok1 " in text_of(chunks)
    await events.aclose()
    assert await asyncio.to_thread(watched.stream_ended.wait, 5)
    assert watched.outcome != "completed"


# --- one retry with a fresh key -----------------------------------------------------------


@pytest.fixture
async def stale_openai_key(fake, settings):
    """The process caches a key the provider no longer accepts; the env now holds the right one."""
    settings.SECRETS_BACKEND = "env"
    settings.PROVIDER_ENV_KEYS = {**DEFAULT_KEYS, "openai": "sk-stale-0123456789abcdef"}
    await keys.get_key("openai", epoch=0)
    settings.PROVIDER_ENV_KEYS = dict(DEFAULT_KEYS)
    return "sk-stale-0123456789abcdef"


def sent_keys(fake):
    return [r.headers["authorization"].removeprefix("Bearer ") for r in fake.requests_for("openai")]


async def test_a_refused_key_is_refetched_and_the_completion_retried_once(fake, stale_openai_key):
    answer = await upstream.complete_with_key_retry(route(OPENAI), chat(), max_tokens=10, epoch=0)
    assert answer.body["choices"][0]["message"]["content"]
    assert sent_keys(fake) == [stale_openai_key, DEFAULT_KEYS["openai"]]


async def test_a_refused_key_is_refetched_and_the_stream_retried_before_any_chunk(
    fake, stale_openai_key
):
    events = upstream.stream_with_key_retry(
        route(OPENAI), chat(stream=True), max_tokens=10, epoch=0
    )
    chunks, done = await collect(events)
    assert text_of(chunks) == TEN_TOKENS
    assert done.usage.is_reported
    assert sent_keys(fake) == [stale_openai_key, DEFAULT_KEYS["openai"]]


async def test_a_key_refused_twice_is_an_upstream_error_after_exactly_one_retry(fake, settings):
    settings.SECRETS_BACKEND = "env"
    settings.PROVIDER_ENV_KEYS = {**DEFAULT_KEYS, "openai": "sk-wrong-0123456789abcdef"}
    with pytest.raises(UpstreamAuthRejected) as caught:
        await upstream.complete_with_key_retry(route(OPENAI), chat(), max_tokens=10, epoch=0)
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")
    with pytest.raises(UpstreamAuthRejected):
        await collect(
            upstream.stream_with_key_retry(route(OPENAI), chat(stream=True), max_tokens=10, epoch=0)
        )
    assert len(sent_keys(fake)) == 4
    assert "sk-wrong" not in json.dumps(caught.value.payload())
