"""Issue 14 over HTTP: no stalled, pipelined, oversized or abandoned request spends past
the budget or goes unbilled.

One test per hole the review found, each against real gateway processes in
front of the fake provider, with raw sockets where a client must stall,
pipeline or reset. The fake says what it would bill (``provider.bills``):
every record must be at least that, and never above the worst case its
reservation held.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis

from tests.acceptance.support import (
    PROCESSES,
    budget_status,
    chat,
    codes,
    send_all,
    spread,
    usd,
)
from tests.conftest import TestClock
from tests.devices.support import Registered
from tests.fakes.provider import Bill, FakeProvider
from tests.proxy.conftest import Gateway, ledger
from tests.proxy.support import assert_refused, chat_body, cost_usd, leave_after, post, remaining
from tests.support.processes import PrivateRedis, wait_for
from tests.support.raw_http import RawClient, request_bytes
from usage.models import UsageRecord

PAID_CAP = 8192  # MAX_TOKENS_PAID's default: the output bound without max_tokens
IDLE = 3  # STREAM_IDLE_TIMEOUT_SECONDS here
# A stream far larger than every buffer between the gateway and a client
# that reads nothing: 8192 pieces of 4 KiB (the paid cap).
FLOOD = "Flood [[tokens:8192]] [[piece_bytes:4096]]"
HOSTILE = {"STREAM_IDLE_TIMEOUT_SECONDS": str(IDLE), "UPSTREAM_TIMEOUT_SECONDS": "10"}


def at_least_billed(record: UsageRecord, bill: Bill) -> None:
    """Never less than the provider may bill (SPEC)."""
    assert record.tokens_in >= bill.input_tokens, (record.tokens_in, bill)
    assert record.tokens_out >= bill.output_tokens, (record.tokens_out, bill)


def stream_body(content: str, **fields: object) -> dict[str, Any]:
    return chat_body(stream=True, messages=[{"role": "user", "content": content}], **fields)


# --- 1. A stalled reader, a slow first token: the reservation lives on -------------


@pytest.fixture
def capped(
    start_gateway: Callable[..., Gateway], make_device: Callable[..., Registered]
) -> tuple[Gateway, str]:
    """Gateways where one paid device's cap holds one llama3-8b worst case, not two."""
    # 8192 output tokens at $0.10 per 1M is 819 micro-dollars, plus the input bound.
    gateway = start_gateway(PROCESSES, DEVICE_DAILY_BUDGET_USD_PAID="0.0012", **HOSTILE)
    return gateway, make_device("approved", tier="paid").token


def test_a_client_that_stops_reading_keeps_its_reservation_until_its_stream_is_ended(
    capped: tuple[Gateway, str], provider: FakeProvider, clock: TestClock
) -> None:
    gateway, token = capped
    staller = RawClient(gateway.url)
    staller.post(stream_body(FLOOD), token)
    staller.read_until(b"data: ")  # the stream runs; from now on the client reads nothing
    # Longer than any deadline a reservation once had (155 s by default).
    clock.advance(300)
    second = post(gateway, chat_body(), token=token, server=PROCESSES - 1)
    assert_refused(second, 429, "device_budget_exceeded")

    # The idle stream is ended, its provider request cancelled, and it is billed
    # what the provider produced so far: the cap frees for what it did not cost.
    (record,) = ledger(1, timeout=IDLE + 15)
    (bill,) = provider.wait_for_bills(1)
    staller.reset()
    assert record.status == "client_disconnected" and record.is_estimated
    assert bill.ending != "completed" and bill.output_tokens < PAID_CAP
    at_least_billed(record, bill)
    assert record.cost_usd <= Decimal("0.0012")


def test_a_slow_first_token_keeps_its_reservation(
    capped: tuple[Gateway, str], provider: FakeProvider, clock: TestClock
) -> None:
    gateway, token = capped
    waiting = threading.Thread(
        target=post,
        args=(gateway, stream_body("Think [[fault:slow:seconds=4]]")),
        kwargs={"token": token},
    )
    waiting.start()
    wait_for(lambda: len(provider.requests) == 1, timeout=10, what="the slow request upstream")
    clock.advance(300)
    assert_refused(post(gateway, chat_body(), token=token), 429, "device_budget_exceeded")
    waiting.join(30)
    assert [r.status for r in ledger(1)] == ["ok"]


# --- 2. A pipelined stream reset before its response started ----------------------


def test_a_pipelined_stream_reset_before_it_started_is_recorded_and_billed(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, paid_token: str
) -> None:
    gateway = start_gateway(1, **HOSTILE)
    client = RawClient(gateway.url)
    big_answer = chat_body(messages=[{"role": "user", "content": FLOOD}])
    # Its first word comes after the client has gone: what it cost is its input.
    streamed = stream_body("Count [[tokens:50]] [[id:pipelined]] [[fault:slow_chunks:delay=3]]")
    client.send(
        request_bytes(gateway.url, "/v1/chat/completions", big_answer, paid_token),
        request_bytes(gateway.url, "/v1/chat/completions", streamed, paid_token),
    )
    # The second starts once the first answer is written; its headers then wait
    # behind 32 MiB the client never reads.
    wait_for(lambda: len(provider.requests) == 2, timeout=20, what="both requests upstream")
    time.sleep(0.5)
    client.reset()
    records = ledger(2, timeout=IDLE + 15)
    assert {r.status for r in records} == {"ok", "client_disconnected"}
    bills = {bill.label: bill for bill in provider.wait_for_bills(2)}
    (cut,) = [r for r in records if r.status == "client_disconnected"]
    assert cut.is_streamed and cut.cost_usd > 0
    at_least_billed(cut, bills["pipelined"])
    assert post(gateway, chat_body(), token=paid_token).status_code == 200
    assert len(ledger(3)) == 3


# --- 3. Every forwarded byte is in the worst case ------------------------------------


def held_reservation(
    gateway: Gateway, provider: FakeProvider, body: dict[str, Any], token: str
) -> tuple[Decimal, UsageRecord]:
    """Send ``body`` held at the provider; (what was reserved meanwhile, the record)."""
    provider.hold()
    answer: list[httpx.Response] = []
    sender = threading.Thread(
        target=lambda: answer.append(post(gateway, body, token=token)), daemon=True
    )
    sender.start()
    provider.wait_for_held(1, timeout=20)
    reserved = budget_status()["reservedUsd"]
    provider.release_held()
    sender.join(30)
    assert answer and answer[0].status_code == 200, answer
    (record,) = ledger(1)
    return Decimal(str(reserved)), record


@pytest.mark.production_only  # budget_status reads the counters the gateways share
def test_a_large_json_schema_is_part_of_the_worst_case(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, paid_token: str
) -> None:
    gateway = start_gateway(1, **HOSTILE)
    provider.input_billing = "bytes"  # the worst honest tokenizer
    schema = {
        "name": "huge",
        "schema": {
            "type": "object",
            "properties": {f"f{n}": {"type": "string"} for n in range(20_000)},
        },
    }
    body = chat_body(
        model="openai-gpt-4o",
        max_tokens=1,
        messages=[{"role": "user", "content": "Hi [[fault:hold]]"}],
        response_format={"type": "json_schema", "json_schema": schema},
    )
    assert len(json.dumps(body)) > 500_000
    reserved, record = held_reservation(gateway, provider, body, paid_token)
    (bill,) = provider.wait_for_bills(1)
    assert bill.input_tokens > 500_000 and record.tokens_in == bill.input_tokens
    assert record.cost_usd <= reserved


@pytest.mark.production_only
def test_re_serialised_tool_calls_are_part_of_the_worst_case(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, paid_token: str
) -> None:
    gateway = start_gateway(1, **HOSTILE)
    provider.input_billing = "bytes"
    # Anthropic's tool_use input is JSON, re-encoded: 1E15 comes out as 1000000000000000.0.
    arguments = "{" + '"n": [' + ",".join(["1E15"] * 20_000) + "]}"
    body = chat_body(
        model="anthropic-claude-4-sonnet",
        max_tokens=1,
        messages=[
            {"role": "user", "content": "Add them up [[fault:hold]]"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "t1",
                        "type": "function",
                        "function": {"name": "add", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "done"},
        ],
    )
    reserved, record = held_reservation(gateway, provider, body, paid_token)
    (bill,) = provider.wait_for_bills(1)
    assert bill.body_bytes > 3 * len(arguments)  # what grew on the way
    assert record.tokens_in == bill.input_tokens and record.cost_usd <= reserved


def test_large_schemas_at_once_never_spend_past_the_budget(
    start_gateway: Callable[..., Gateway],
    provider: FakeProvider,
    make_device: Callable[..., Registered],
) -> None:
    provider.input_billing = "bytes"
    gateway = start_gateway(
        PROCESSES, DAILY_BUDGET_USD="2.00", MAX_CONCURRENT_REQUESTS_PAID="50", **HOSTILE
    )
    token = make_device("approved", tier="paid").token
    schema = {"name": "huge", "schema": {"enum": ["x" * 100] * 5_000}}  # about $1.27 of input each
    call = chat(
        token,
        "Hi",
        model="openai-gpt-4o",
        max_tokens=1,
        response_format={"type": "json_schema", "json_schema": schema},
    )
    outcomes = send_all(gateway, spread([call] * 20))
    # $2.00 holds one worst case; once it settled, what is left holds none.
    assert codes(outcomes) == {(200, None): 1, (503, "budget_exceeded"): 19}
    (record,) = ledger(1)
    (bill,) = provider.wait_for_bills(1)
    assert record.tokens_in == bill.input_tokens > 500_000
    assert Decimal("1") < record.cost_usd <= Decimal("2.00")
    assert len(provider.requests) == 1


# --- 4. Disconnects and mid-stream failures bill what the provider reported or produced ----


def test_a_client_leaving_an_anthropic_stream_is_billed_the_input_it_reported(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, paid_token: str
) -> None:
    gateway = start_gateway(1, **HOSTILE)
    provider.input_billing = "bytes"
    text = "word " * 18_000 + "[[tokens:200]] [[fault:slow_chunks:delay=0.05]]"
    body = stream_body(text, model="anthropic-claude-4-sonnet")
    assert leave_after(gateway.url, paid_token, body, 2) == 200
    (record,) = ledger(1)
    (bill,) = provider.wait_for_bills(1)
    assert record.status == "client_disconnected"
    assert record.tokens_in == bill.input_tokens > 90_000  # message_start said so
    at_least_billed(record, bill)


@pytest.mark.parametrize(
    ("content", "produced"),
    [
        ("[[piece:漢]] [[tokens:600]] [[fault:drop_mid_stream:after=500]]", 500),
        ("[[reasoning:150]] [[tokens:50]] [[fault:drop_mid_stream:after=150]]", 150),
    ],
    ids=["cjk", "reasoning"],
)
def test_a_stream_cut_mid_answer_is_billed_every_byte_it_produced(
    gateway: Gateway, provider: FakeProvider, paid_token: str, content: str, produced: int
) -> None:
    body = stream_body(content, model="deepseek-r1-distill-llama-70b")
    response = post(gateway, body, token=paid_token)
    assert response.status_code == 200 and '"error"' in response.text
    (record,) = ledger(1)
    (bill,) = provider.wait_for_bills(1)
    assert record.status == "upstream_error" and record.is_estimated
    assert bill.output_tokens == produced
    at_least_billed(record, bill)


# --- 5 and 6. A timeout, an answer the gateway cannot read: the worst case --------------


@pytest.mark.parametrize("kind", ["deep", "surrogate", "truncated"])
def test_a_200_that_cannot_be_parsed_is_billed_its_reported_input_and_the_whole_output_bound(
    gateway: Gateway, provider: FakeProvider, paid_token: str, kind: str
) -> None:
    provider.input_billing = "bytes"
    content = "word " * 30_000 + f"[[tokens:8000]] [[fault:broken_json:kind={kind}]]"
    response = post(
        gateway, chat_body(messages=[{"role": "user", "content": content}]), token=paid_token
    )
    assert_refused(response, 502, "upstream_error")
    (record,) = ledger(1)
    (bill,) = provider.wait_for_bills(1)
    assert bill.input_tokens > 150_000 and bill.output_tokens == 8000
    assert (record.tokens_in, record.tokens_out) == (bill.input_tokens, PAID_CAP)
    assert record.cost_usd == cost_usd(record.model, record.tokens_in, PAID_CAP)
    assert response.headers["x-request-cost-usd"] == f"{record.cost_usd:.6f}"


def test_a_timeout_is_billed_the_whole_output_bound(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, paid_token: str
) -> None:
    gateway = start_gateway(1, UPSTREAM_TIMEOUT_SECONDS="0.5")
    content = "Hi [[tokens:300]] [[fault:slow:seconds=2]]"
    response = post(
        gateway, chat_body(messages=[{"role": "user", "content": content}]), token=paid_token
    )
    assert_refused(response, 504, "upstream_timeout")
    (record,) = ledger(1)
    (bill,) = provider.wait_for_bills(1)  # the provider finished and billed it
    assert record.tokens_out == PAID_CAP
    at_least_billed(record, bill)


# --- 7. A store error at settlement -----------------------------------------------------


@pytest.mark.production_only  # the gateways' store is a Redis
def test_a_settlement_the_store_refused_is_retried_until_the_counters_equal_the_ledger(
    start_gateway: Callable[..., Gateway],
    provider: FakeProvider,
    paid_token: str,
    private_redis: PrivateRedis,
) -> None:
    # A Redis of its own: EVALSHA is refused there for everyone for a while.
    gateway = start_gateway(1, REDIS_URL=private_redis.url, **HOSTILE)
    store = redis.Redis.from_url(private_redis.url)
    provider.hold()
    sender = threading.Thread(
        target=post,
        args=(gateway, chat_body(messages=[{"role": "user", "content": "Hi [[fault:hold]]"}])),
        kwargs={"token": paid_token},
    )
    sender.start()
    provider.wait_for_held(1)
    reserved = budget_status()["reservedUsd"]
    assert reserved > 0
    store.execute_command("ACL", "SETUSER", "default", "-evalsha", "-eval")
    try:
        provider.release_held()
        sender.join(30)
        (record,) = ledger(1)  # the record is made durable whatever the store does
        time.sleep(1.5)  # a few settlement attempts, all refused
        assert "could not settle" in gateway.logs()
    finally:
        store.execute_command("ACL", "SETUSER", "default", "+@all")
    wait_for(lambda: budget_status()["reservedUsd"] == 0, timeout=15, what="the settlement")
    assert budget_status()["spentUsd"] == usd(record.cost_usd) > 0


# --- 8. Refused before admission; nothing at all is consumed --------------------------------


@pytest.mark.parametrize("where", ["tools", "response_format", "messages"])
def test_json_nested_deeper_than_64_levels_is_a_400_that_consumes_nothing(
    gateway: Gateway, provider: FakeProvider, paid_token: str, where: str
) -> None:
    deep: object = {}
    for _ in range(300):
        deep = {"a": deep}
    body = chat_body(model="openai-gpt-4o")
    if where == "tools":
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": deep}}]
    elif where == "response_format":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "n", "schema": deep},
        }
    else:  # anywhere: a field the gateway would drop
        body["unknown"] = deep
    before = remaining(gateway, paid_token)
    raw = json.dumps(body).encode()  # deeper than orjson writes (255), as a client may send
    response = post(gateway, raw, token=paid_token, headers={"Content-Type": "application/json"})
    error = assert_refused(response, 400, "invalid_request")
    assert "64" in error["message"]
    assert remaining(gateway, paid_token) == before
    assert provider.requests == [] and UsageRecord.objects.count() == 0


def test_a_device_with_its_tiers_requests_in_flight_is_refused_another(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, free_token: str
) -> None:
    gateway = start_gateway(1, MAX_CONCURRENT_REQUESTS_FREE="2", **HOSTILE)
    provider.hold()
    held = [chat(free_token, "Hi [[fault:hold]]")] * 2
    flight = threading.Thread(target=send_all, args=(gateway, held), daemon=True)
    flight.start()
    provider.wait_for_held(2)
    refused = post(gateway, chat_body(), token=free_token)
    assert_refused(refused, 429, "concurrency_limit_exceeded")
    assert refused.headers["retry-after"] == "1"
    provider.release_held()
    flight.join(30)
    assert post(gateway, chat_body(), token=free_token).status_code == 200
    assert len(ledger(3)) == 3
