"""gateway.proxy.bodies in-process: the deadline's cancellation and the reads around it.
(The attacks over HTTP are in tests/hardening/test_bodies.py.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pytest_django import Settings

from gateway.core.errors import RequestTimeout, RequestTooLarge
from gateway.proxy.bodies import SWEEP_SECONDS, BoundedBody

SCOPE: dict[str, Any] = {"type": "http", "headers": [(b"content-length", b"10")]}


def stalled_then(*messages: dict[str, Any]) -> Any:
    """A server's ``receive``: ``messages`` one per call, then nothing ever again."""
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


@pytest.fixture
def short_deadline(settings: Settings) -> float:
    settings.REQUEST_BODY_TIMEOUT_SECONDS = 0.2
    return 0.2


async def test_the_deadline_refuses_the_read_under_way_and_every_later_one(
    short_deadline: float,
) -> None:
    body = BoundedBody(
        SCOPE, stalled_then({"type": "http.request", "body": b"abc", "more_body": True})
    )
    assert (await body.receive())["body"] == b"abc"
    started = time.monotonic()
    with pytest.raises(RequestTimeout) as refused:
        await body.receive()
    assert (
        short_deadline - 0.1 <= time.monotonic() - started <= short_deadline + SWEEP_SECONDS + 0.5
    )
    assert refused.value.headers() == {"Connection": "close"}
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0  # the deadline's cancel is undone
    with pytest.raises(RequestTimeout):
        await body.receive()


async def test_a_deadline_passed_between_reads_refuses_the_next_one(short_deadline: float) -> None:
    body = BoundedBody(
        SCOPE, stalled_then({"type": "http.request", "body": b"a", "more_body": True})
    )
    await body.receive()
    await asyncio.sleep(short_deadline + SWEEP_SECONDS + 0.1)  # the app busy elsewhere
    with pytest.raises(RequestTimeout):
        await body.receive()


async def test_a_cancellation_that_is_not_the_deadlines_stays_a_cancellation() -> None:
    body = BoundedBody(SCOPE, stalled_then())
    reading = asyncio.get_running_loop().create_task(body.receive())
    await asyncio.sleep(0.01)
    reading.cancel()  # the server shutting down, say
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert body.refusal is None


async def test_after_the_body_reads_go_to_the_server_whatever_the_deadline(
    short_deadline: float,
) -> None:
    disconnect = {"type": "http.disconnect"}
    body = BoundedBody(
        SCOPE, stalled_then({"type": "http.request", "body": b"0123456789"}, disconnect)
    )
    assert (await body.receive())["body"] == b"0123456789"
    await asyncio.sleep(short_deadline + SWEEP_SECONDS + 0.1)
    assert await body.receive() == disconnect


async def test_a_declared_length_over_the_limit_is_refused_without_asking_the_server(
    settings: Settings,
) -> None:
    settings.MAX_REQUEST_BYTES = 9
    body = BoundedBody(SCOPE, stalled_then({"type": "http.request", "body": b"x" * 10}))
    with pytest.raises(RequestTooLarge):
        await body.receive()
    with pytest.raises(RequestTooLarge):
        await asyncio.wait_for(body.receive(), 1)  # again: the server is never asked
