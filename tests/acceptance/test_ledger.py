"""Issue 6 over HTTP: after concurrent mixed traffic on every process, the money adds up.

Successes (plain and streamed, OpenAI-compatible and Anthropic), upstream
errors, timeouts, overloads, rejections, streams the client abandons or the
provider breaks, and refusals, all at once. Once everything has settled:
one usage record per admitted request (= per request the provider saw),
the ledger's sum is the day's spent counter, nothing stays reserved, and
cost_report's totals are the ledger's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import pytest

from tests.acceptance.support import (
    PROCESSES,
    Call,
    budget_status,
    chat,
    codes,
    cost_report,
    ledger_cost,
    send_all,
    spread,
    usd,
)
from tests.fakes.provider import FakeProvider
from tests.proxy.conftest import Gateway, ledger
from tests.support.processes import wait_for

pytestmark = pytest.mark.production_only  # budget_status reads the counters the gateways share

CLAUDE = "anthropic-claude-4-sonnet"


def mixed_traffic(paid: str, free: str) -> tuple[list[Call], dict[str, int]]:
    """The calls, and how many of them the ledger should hold by status."""
    abandoned = chat(paid, "[[tokens:50]] [[fault:slow_chunks:delay=0.2]]", stream=True)
    calls = [
        *[chat(paid, "Hello [[tokens:7]]")] * 6,
        *[chat(paid, "[[tokens:9]]", stream=True, stream_options={"include_usage": True})] * 3,
        *[chat(paid, "Hi [[tokens:4]]", model=CLAUDE)] * 2,
        *[chat(paid, "Hi [[tokens:6]]", model=CLAUDE, stream=True)] * 2,
        *[chat(paid, "[[fault:http_500]]")] * 3,
        *[chat(paid, "[[fault:drop]]")] * 2,
        *[chat(paid, "[[tokens:8]] [[fault:error_mid_stream]]", stream=True)] * 2,
        *[chat(paid, "[[fault:slow:seconds=5]]")] * 3,
        *[Call(abandoned.token, abandoned.body, abandon=True)] * 3,
        Call(paid, {**abandoned.body, "model": CLAUDE}, abandon=True),
        *[chat(paid, "[[tokens:8]] [[fault:drop_mid_stream]]", stream=True)] * 2,
        chat(paid, "[[tokens:8]] [[fault:drop_mid_stream]]", model=CLAUDE, stream=True),
        chat(paid, "[[tokens:3]] [[fault:slow_chunks:delay=4]]", stream=True),
        chat(paid, "[[fault:http_429]]"),
        chat(paid, "[[fault:http_400]]"),
        *[chat(free, "Free [[tokens:3]]")] * 8,  # 3 fit the device's day, 5 refused
        chat(paid, max_tokens=10**6),  # refused before admission
        chat(paid, model="no-such-model"),
    ]
    statuses = {
        "ok": 6 + 3 + 2 + 2 + 3,
        "upstream_error": 3 + 2 + 2 + 3,
        "upstream_timeout": 3 + 1,
        "client_disconnected": 3 + 1,
        "upstream_overloaded": 1,
        "upstream_rejected": 1,
    }
    return calls, statuses


def test_after_concurrent_mixed_traffic_the_ledger_the_counters_and_the_report_agree(
    start_gateway: Callable[..., Gateway], provider: FakeProvider, paid_token: str, free_token: str
) -> None:
    gateway = start_gateway(
        PROCESSES,
        UPSTREAM_TIMEOUT_SECONDS="2",
        RATE_LIMIT_FREE_DEVICE_PER_DAY="3",
        RATE_LIMIT_FREE_DEVICE_PER_MINUTE="1000",
        MAX_CONCURRENT_REQUESTS_FREE="100",  # all at once: the in-flight layer is not tested here
        MAX_CONCURRENT_REQUESTS_PAID="100",
    )
    calls, statuses = mixed_traffic(paid_token, free_token)
    outcomes = send_all(gateway, spread(calls))

    assert codes(outcomes) == {
        (200, None): 6 + 3 + 2 + 2 + 2 + 4 + 3 + 3 + 1,
        (502, "upstream_error"): 3 + 2,
        (504, "upstream_timeout"): 3,
        (503, "upstream_overloaded"): 1,
        (400, "upstream_rejected"): 1,
        (429, "device_rate_limit_exceeded"): 5,
        (400, "max_tokens_exceeded"): 1,
        (404, "model_not_found"): 1,
    }
    refused = {"device_rate_limit_exceeded", "max_tokens_exceeded", "model_not_found"}
    admitted = [o for o in outcomes if o.code not in refused]
    records = ledger(len(admitted))
    assert Counter(r.status for r in records) == statuses
    assert len(provider.requests) == len(records)
    by_id = {r.request_id: r for r in records}
    assert set(by_id) == {o.headers["x-request-id"] for o in admitted}

    for outcome in admitted:
        record = by_id[outcome.headers["x-request-id"]]
        if "x-request-cost-usd" in outcome.headers:
            assert outcome.headers["x-request-cost-usd"] == f"{record.cost_usd:.6f}"
        if record.status in ("client_disconnected", "upstream_timeout"):
            assert record.cost_usd > 0 and record.is_estimated  # never free
    assert all(r.cost_usd == 0 for r in records if r.tokens_in == r.tokens_out == 0)

    wait_for(lambda: budget_status()["reservedUsd"] == 0, timeout=15, what="reservations settled")
    total = ledger_cost(records)
    status = budget_status()
    assert status["spentUsd"] == usd(total) > 0
    assert status["reservedUsd"] == 0 and status["paused"] is False

    report = cost_report(status["day"])
    assert report["totalCostUsd"] == usd(total)
    assert report["totalRequests"] == len(records)
    assert report["totalTokens"] == sum(r.tokens_in + r.tokens_out for r in records)
    for dimension in ("byDay", "byModel", "byProvider", "byTier"):
        rows = report[dimension]
        assert sum(row["requests"] for row in rows) == len(records), dimension
        assert usd(sum(Decimal(str(row["costUsd"])) for row in rows)) == usd(total), dimension
