"""The circuit-breaker contract of the store, run against both backends."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from gateway.core.store import sync_redis
from usage.backends.base import Backend, BreakerCounts, BreakerRules, BreakerView

pytestmark = pytest.mark.django_db(transaction=True)

RULES = BreakerRules(failures=5, window_seconds=30, cooldown_seconds=30, probe_seconds=120)
T0 = 1_800_000_000.0
ROUTE = "route:llama3-8b-instruct"
KEY = "key:openai:k1a2b3"


def failures(target: str, count: int) -> BreakerCounts:
    return BreakerCounts(target, failures=count)


async def open_breaker(backend: Backend, target: str = ROUTE, now: float = T0) -> None:
    synced = await backend.breaker_sync([failures(target, RULES.failures)], RULES, now)
    assert synced.opened == (target,)


async def test_failures_below_the_limit_keep_it_closed_and_the_one_that_reaches_it_opens_it(
    backend: Backend,
) -> None:
    first = await backend.breaker_sync([failures(ROUTE, 4)], RULES, T0)
    assert first.opened == () and first.views == {}
    second = await backend.breaker_sync([failures(ROUTE, 1), failures(KEY, 1)], RULES, T0 + 1)
    assert second.opened == (ROUTE,)
    assert second.views == {ROUTE: BreakerView(open_until=T0 + 1 + 30)}
    # Everyone else learns it from the views, never as a transition.
    third = await backend.breaker_sync([failures(ROUTE, 3)], RULES, T0 + 2)
    assert third.opened == () and set(third.views) == {ROUTE}


@pytest.mark.parametrize(("later", "is_opened"), [(30, True), (32, False)])
async def test_failures_count_for_the_window_and_then_no_longer(
    backend: Backend, later: float, is_opened: bool
) -> None:
    await backend.breaker_sync([failures(ROUTE, 4)], RULES, T0)
    # One-second buckets: a failure counts for the window and at most a second more.
    synced = await backend.breaker_sync([failures(ROUTE, 1)], RULES, T0 + later)
    assert synced.opened == ((ROUTE,) if is_opened else ())


async def test_breakers_are_separate_per_target(backend: Backend) -> None:
    await open_breaker(backend, KEY)
    synced = await backend.breaker_sync([failures(ROUTE, 4)], RULES, T0)
    assert set(synced.views) == {KEY}


async def test_concurrent_reports_that_reach_the_limit_together_open_it_for_one_caller(
    backend: Backend,
) -> None:
    results = await asyncio.gather(
        *(backend.breaker_sync([failures(ROUTE, 2)], RULES, T0) for _ in range(6))
    )
    assert sum(len(result.opened) for result in results) == 1


async def test_an_open_breaker_counts_no_failures_and_is_not_opened_again(
    backend: Backend,
) -> None:
    await open_breaker(backend)
    again = await backend.breaker_sync([failures(ROUTE, 50)], RULES, T0 + 10)
    assert again.opened == ()
    assert again.views[ROUTE].open_until == T0 + 30


async def test_no_probe_is_claimed_during_the_cool_down(backend: Backend) -> None:
    await open_breaker(backend)
    claim = await backend.breaker_claim_probe(ROUTE, RULES, T0 + 29.9)
    assert not claim.is_won
    assert claim.view == BreakerView(open_until=T0 + 30)
    assert claim.view.state(T0 + 29.9) == "open"


async def test_a_closed_breaker_has_no_probe_to_claim(backend: Backend) -> None:
    claim = await backend.breaker_claim_probe(ROUTE, RULES, T0)
    assert not claim.is_won and claim.view is None


async def test_after_the_cool_down_exactly_one_of_many_concurrent_claimers_gets_the_probe(
    backend: Backend,
) -> None:
    await open_breaker(backend)
    claims = await asyncio.gather(
        *(backend.breaker_claim_probe(ROUTE, RULES, T0 + 31) for _ in range(10))
    )
    winners = [claim for claim in claims if claim.is_won]
    assert len(winners) == 1
    assert all(claim.view == BreakerView(T0 + 30, T0 + 31 + 120) for claim in claims)
    assert winners[0].view is not None and winners[0].view.state(T0 + 31) == "half_open"
    synced = await backend.breaker_sync([], RULES, T0 + 32)
    assert synced.views[ROUTE].state(T0 + 32) == "half_open"


async def test_a_lost_probe_lets_another_caller_probe_once_its_claim_expires(
    backend: Backend,
) -> None:
    await open_breaker(backend)
    assert (await backend.breaker_claim_probe(ROUTE, RULES, T0 + 31)).is_won
    assert not (await backend.breaker_claim_probe(ROUTE, RULES, T0 + 150)).is_won
    assert (await backend.breaker_claim_probe(ROUTE, RULES, T0 + 151)).is_won


async def test_a_probe_given_back_unused_may_be_claimed_again_at_once(backend: Backend) -> None:
    await open_breaker(backend)
    claim = await backend.breaker_claim_probe(ROUTE, RULES, T0 + 31)
    assert claim.view is not None
    view = await backend.breaker_release_probe(ROUTE, claim.view.probe_until)
    assert view == BreakerView(open_until=T0 + 30)
    assert (await backend.breaker_claim_probe(ROUTE, RULES, T0 + 32)).is_won


async def test_giving_back_a_lapsed_probe_leaves_the_next_claim_alone(backend: Backend) -> None:
    await open_breaker(backend)
    lapsed = await backend.breaker_claim_probe(ROUTE, RULES, T0 + 31)
    current = await backend.breaker_claim_probe(ROUTE, RULES, T0 + 151)
    assert lapsed.view is not None and current.view is not None
    view = await backend.breaker_release_probe(ROUTE, lapsed.view.probe_until)
    assert view == current.view
    assert not (await backend.breaker_claim_probe(ROUTE, RULES, T0 + 152)).is_won
    assert await backend.breaker_release_probe("route:closed", T0) is None


async def test_the_probes_success_closes_it_and_only_one_caller_is_told(backend: Backend) -> None:
    await open_breaker(backend)
    await backend.breaker_claim_probe(ROUTE, RULES, T0 + 31)
    results = await asyncio.gather(
        *(backend.breaker_probe_result(ROUTE, True, RULES, T0 + 32) for _ in range(5))
    )
    assert [result.is_closed_by_this for result in results].count(True) == 1
    assert all(result.view is None for result in results)
    assert (await backend.breaker_sync([], RULES, T0 + 33)).views == {}
    # Closed with an empty window: failures start counting from zero.
    assert (await backend.breaker_sync([failures(ROUTE, 4)], RULES, T0 + 33)).opened == ()


async def test_the_probes_failure_reopens_it_for_another_cool_down_without_a_transition(
    backend: Backend,
) -> None:
    await open_breaker(backend)
    await backend.breaker_claim_probe(ROUTE, RULES, T0 + 31)
    result = await backend.breaker_probe_result(ROUTE, False, RULES, T0 + 35)
    assert not result.is_closed_by_this
    assert result.view == BreakerView(open_until=T0 + 65)
    synced = await backend.breaker_sync([failures(ROUTE, 5)], RULES, T0 + 36)
    assert synced.opened == () and synced.views == {ROUTE: BreakerView(T0 + 65)}
    assert not (await backend.breaker_claim_probe(ROUTE, RULES, T0 + 64)).is_won
    assert (await backend.breaker_claim_probe(ROUTE, RULES, T0 + 65)).is_won


async def test_a_probe_result_for_a_closed_breaker_changes_nothing(backend: Backend) -> None:
    result = await backend.breaker_probe_result(ROUTE, False, RULES, T0)
    assert not result.is_closed_by_this and result.view is None
    assert (await backend.breaker_sync([], RULES, T0)).views == {}


async def test_figures_give_state_failures_and_attempts_of_the_last_minutes(
    backend: Backend,
) -> None:
    start = T0 - T0 % 60  # a whole minute
    old = BreakerCounts(ROUTE, failures=0, attempts={"ok": 100})
    await backend.breaker_sync([old], RULES, start - 15 * 60)  # 16 minutes ago: not shown
    counts = [
        BreakerCounts(ROUTE, failures=3, attempts={"ok": 7, "failure": 2, "timeout": 1}),
        BreakerCounts("route:other", failures=0, attempts={"rejected": 2}),
    ]
    await backend.breaker_sync(counts, RULES, start - 14 * 60)
    await backend.breaker_sync([BreakerCounts(ROUTE, attempts={"ok": 1})], RULES, start)
    await backend.breaker_sync([failures(KEY, RULES.failures)], RULES, start)
    figures = await sync_to_async(backend.breaker_figures_sync)(
        [ROUTE, "route:idle", KEY], RULES, start + 1, 15
    )
    by_target = {figure.target: figure for figure in figures}
    assert set(by_target) == {ROUTE, "route:other", "route:idle", KEY}
    route = by_target[ROUTE]
    assert route.view is None
    assert route.failures_in_window == 0  # reported 14 minutes ago: out of the window
    assert route.attempts == {"ok": 8, "failure": 2, "timeout": 1}
    assert by_target["route:other"].attempts == {"rejected": 2}
    assert by_target["route:idle"].attempts == {} and by_target["route:idle"].view is None
    assert by_target[KEY].view == BreakerView(open_until=start + 30)

    await backend.breaker_sync([failures(ROUTE, 2)], RULES, start + 2)
    figures = await sync_to_async(backend.breaker_figures_sync)([ROUTE], RULES, start + 3, 15)
    assert {figure.target: figure for figure in figures}[ROUTE].failures_in_window == 2


async def test_a_target_counted_more_than_an_hour_ago_is_no_longer_listed(
    backend: Backend,
) -> None:
    await backend.breaker_sync([BreakerCounts(ROUTE, attempts={"ok": 1})], RULES, T0)
    listed = await sync_to_async(backend.breaker_figures_sync)([], RULES, T0 + 3599, 15)
    assert [figure.target for figure in listed] == [ROUTE]
    await backend.breaker_sync([BreakerCounts("route:b", attempts={"ok": 1})], RULES, T0 + 3601)
    listed = await sync_to_async(backend.breaker_figures_sync)([], RULES, T0 + 3601, 15)
    assert [figure.target for figure in listed] == ["route:b"]


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_every_breaker_key_in_redis_has_a_ttl(backend: Backend) -> None:
    await backend.breaker_sync(
        [BreakerCounts(ROUTE, failures=2, attempts={"ok": 1, "failure": 2})], RULES, T0
    )
    await sync_to_async(backend.breaker_figures_sync)([ROUTE], RULES, T0 + 1, 15)
    await open_breaker(backend, KEY, T0 + 1)
    await backend.breaker_claim_probe(KEY, RULES, T0 + 31)
    await backend.breaker_probe_result(KEY, False, RULES, T0 + 32)
    redis = sync_redis()
    names = [name.decode() for name in redis.scan_iter(match="{hz}:brk:*", count=1000)]
    assert {name.split(":")[2] for name in names} == {"open", "counted", "s", "f", "n"}
    assert [name for name in names if redis.pttl(name) <= 0] == []
