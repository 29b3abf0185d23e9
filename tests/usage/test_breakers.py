"""``usage.breakers``: each process's view, its counts and their sync, the probe.

Two ``Breakers`` instances on one store stand for two gateway processes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pytest_django import Settings

from gateway.core import lifecycle
from gateway.core.metrics import render
from gateway.core.store import StoreUnavailable
from tests.conftest import gateway_environment
from tests.support.processes import PrivateRedis, python_child
from tests.usage.conftest import FrozenClock
from usage import breakers
from usage.backends.base import Backend
from usage.breakers import Breakers, Target, key_target, route_target
from usage.types import ATTEMPT_OUTCOMES as OUTCOMES
from usage.types import Transition

pytestmark = pytest.mark.django_db(transaction=True)

ROUTE = route_target("llama3-8b-instruct")
KEY = key_target("openai", "k1a2b3")


@pytest.fixture(autouse=True)
def _rules(settings: Settings) -> None:
    settings.BREAKER_FAILURES = 3
    settings.BREAKER_WINDOW_SECONDS = 30
    settings.BREAKER_COOLDOWN_SECONDS = 30.0
    settings.BREAKER_PROBE_SECONDS = 120.0


@pytest.fixture
def transitions() -> Iterator[list[tuple[Target, Transition]]]:
    seen: list[tuple[Target, Transition]] = []

    def hook(target: Target, transition: Transition) -> None:
        seen.append((target, transition))

    breakers.on_transition(hook)
    yield seen
    breakers._hooks.remove(hook)


def fail(process: Breakers, target: str, times: int) -> None:
    for _ in range(times):
        process.report(target, "failure")


async def opened_on_a(backend: Backend) -> tuple[Breakers, Breakers]:
    """Processes A and B; A's failures opened ROUTE and both synced since."""
    a, b = Breakers(), Breakers()
    fail(a, ROUTE, 3)
    await a.sync()
    await b.sync()
    return a, b


async def settle_probes() -> None:
    """Wait for the probe results ``report`` spawned."""
    await lifecycle._drain_background()


async def test_a_closed_breaker_allows_and_counts_without_touching_the_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_store() -> None:
        raise AssertionError("the hot path touched the store")

    monkeypatch.setattr(breakers, "get_backend", no_store)
    process = Breakers()
    assert await process.allow(ROUTE)
    process.report(ROUTE, "failure")
    process.report(ROUTE, "ok")
    assert await process.allow(ROUTE)
    assert process.state(ROUTE) == "closed"


async def test_failures_reported_in_one_process_open_the_breaker_for_both_at_their_sync(
    backend: Backend, frozen_clock: FrozenClock, transitions: list[tuple[Target, Transition]]
) -> None:
    a, b = Breakers(), Breakers()
    fail(a, ROUTE, 2)
    fail(b, ROUTE, 1)
    await b.sync()
    assert await a.allow(ROUTE) and await b.allow(ROUTE)  # counts wait for A's sync
    await a.sync()
    assert not await a.allow(ROUTE)
    assert await b.allow(ROUTE)  # B has not synced yet
    await b.sync()
    assert not await b.allow(ROUTE)
    assert (a.state(ROUTE), b.state(ROUTE)) == ("open", "open")
    assert transitions == [(Target("route", "llama3-8b-instruct"), "opened")]
    assert await a.allow(KEY)  # other targets are not affected


async def test_rejected_attempts_are_counted_but_never_open_a_breaker(
    backend: Backend, frozen_clock: FrozenClock
) -> None:
    process = Breakers()
    for _ in range(10):
        process.report(ROUTE, "rejected")
    process.report(ROUTE, "timeout")
    await process.sync()
    assert await process.allow(ROUTE)
    (route,) = await sync_to_async(breakers.states_sync)()
    assert (route.route, route.state, route.attempts, route.failed) == (
        "llama3-8b-instruct",
        "closed",
        11,
        1,
    )
    assert route.failures_in_window == 1
    assert route.error_rate == pytest.approx(1 / 11)


async def test_timeouts_count_toward_opening(backend: Backend, frozen_clock: FrozenClock) -> None:
    process = Breakers()
    for _ in range(3):
        process.report(KEY, "timeout")
    await process.sync()
    assert process.state(KEY) == "open"


async def test_after_the_cool_down_one_process_probes_and_its_success_closes_it_once(
    backend: Backend, frozen_clock: FrozenClock, transitions: list[tuple[Target, Transition]]
) -> None:
    a, b = await opened_on_a(backend)
    frozen_clock.advance(29)
    assert not await a.allow(ROUTE) and not await b.allow(ROUTE)
    frozen_clock.advance(2)
    allowed = await asyncio.gather(a.allow(ROUTE), b.allow(ROUTE), a.allow(ROUTE), b.allow(ROUTE))
    assert allowed.count(True) == 1
    prober, other = (a, b) if (allowed[0] or allowed[2]) else (b, a)
    assert prober.state(ROUTE) == "half_open"
    await other.sync()
    assert other.state(ROUTE) == "half_open" and not await other.allow(ROUTE)

    prober.report(ROUTE, "ok")
    await settle_probes()
    assert prober.state(ROUTE) == "closed" and await prober.allow(ROUTE)
    await other.sync()
    assert await other.allow(ROUTE)
    assert [transition for _, transition in transitions] == ["opened", "closed"]


async def test_a_probe_the_client_rejected_still_shows_the_provider_answers(
    backend: Backend, frozen_clock: FrozenClock
) -> None:
    a, _ = await opened_on_a(backend)
    frozen_clock.advance(31)
    assert await a.allow(ROUTE)
    a.report(ROUTE, "rejected")
    await settle_probes()
    assert a.state(ROUTE) == "closed"


async def test_a_failed_probe_reopens_it_for_another_cool_down_with_no_transition(
    backend: Backend, frozen_clock: FrozenClock, transitions: list[tuple[Target, Transition]]
) -> None:
    a, b = await opened_on_a(backend)
    frozen_clock.advance(31)
    assert await b.allow(ROUTE)
    b.report(ROUTE, "timeout")
    await settle_probes()
    assert b.state(ROUTE) == "open"
    frozen_clock.advance(29)
    await a.sync()
    assert not await a.allow(ROUTE) and not await b.allow(ROUTE)
    frozen_clock.advance(2)
    assert await a.allow(ROUTE)
    assert [transition for _, transition in transitions] == ["opened"]


async def test_a_lost_probe_is_claimed_again_once_its_claim_lapses(
    backend: Backend, frozen_clock: FrozenClock
) -> None:
    a, b = await opened_on_a(backend)
    frozen_clock.advance(31)
    assert await a.allow(ROUTE)  # and A never reports
    await b.sync()
    assert not await b.allow(ROUTE)
    frozen_clock.advance(120)
    assert await b.allow(ROUTE)


async def test_a_probe_not_used_after_all_is_given_back_for_another_request(
    backend: Backend, frozen_clock: FrozenClock
) -> None:
    a, b = await opened_on_a(backend)
    frozen_clock.advance(31)
    assert await a.allow(ROUTE)
    assert not await b.allow(ROUTE)
    a.release(ROUTE)
    await settle_probes()
    await b.sync()  # B learns of it at its next sync
    assert await b.allow(ROUTE)
    assert not await a.allow(ROUTE)  # B's probe now
    a.report(ROUTE, "ok")  # not a probe of A's: no probe result
    await settle_probes()
    assert a.state(ROUTE) == "half_open"


async def test_with_the_store_down_the_cool_down_ends_and_every_request_is_allowed(
    private_redis: PrivateRedis, frozen_clock: FrozenClock
) -> None:
    process = Breakers()
    fail(process, ROUTE, 3)
    await process.sync()
    private_redis.stop()
    assert not await process.allow(ROUTE)  # decided from this process's view
    frozen_clock.advance(31)
    assert await process.allow(ROUTE) and await process.allow(ROUTE)
    with pytest.raises(StoreUnavailable):
        await process.sync()
    assert await process.allow(ROUTE)


async def test_the_background_task_syncs_every_breaker_sync_seconds(
    backend: Backend, settings: Settings, frozen_clock: FrozenClock
) -> None:
    settings.BREAKER_SYNC_SECONDS = 0.02
    other = Breakers()
    await breakers.start()
    try:
        fail(breakers._process, ROUTE, 3)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if breakers.state(ROUTE) == "open":
                break
        assert breakers.state(ROUTE) == "open"
        await other.sync()
        assert other.state(ROUTE) == "open"
    finally:
        await breakers.stop()


async def test_states_for_the_dashboard_name_routes_and_never_keys(
    backend: Backend, frozen_clock: FrozenClock
) -> None:
    process = Breakers()
    process.report(route_target("a"), "ok")
    process.report(route_target("a"), "failure")
    fail(process, route_target("b"), 3)
    fail(process, KEY, 3)
    await process.sync()
    states = await sync_to_async(breakers.states_sync)(["c", "a"])
    assert [(s.route, s.state, s.attempts, s.failed) for s in states] == [
        ("a", "closed", 2, 1),
        ("b", "open", 3, 3),
        ("c", "closed", 0, 0),
    ]
    assert states[1].open_until == frozen_clock.now() + 30
    assert states[2].error_rate is None


def test_a_key_breaker_needs_a_fingerprint_not_a_key() -> None:
    assert key_target("openai", "k1a2b3") == "key:openai:k1a2b3"
    assert Target.parse(KEY) == Target("key", "openai", "k1a2b3")
    with pytest.raises(ValueError):
        key_target("openai", "sk-proj-" + "x" * 40)
    with pytest.raises(ValueError):
        key_target("openai", "a:b")


async def test_an_unknown_outcome_is_a_bug() -> None:
    with pytest.raises(ValueError):
        Breakers().report(ROUTE, "maybe")  # type: ignore[arg-type]


async def test_a_transition_is_logged_as_a_warning_and_a_failing_hook_harms_nothing(
    backend: Backend, frozen_clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(target: Target, transition: Transition) -> None:
        raise RuntimeError("hook bug")

    breakers.on_transition(broken)
    try:
        with caplog.at_level(logging.WARNING, logger="usage.breakers"):
            process = Breakers()
            fail(process, KEY, 3)
            await process.sync()
    finally:
        breakers._hooks.remove(broken)
    assert process.state(KEY) == "open"
    assert "circuit breaker opened: openai key k1a2b3" in caplog.text
    assert "circuit-breaker hook failed" in caplog.text


# --- Metrics ---------------------------------------------------------------------


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def scraped_states(text: str) -> dict[str, float]:
    return {
        sample.labels["route"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "hanzo_breaker_state"
        for sample in family.samples
    }


async def test_attempts_are_counted_per_route_and_outcome_and_never_per_key(
    backend: Backend,
) -> None:
    route = "metrics-route"
    before = {o: sample("hanzo_breaker_attempts_total", route=route, outcome=o) for o in OUTCOMES}
    for outcome in ("ok", "ok", "failure", "timeout", "rejected"):
        breakers.report(route_target(route), outcome)
    breakers.report(key_target("openai", "m3tr1c"), "failure")
    after = {o: sample("hanzo_breaker_attempts_total", route=route, outcome=o) for o in OUTCOMES}
    assert {o: after[o] - before[o] for o in OUTCOMES} == {
        "ok": 2,
        "failure": 1,
        "timeout": 1,
        "rejected": 1,
    }
    text = (await render()).decode()
    assert "m3tr1c" not in text


async def test_the_state_gauge_shows_this_processs_view_of_each_route(
    backend: Backend, frozen_clock: FrozenClock
) -> None:
    opened_before = sample(
        "hanzo_breaker_transitions_total", kind="route", name="down", transition="opened"
    )
    breakers.report(route_target("up"), "ok")
    for _ in range(3):
        breakers.report(route_target("down"), "failure")
    await breakers.sync()
    assert scraped_states((await render()).decode()) == {"up": 0, "down": 1}
    assert (
        sample("hanzo_breaker_transitions_total", kind="route", name="down", transition="opened")
        == opened_before + 1
    )
    frozen_clock.advance(31)
    assert await breakers.allow(route_target("down"))
    assert scraped_states((await render()).decode()) == {"up": 0, "down": 2}


# --- Real processes ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_processes_see_one_opening_let_one_probe_through_and_see_one_closing(
    shared_redis_url: str, tmp_path: Path
) -> None:
    env = gateway_environment(
        REDIS_URL=shared_redis_url,
        BREAKER_FAILURES="5",
        BREAKER_COOLDOWN_SECONDS="0.5",
        SLACK_BOT_TOKEN="",
    )
    workers = [
        python_child("-m", "tests.usage.breaker_worker", str(tmp_path), "3", "20", env=env)
        for _ in range(2)
    ]

    def step(file: str, line: str) -> None:
        (tmp_path / file).touch()
        for worker in workers:
            assert worker.stdout is not None and worker.stderr is not None
            assert worker.stdout.readline().strip() == line, worker.stderr.read()

    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stderr is not None
            assert worker.stdout.readline().strip() == "ready", worker.stderr.read()
        step("report", "synced")  # 3 + 3 failures: the second sync opened it
        step("probe", "claimed")
        (tmp_path / "settle").touch()
        outputs = [worker.communicate(timeout=60) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sorted(told for result in results for told in result["told"]) == ["closed", "opened"]
    assert sum(result["allowed"] for result in results) == 1
    assert [result["state"] for result in results] == ["closed", "closed"]
