"""Helpers for the acceptance tests: concurrent calls, the operator's view of the money."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from django.conf import settings
from django.core.management import call_command

from devices.models import Device
from devices.tokens import end_user_id, token_hash
from gateway.models import ModelRoute
from gateway.proxy.routes import route_of
from gateway.proxy.upstream import outbound
from gateway.proxy.validation import parse_chat_request
from tests.fakes.slack import FakeSlack
from tests.proxy.conftest import Gateway
from usage.models import UsageRecord

# Two processes sharing PostgreSQL and Redis on the production profile; the
# embedded profile keeps its counters in one process, so one there.
PROCESSES = 2 if settings.GATEWAY_PROFILE == "production" else 1
SLACK_TOKEN = "xoxb-test-only-token-0000000000"
SLACK_CHANNEL = "#hanzo-test"


def slack_environment(fake: FakeSlack) -> dict[str, str]:
    return {
        "SLACK_API_URL": fake.api_url,
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SLACK_CHANNEL": SLACK_CHANNEL,
    }


@dataclass(frozen=True)
class Call:
    """One chat completion to send; ``abandon`` reads the first chunk of a stream, then leaves."""

    token: str
    body: dict[str, Any]
    server: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    abandon: bool = False


@dataclass
class Outcome:
    status: int
    headers: httpx.Headers
    text: str

    @property
    def code(self) -> str | None:
        try:
            code: str | None = json.loads(self.text)["error"]["code"]
            return code
        except (ValueError, KeyError, TypeError):
            return None


def chat(
    token: str,
    text: str = "Hello there",
    *,
    model: str = "llama3-8b-instruct",
    server: int = 0,
    **body: Any,
) -> Call:
    headers = body.pop("headers", {})
    return Call(
        token,
        {"model": model, "messages": [{"role": "user", "content": text}], **body},
        server,
        headers,
    )


async def _one(client: httpx.AsyncClient, gateway: Gateway, call: Call) -> Outcome:
    url = f"{gateway.servers[call.server % len(gateway.servers)].url}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {call.token}", **call.headers}
    async with client.stream("POST", url, json=call.body, headers=headers) as response:
        if call.abandon and response.status_code == 200:
            async for line in response.aiter_lines():
                if '"content"' in line:
                    # Leaving the block unread closes the connection: the
                    # gateway sees the client go away mid-stream.
                    return Outcome(response.status_code, response.headers, line)
        await response.aread()
        return Outcome(response.status_code, response.headers, response.text)


async def _all(
    gateway: Gateway, calls: list[Call], on_done: Callable[[], None] | None
) -> list[Outcome]:
    limits = httpx.Limits(max_connections=len(calls) + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(call: Call) -> Outcome:
            outcome = await _one(client, gateway, call)
            if on_done is not None:
                on_done()
            return outcome

        return list(await asyncio.gather(*(one(call) for call in calls)))


def send_all(gateway: Gateway, calls: list[Call]) -> list[Outcome]:
    """Send every call at once (one connection each) and return the outcomes in order."""
    return asyncio.run(_all(gateway, calls, None))


class InFlight:
    """``send_all`` in a background thread; ``finished`` counts the answers so far."""

    def __init__(self, gateway: Gateway, calls: list[Call]) -> None:
        self._lock = threading.Lock()
        self._finished = 0
        self._pool = ThreadPoolExecutor(1)
        self._future: Future[list[Outcome]] = self._pool.submit(
            lambda: asyncio.run(_all(gateway, calls, self._count))
        )

    def _count(self) -> None:
        with self._lock:
            self._finished += 1

    @property
    def finished(self) -> int:
        if self._future.done():
            self._future.result()  # raise what went wrong
        with self._lock:
            return self._finished

    def result(self) -> list[Outcome]:
        try:
            return self._future.result(timeout=60)
        finally:
            self._pool.shutdown()


def spread(calls: list[Call]) -> list[Call]:
    """The same calls alternated over the gateway processes."""
    return [
        Call(call.token, call.body, index % PROCESSES, call.headers, call.abandon)
        for index, call in enumerate(calls)
    ]


def codes(outcomes: list[Outcome]) -> dict[tuple[int, str | None], int]:
    counted: dict[tuple[int, str | None], int] = {}
    for outcome in outcomes:
        key = (outcome.status, outcome.code)
        counted[key] = counted.get(key, 0) + 1
    return counted


# --- The operator's view --------------------------------------------------------


def command_json(name: str, *args: str) -> Any:
    out = io.StringIO()
    call_command(name, *args, "--format", "json", stdout=out)
    return json.loads(out.getvalue())


def budget_status() -> dict[str, Any]:
    status: dict[str, Any] = command_json("budget_status")
    return status


def cost_report(day: str) -> dict[str, Any]:
    report: dict[str, Any] = command_json("cost_report", "--day", day)
    return report


def ledger_cost(records: list[UsageRecord]) -> Decimal:
    return sum((record.cost_usd for record in records), Decimal(0))


def usd(amount: Decimal | int) -> float:
    """A Decimal amount (or micro-dollars) as the JSON number the commands print."""
    if isinstance(amount, int):
        amount = Decimal(amount) / 1_000_000
    return float(amount.quantize(Decimal("0.000001")))


def worst_case(call: Call, max_tokens: int) -> int:
    """What the gateway reserves for ``call``, in micro-dollars: the same upstream body,
    formula and prices."""
    route = route_of(ModelRoute.objects.get(public_name=call.body["model"]))
    request = parse_chat_request(json.dumps(call.body).encode())
    device = Device.objects.get(token_hash=token_hash(call.token))
    sent = outbound(route, request, max_tokens=max_tokens, end_user=end_user_id(device.pk))
    return route.cost_micro_usd(sent.input_bound, sent.output_bound)
