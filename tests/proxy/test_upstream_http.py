"""Provider failures over HTTP: each maps to SPEC's status and code, never a 500, never the
provider's body, and each admitted request leaves one usage record with the right cost."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger
from tests.proxy.support import assert_refused, chat_body, cost_usd, post
from usage.models import UsageRecord

ROUTES = {
    "llama3-8b-instruct": "digitalocean",
    "openai-gpt-4o": "openai",
    "anthropic-claude-4-sonnet": "anthropic",
}
# fault directive -> (status, code, the usage record's status): the provider
# says it did not process the request, so it costs nothing (SPEC).
REFUSALS = {
    "http_500": (502, "upstream_error", "upstream_error"),
    "http_502": (502, "upstream_error", "upstream_error"),
    "http_429": (503, "upstream_overloaded", "upstream_overloaded"),
    "http_529": (503, "upstream_overloaded", "upstream_overloaded"),
    "http_503": (503, "upstream_overloaded", "upstream_overloaded"),
    "http_400": (400, "upstream_rejected", "upstream_rejected"),
}
# An answer the gateway cannot read (or a non-streamed one cut off): the
# provider may have produced and billed all of it.
UNREADABLE = ("non_json", "malformed")
TIMEOUT_ENV = {"UPSTREAM_TIMEOUT_SECONDS": "0.5"}
PAID_CAP = 8192  # MAX_TOKENS_PAID's default: the output bound of a request without max_tokens


def fail_on_every_route(
    gateway: Gateway, token: str, fault: str, stream: bool
) -> dict[str, httpx.Response]:
    """The fault on each route; the responses by request id, each checked for leaks."""
    content = f"Hello [[fault:{fault}]]"
    responses = {}
    for model in ROUTES:
        response = post(
            gateway,
            chat_body(model=model, stream=stream, messages=[{"role": "user", "content": content}]),
            token=token,
        )
        # Before any output a stream is a plain HTTP error, not a broken 200.
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert set(error) <= {"message", "type", "code", "param"}, error
        for leaked in ("<html", "cloudflare", "garbage", "request_id", "req_", "server_error"):
            assert leaked not in response.text, (model, leaked)
        responses[response.headers["x-request-id"]] = response
    return responses


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream-before-output"])
@pytest.mark.parametrize("fault", REFUSALS)
def test_each_provider_refusal_before_output_maps_to_its_error_and_costs_nothing(
    gateway: Gateway, provider: FakeProvider, paid_token: str, fault: str, stream: bool
) -> None:
    status, code, ledger_status = REFUSALS[fault]
    responses = fail_on_every_route(gateway, paid_token, fault, stream)
    for response in responses.values():
        assert_refused(response, status, code)
    records = ledger(len(ROUTES))
    assert {record.model for record in records} == set(ROUTES)
    for record in records:
        assert record.status == ledger_status
        assert record.cost_usd == 0 and record.tokens_out == 0
        assert record.is_streamed is stream
        assert_admitted_headers(responses[record.request_id], record)


def assert_charged_the_worst_case(provider: FakeProvider, record: UsageRecord) -> None:
    """Billed at its bounds, marked estimated: every byte the provider received, and the
    whole output bound."""
    received = provider.requests_for(ROUTES[record.model])[-1].size
    assert record.is_estimated
    assert record.tokens_in >= received and record.tokens_out == PAID_CAP
    assert record.cost_usd == cost_usd(record.model, record.tokens_in, PAID_CAP) > 0


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fault", UNREADABLE)
def test_an_answer_the_gateway_cannot_read_is_an_upstream_error_charged_its_worst_case(
    gateway: Gateway, provider: FakeProvider, paid_token: str, fault: str, stream: bool
) -> None:
    responses = fail_on_every_route(gateway, paid_token, fault, stream)
    for record in ledger(len(ROUTES)):
        response = responses[record.request_id]
        assert_refused(response, 502, "upstream_error")
        assert record.status == "upstream_error" and record.is_streamed is stream
        assert_charged_the_worst_case(provider, record)
        assert_admitted_headers(response, record)


def assert_admitted_headers(response: httpx.Response, record: UsageRecord) -> None:
    """An admitted request that failed upstream still says what it used and what it cost."""
    assert int(response.headers["x-ratelimit-remaining-device"]) >= 0
    assert int(response.headers["x-ratelimit-limit-ip"]) > 0
    assert response.headers["x-request-cost-usd"] == f"{record.cost_usd:.6f}"


@pytest.mark.parametrize("fault", ["drop_mid_stream", "drop"])
def test_a_non_streamed_answer_cut_off_is_an_upstream_error_charged_its_worst_case(
    gateway: Gateway, provider: FakeProvider, paid_token: str, fault: str
) -> None:
    # drop_mid_stream, not streamed: half the body, then a reset; drop: a reset, no answer.
    for model in ROUTES:
        content = f"hi [[fault:{fault}]]"
        response = post(
            gateway,
            chat_body(model=model, messages=[{"role": "user", "content": content}]),
            token=paid_token,
        )
        assert_refused(response, 502, "upstream_error")
        (record,) = ledger(1)
        assert record.status == "upstream_error"
        assert_charged_the_worst_case(provider, record)
        UsageRecord.objects.all().delete()


def test_a_stream_reset_before_any_output_is_charged_its_input_bound(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    for model in ROUTES:
        content = "hi [[fault:drop]]"
        response = post(
            gateway,
            chat_body(model=model, stream=True, messages=[{"role": "user", "content": content}]),
            token=paid_token,
        )
        assert_refused(response, 502, "upstream_error")
    for record in ledger(len(ROUTES)):
        assert record.status == "upstream_error" and record.is_estimated
        # The provider may have read the input; no output was streamed.
        assert record.tokens_in > 0 and record.tokens_out == 0


def test_an_overloaded_provider_passes_its_retry_after_on(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    for model, fault in (
        ("openai-gpt-4o", "http_503:retry_after=9"),
        ("llama3-8b-instruct", "http_429:retry_after=7"),
    ):
        response = post(
            gateway,
            chat_body(model=model, messages=[{"role": "user", "content": f"hi [[fault:{fault}]]"}]),
            token=paid_token,
        )
        assert_refused(response, 503, "upstream_overloaded")
        assert response.headers["retry-after"] == fault.rsplit("=", 1)[1]
    # The rate-limited key is benched for its Retry-After: the next request is told
    # so at once, and the provider is not asked.
    seen = len(provider.requests)
    response = post(gateway, chat_body(model="llama3-8b-instruct"), token=paid_token)
    assert_refused(response, 503, "upstream_overloaded")
    assert 6 <= int(response.headers["retry-after"]) <= 7
    assert len(provider.requests) == seen
    records = ledger(3)
    assert all(record.status == "upstream_overloaded" for record in records)
    assert [record.attempts for record in records] == [1, 1, 0]


@pytest.mark.parametrize("model", ROUTES)
def test_a_rejection_carries_the_providers_message_text_only(
    gateway: Gateway, paid_token: str, model: str
) -> None:
    response = post(
        gateway,
        chat_body(model=model, messages=[{"role": "user", "content": "hi [[fault:http_400]]"}]),
        token=paid_token,
    )
    error = assert_refused(response, 400, "upstream_rejected")
    if ROUTES[model] == "anthropic":
        assert error["message"] == "prompt is too long: 210000 tokens > 200000 maximum"
    else:
        assert error["message"].startswith("This model's maximum context length is 128000 tokens")
    assert "context_length_exceeded" not in response.text
    assert "request_id" not in response.text
    (record,) = ledger(1)
    assert record.status == "upstream_rejected" and record.cost_usd == 0


def test_a_key_the_provider_refuses_is_refetched_once_then_an_upstream_error(
    gateway: Gateway, provider: FakeProvider, paid_token: str
) -> None:
    expected = provider.keys["openai"]
    provider.keys["openai"] = "sk-fake-openai-the-provider-now-wants-another"
    response = post(gateway, chat_body(model="openai-gpt-4o"), token=paid_token)
    assert_refused(response, 502, "upstream_error")
    sent = provider.requests_for("openai")
    # Refused, refetched: the same key, so it is not sent again (issue 18).
    assert [r.headers["authorization"] for r in sent] == [f"Bearer {expected}"]
    assert expected not in response.text and "Incorrect API key" not in response.text
    (record,) = ledger(1)
    assert record.status == "upstream_error" and record.cost_usd == 0
    assert_admitted_headers(response, record)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", ROUTES)
def test_a_provider_slower_than_the_timeout_is_504_charged_its_worst_case(
    start_gateway: Callable[..., Gateway],
    provider: FakeProvider,
    paid_token: str,
    model: str,
    stream: bool,
) -> None:
    gateway = start_gateway(**TIMEOUT_ENV)
    response = post(
        gateway,
        chat_body(
            model=model,
            stream=stream,
            messages=[{"role": "user", "content": "hi [[fault:slow:seconds=1.5]]"}],
        ),
        token=paid_token,
    )
    assert response.headers["content-type"].startswith("application/json")
    assert_refused(response, 504, "upstream_timeout")
    (record,) = ledger(1)
    # The provider may still finish it and bill up to the output bound.
    assert record.status == "upstream_timeout"
    assert_charged_the_worst_case(provider, record)
    assert_admitted_headers(response, record)
