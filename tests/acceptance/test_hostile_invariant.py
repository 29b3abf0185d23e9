"""Issue 14's invariant: hostile traffic on two gateway processes never spends past the
budget or a device's cap, and every request the provider saw is in the ledger once.

Paid and free devices send, all at once: normal and streamed answers,
readers that stall, pipelined requests reset before their answer, clients
leaving mid-stream, provider timeouts, answers that do not parse, large
JSON schemas, (issue 17) several choices and images at once, and (issue 18)
providers refusing requests before any output, which move on to fallbacks. The budget
and the paid caps are small enough to bind. Once it is over: spent <= budget,
each device's spend <= its cap, the ledger's sum is the spent counter, nothing
stays reserved, and the ledger holds exactly one record per request the
provider received.
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from pytest_django import Settings

from gateway.proxy.routes import seed_routes
from tests.acceptance.support import budget_status, ledger_cost, usd
from tests.devices.support import Registered
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway
from tests.proxy.support import bearer, chat_body, leave_after
from tests.support.processes import wait_for
from tests.support.raw_http import RawClient, request_bytes
from usage.models import UsageRecord

pytestmark = pytest.mark.production_only  # two processes sharing the counters

# A gpt-4o worst case is about $0.083 (8192 output tokens at $10 per 1M): each
# paid device wants about $0.58 of worst cases, far past its cap; four caps, past the budget.
BUDGET = Decimal("0.70")
PAID_CAP = Decimal("0.30")
FREE_CAP = Decimal("0.01")
ENVIRONMENT = {
    "DAILY_BUDGET_USD": str(BUDGET),
    "DEVICE_DAILY_BUDGET_USD_PAID": str(PAID_CAP),
    "DEVICE_DAILY_BUDGET_USD_FREE": str(FREE_CAP),
    "STREAM_IDLE_TIMEOUT_SECONDS": "3",
    "UPSTREAM_TIMEOUT_SECONDS": "2",
    "RATE_LIMIT_FREE_DEVICE_PER_MINUTE": "1000",
    "RATE_LIMIT_PAID_DEVICE_PER_MINUTE": "1000",
}
GPT = "openai-gpt-4o"
PRIMARY, FALLBACKS = "llama3-8b-instruct", ("llama3.3-70b-instruct", GPT)
REFUSALS_QUEUED = 10
FLOOD = "Flood [[tokens:8192]] [[piece_bytes:4096]]"
SLOW_STREAM = "Hi [[tokens:30]] [[fault:slow_chunks:delay=3]]"
TRICKLE = "[[tokens:200]] [[fault:slow_chunks:delay=0.05]]"


def user(text: str, **fields: object) -> dict[str, Any]:
    return chat_body(messages=[{"role": "user", "content": text}], **fields)


def with_images(text: str, images: int, **fields: object) -> dict[str, Any]:
    """A user message with ``images`` https images: each counts 1445 tokens (gpt-4o)."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [
        {"type": "image_url", "image_url": {"url": f"https://example.com/{n}.png"}}
        for n in range(images)
    ]
    return chat_body(messages=[{"role": "user", "content": parts}], **fields)


REFUSED_BY_MONEY = ("device_budget_exceeded", "budget_exceeded")


def plain(url: str, token: str, body: dict[str, Any]) -> str | None:
    """The error code of the answer, if any."""
    response = httpx.post(
        f"{url}/v1/chat/completions", json=body, headers=bearer(token), timeout=30
    )
    if response.status_code == 200:
        return None
    return str(response.json()["error"]["code"])


def leave_early(url: str, token: str, body: dict[str, Any]) -> int:
    return leave_after(url, token, body, 3)


def stall(url: str, token: str, body: dict[str, Any]) -> None:
    """Send, read the first bytes, then read nothing until the gateway gives up."""
    client = RawClient(url)
    client.post(body, token)
    try:
        client.read_until(b"\r\n", timeout=10)
        client.sock.settimeout(12)
        client.sock.recv(1)  # blocks: the gateway ends the stream after its idle timeout
    except OSError:
        pass
    finally:
        client.reset()


def pipeline_and_reset(url: str, token: str, body: dict[str, Any]) -> None:
    client = RawClient(url)
    flood = user(FLOOD)
    path = "/v1/chat/completions"
    client.send(request_bytes(url, path, flood, token), request_bytes(url, path, body, token))
    try:
        client.read_until(b"\r\n", timeout=10)
    except OSError:
        pass
    threading.Event().wait(1.5)  # the second request gets admitted behind the unread answer
    client.reset()


def traffic(urls: list[str], paid: list[str], free: list[str]) -> list[Callable[[], object]]:
    schema = {"name": "big", "schema": {"enum": ["x" * 100] * 600}}  # ~60 KB forwarded: $0.15
    schema_format = {"type": "json_schema", "json_schema": schema}
    calls: list[tuple[Callable[[str, str, dict[str, Any]], object], str, dict[str, Any]]] = []
    for token in paid:
        calls += [
            (plain, token, user("Hi [[tokens:20]]", model=GPT)),
            (plain, token, user("Hi [[tokens:20]]", model=GPT, stream=True)),
            (stall, token, user(FLOOD, model=GPT, stream=True)),
            # Its first word would come after the reset: the provider produces nothing unseen.
            (pipeline_and_reset, token, user(SLOW_STREAM, model=GPT, stream=True)),
            (
                leave_early,
                token,
                user(TRICKLE, stream=True),
            ),
            (plain, token, user("Slow [[fault:slow:seconds=4]]", model=GPT)),
            (plain, token, user("[[tokens:500]] [[fault:broken_json]]", model=GPT)),
            (plain, token, user("Hi", model=GPT, max_tokens=1, response_format=schema_format)),
            # Several choices and images: n x the output cap, each image at its maximum.
            (plain, token, with_images("Look [[tokens:20]]", 3, model=GPT, n=4)),
            (leave_early, token, with_images(TRICKLE, 2, model=GPT, n=3, stream=True)),
            # Issue 18: llama3-8b falls back to llama3.3-70b, then gpt-4o (paid only).
            (plain, token, user("Fall back [[tokens:20]]", max_tokens=2000)),
            (plain, token, user("Fall back [[tokens:20]]", stream=True, max_tokens=2000)),
        ]
    for token in free:
        calls += [
            (plain, token, user("Hi [[tokens:20]]")),
            (stall, token, user(FLOOD, stream=True)),
            (
                leave_early,
                token,
                user(TRICKLE, stream=True),
            ),
            (plain, token, user("[[tokens:50]] [[fault:broken_json:kind=truncated]]")),
            (plain, token, user("Slow [[fault:slow:seconds=4]]", stream=True)),
            (plain, token, user("Fall back [[tokens:20]]")),
        ]
    return [
        functools.partial(call[0], urls[index % len(urls)], call[1], call[2])
        for index, call in enumerate(calls)
    ]


def test_hostile_traffic_on_two_processes_never_overspends_and_leaves_one_record_each(
    start_gateway: Callable[..., Gateway],
    provider: FakeProvider,
    make_device: Callable[..., Registered],
    settings: Settings,
) -> None:
    settings.DAILY_BUDGET_USD = BUDGET
    provider.input_billing = "bytes"
    seed_routes()
    call_command("set_fallbacks", PRIMARY, *FALLBACKS, stdout=io.StringIO())
    # Refusals before output, taken by whichever requests reach the provider first:
    # each moves its request on to a fallback.
    provider.fail_next("http_500", provider="digitalocean", count=6)
    provider.fail_next("http_529", provider="digitalocean", count=2)
    provider.fail_next("http_503", provider="openai", count=2)
    assert provider.queued_faults == REFUSALS_QUEUED
    gateway = start_gateway(2, **ENVIRONMENT)
    paid = [make_device("approved", tier="paid", name=f"paid {n}") for n in range(4)]
    free = [make_device("approved", name=f"free {n}") for n in range(3)]
    work = traffic(
        [server.url for server in gateway.servers],
        [device.token for device in paid],
        [device.token for device in free],
    )
    with ThreadPoolExecutor(max_workers=len(work)) as pool:
        answers = [future.result(timeout=60) for future in [pool.submit(job) for job in work]]

    # Everything the provider received is settled and in the ledger, once: one record
    # per admitted request, counting each attempt the providers saw.
    wait_for(
        lambda: (
            sum(UsageRecord.objects.values_list("attempts", flat=True)) >= len(provider.requests)
        ),
        timeout=30,
        what="a record for every request the provider received",
    )
    wait_for(lambda: budget_status()["reservedUsd"] == 0, timeout=30, what="nothing reserved")
    records = list(UsageRecord.objects.all())
    assert sum(r.attempts for r in records) == len(provider.requests)
    assert len(records) == len({r.request_id for r in records})
    # Some requests were answered by a fallback, at the fallback's prices.
    fell_back = [r for r in records if r.model != r.requested_model]
    assert fell_back and all(r.requested_model == PRIMARY for r in fell_back)
    assert all(r.attempts >= 2 for r in fell_back)
    # Which hostile requests got in depends on who reached the caps first; some always do.
    assert {r.status for r in records} - {"ok"}, "no hostile request was admitted"

    status = budget_status()
    spent = ledger_cost(records)
    assert status["spentUsd"] == usd(spent)
    assert spent <= BUDGET
    for device in paid + free:
        cap = PAID_CAP if device in paid else FREE_CAP
        assert ledger_cost([r for r in records if r.device_id == device.device.id]) <= cap
    # The traffic wanted more than the caps and the budget allow: they held it.
    assert any(answer in REFUSED_BY_MONEY for answer in answers), answers
    # And, provider by provider, nothing was billed less than the provider bills.
    # (A refusal the fake queued is no bill: the provider did no work.)
    refusals = REFUSALS_QUEUED - provider.queued_faults
    bills = provider.wait_for_bills(len(provider.requests) - refusals)
    for name in ("openai", "digitalocean"):
        mine = [r for r in records if r.provider == name]
        theirs = [b for b in bills if b.provider == name]
        assert sum(r.tokens_in for r in mine) >= sum(b.input_tokens for b in theirs)
        assert sum(r.tokens_out for r in mine) >= sum(b.output_tokens for b in theirs)
