"""The admission contract, run against both backends (in-process and Redis)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from pytest_django import Settings

from tests.usage.conftest import FrozenClock, reservation
from usage import limits, liveness
from usage.backends.base import Backend, Expectation, Pause
from usage.days import next_day_start
from usage.limits import Admission, AdmissionRequest
from usage.types import Tier

pytestmark = pytest.mark.django_db

_ids = itertools.count()
USD = 1_000_000


def request(
    *,
    device: str = "dev-1",
    ip: str = "203.0.113.7",
    user: str | None = None,
    tier: Tier = "free",
    reserve: int = 0,
    request_id: str | None = None,
    expect: Expectation | None = None,
) -> AdmissionRequest:
    return AdmissionRequest(
        request_id=request_id or f"req-{next(_ids)}",
        device_id=device,
        ip=ip,
        user_id=user,
        tier=tier,
        reserve_micro_usd=reserve,
        expect=expect,
    )


async def pause(**kwargs: Any) -> Pause:
    """The operator's pause, called from sync code as billing's command will."""
    return await sync_to_async(limits.service_pause)(**kwargs)


async def resume() -> None:
    await sync_to_async(limits.service_resume)()


async def admit_all(requests: Iterable[AdmissionRequest]) -> list[Admission]:
    return await asyncio.gather(*(limits.admit(r) for r in requests))


async def remaining(
    device: str = "dev-1", ip: str = "203.0.113.7", user: str | None = None
) -> dict[str, int]:
    layers = await limits.layer_state(device_id=device, ip=ip, user_id=user, tier="free")
    return {name: layer.remaining for name, layer in layers.items()}


@pytest.fixture
def budget(settings: Settings) -> Callable[..., None]:
    def configure(total: str, device_cap: str = "0") -> None:
        settings.DAILY_BUDGET_USD = Decimal(total)
        settings.DEVICE_DAILY_BUDGET_USD = {"free": Decimal(device_cap), "paid": Decimal("0")}

    configure("50")
    return configure


# --- Request limits ----------------------------------------------------------


async def test_a_hundred_simultaneous_admissions_with_a_device_limit_of_twenty_admit_twenty(
    backend: Backend, limits_config: Callable[..., None]
) -> None:
    limits_config(device=20, burst=1000)
    results = await admit_all(request() for _ in range(100))
    assert sum(a.admitted for a in results) == 20
    assert {a.refused_by for a in results if not a.admitted} == {"device"}
    assert (await remaining())["device"] == 0


async def test_ip_refusals_leave_each_devices_count_and_device_refusals_leave_the_ip(
    backend: Backend, limits_config: Callable[..., None]
) -> None:
    limits_config(device=3, ip=7)
    devices = [f"dev-{n}" for n in range(5)]
    results = await admit_all(request(device=d) for d in devices for _ in range(4))
    admitted = {d: 0 for d in devices}
    for a in results:
        if a.admitted:
            admitted[reservation(a).device_id] += 1
    assert sum(admitted.values()) == 7
    assert {a.refused_by for a in results if not a.admitted} <= {"device", "ip"}
    for device in devices:
        # A device's window holds exactly its admitted requests: the IP
        # layer's refusals took nothing from it.
        assert (await remaining(device=device))["device"] == 3 - admitted[device]

    limits_config(device=2, ip=100)
    other_ip = "198.51.100.1"
    results = await admit_all(request(device="dev-9", ip=other_ip) for _ in range(6))
    assert sum(a.admitted for a in results) == 2
    assert (await remaining(device="dev-9", ip=other_ip))["ip"] == 98


async def test_the_user_layer_counts_every_device_of_one_owner_and_only_owned_devices(
    backend: Backend, limits_config: Callable[..., None]
) -> None:
    limits_config(user=3)
    results = [await limits.admit(request(device=f"d{n}", user="alice")) for n in range(4)]
    assert [a.admitted for a in results] == [True, True, True, False]
    assert results[-1].refused_by == "user"
    unowned = await limits.admit(request(device="d9"))
    assert unowned.admitted
    assert "user" not in unowned.layers
    assert results[0].layers["user"].remaining == 2


async def test_checks_run_in_the_order_of_the_spec(
    backend: Backend,
    limits_config: Callable[..., None],
    budget: Callable[..., None],
    settings: Settings,
) -> None:
    # Every check would refuse; opening them one by one reveals their order.
    await limits.admit(request(user="alice"))  # in flight, never settled
    closed = {"device": 1, "ip": 1, "user": 1, "burst": 1, "global_": 1}
    limits_config(**closed)
    settings.MAX_CONCURRENT_REQUESTS = {"free": 1, "paid": 1}
    budget("1", device_cap="0.10")
    await pause(reason="maintenance")

    async def refused_by() -> str | None:
        return (await limits.admit(request(user="alice", reserve=2 * USD))).refused_by

    seen = [await refused_by()]
    await resume()
    for name in list(closed):
        seen.append(await refused_by())
        closed[name] = 10
        limits_config(**closed)
    seen.append(await refused_by())
    settings.MAX_CONCURRENT_REQUESTS = {"free": 2, "paid": 2}
    seen.append(await refused_by())
    budget("1", device_cap="0")
    seen.append(await refused_by())
    assert seen == [
        "paused",
        "device",
        "ip",
        "user",
        "burst",
        "global",
        "concurrency",
        "device_budget",
        "budget",
    ]


@pytest.mark.parametrize(
    "refusing",
    ["device", "ip", "user", "burst", "global", "concurrency", "device_budget", "budget"],
)
async def test_a_request_refused_by_any_layer_consumes_nothing_from_any_of_them(
    backend: Backend,
    limits_config: Callable[..., None],
    budget: Callable[..., None],
    refusing: str,
    settings: Settings,
) -> None:
    # The first request fits everything; the second is refused by `refusing` only.
    limits_config(
        device=1 if refusing == "device" else 10,
        ip=1 if refusing == "ip" else 10,
        user=1 if refusing == "user" else 10,
        burst=1 if refusing == "burst" else 10,
        global_=1 if refusing == "global" else 10,
    )
    if refusing == "concurrency":
        settings.MAX_CONCURRENT_REQUESTS = {"free": 1, "paid": 1}
    budget("1" if refusing == "budget" else "50", "1" if refusing == "device_budget" else "0")
    reserve = USD * 6 // 10  # two of them fit neither $1 cap
    first = await limits.admit(request(user="alice", reserve=reserve))
    assert first.admitted
    before = (await remaining(user="alice"), await limits.budget_state())
    second = await limits.admit(request(user="alice", reserve=reserve))
    assert second.refused_by == refusing
    assert not second.auto_paused
    assert (await remaining(user="alice"), await limits.budget_state()) == before


async def test_an_admission_reports_each_layer_after_this_request(
    backend: Backend, limits_config: Callable[..., None]
) -> None:
    limits_config(device=5, ip=8, burst=4, global_=9)
    await limits.admit(request())
    admission = await limits.admit(request())
    layers = admission.layers
    assert {name: (layer.limit, layer.remaining) for name, layer in layers.items()} == {
        "device": (5, 3),
        "ip": (8, 6),
        "burst": (4, 2),
        "global": (9, 7),
    }
    assert layers["device"].window == "24 hours"
    assert layers["burst"].window == "1 minute"


async def test_reading_the_layers_admits_nothing(
    backend: Backend, limits_config: Callable[..., None]
) -> None:
    limits_config(device=5)
    await limits.admit(request())
    for _ in range(3):
        assert (await remaining())["device"] == 4


async def test_a_request_id_cannot_hold_two_reservations(backend: Backend) -> None:
    await limits.admit(request(request_id="same"))
    with pytest.raises(ValueError):
        await limits.admit(request(request_id="same"))


async def test_an_unknown_tier_is_a_programming_error(backend: Backend) -> None:
    with pytest.raises(ValueError):
        await limits.admit(request(tier="gold"))  # type: ignore[arg-type]  # the point


# --- Budget --------------------------------------------------------------------


async def test_twenty_reservations_of_30_cents_against_a_dollar_admit_three_and_never_overspend(
    backend: Backend, budget: Callable[..., None]
) -> None:
    budget("1.00")
    results = await admit_all(request(device=f"d{n}", reserve=300_000) for n in range(20))
    admitted = [a for a in results if a.admitted]
    assert len(admitted) == 3
    assert {a.refused_by for a in results if not a.admitted} == {"budget"}
    # Refused only because of reservations in flight: no pause, retry soon.
    assert not any(a.auto_paused for a in results)
    assert all(a.retry_after == limits.IN_FLIGHT_RETRY_SECONDS for a in results if not a.admitted)
    state = await limits.budget_state()
    assert (state.spent_micro_usd, state.reserved_micro_usd, state.pause) == (0, 900_000, None)

    await asyncio.gather(
        *(limits.settle(reservation(a), actual_micro_usd=100_000) for a in admitted)
    )
    results = await admit_all(request(device=f"e{n}", reserve=300_000) for n in range(20))
    second = [a for a in results if a.admitted]
    assert len(second) == 2  # $0.70 left
    await asyncio.gather(*(limits.settle(reservation(a), actual_micro_usd=300_000) for a in second))
    state = await limits.budget_state()
    assert state.spent_micro_usd == 900_000
    assert state.reserved_micro_usd == 0
    assert state.pause is None


async def test_a_devices_daily_dollar_cap_holds_under_concurrency(
    backend: Backend, budget: Callable[..., None]
) -> None:
    budget("50", device_cap="0.50")
    results = await admit_all(request(reserve=200_000) for _ in range(10))
    admitted = [a for a in results if a.admitted]
    assert len(admitted) == 2
    refused = [a for a in results if not a.admitted]
    assert {a.refused_by for a in refused} == {"device_budget"}
    assert {a.retry_after for a in refused} == {limits.IN_FLIGHT_RETRY_SECONDS}
    assert (await limits.admit(request(device="other", reserve=200_000))).admitted

    await asyncio.gather(
        *(limits.settle(reservation(a), actual_micro_usd=100_000) for a in admitted)
    )
    results = await admit_all(request(reserve=200_000) for _ in range(10))
    assert sum(a.admitted for a in results) == 1  # $0.30 of the cap left


async def test_a_device_that_spent_its_cap_is_told_to_come_back_the_next_budget_day(
    backend: Backend, budget: Callable[..., None], frozen_clock: FrozenClock
) -> None:
    budget("50", device_cap="0.50")
    first = await limits.admit(request(reserve=400_000))
    await limits.settle(reservation(first), actual_micro_usd=400_000)
    refused = await limits.admit(request(reserve=200_000))
    assert refused.refused_by == "device_budget"
    assert refused.retry_after == next_day_start(frozen_clock.now()) - frozen_clock.now()
    assert not refused.auto_paused


async def test_a_request_that_cannot_fit_even_alone_is_refused_and_pauses_nothing(
    backend: Backend, budget: Callable[..., None], frozen_clock: FrozenClock
) -> None:
    budget("1.00")
    first = await limits.admit(request(reserve=600_000))
    await limits.settle(reservation(first), actual_micro_usd=600_000)
    exact = await limits.admit(request(reserve=400_000))  # spent + worst == budget: fits
    assert exact.admitted
    await limits.settle(reservation(exact), actual_micro_usd=0)

    refused = await limits.admit(request(reserve=500_000))
    tomorrow = next_day_start(frozen_clock.now())
    assert (refused.refused_by, refused.auto_paused) == ("budget", False)
    assert refused.retry_after == tomorrow - frozen_clock.now()
    # One large request never stops everyone else.
    assert (await limits.admit(request(device="someone-else", reserve=1))).admitted
    assert (await limits.budget_state()).pause is None


async def test_settled_spend_that_leaves_less_than_the_floor_pauses_until_the_next_day(
    backend: Backend, budget: Callable[..., None], frozen_clock: FrozenClock, settings: Settings
) -> None:
    budget("1.00")
    settings.BUDGET_PAUSE_REMAINING_USD = Decimal("0.10")
    first = await limits.admit(request(reserve=950_000))
    settled = await limits.settle(reservation(first), actual_micro_usd=900_000)
    assert settled.is_first and not settled.auto_paused  # $0.10 left: not less than the floor
    second = await limits.admit(request(reserve=50_000))
    settled = await limits.settle(reservation(second), actual_micro_usd=1)
    assert settled.is_first and settled.auto_paused
    tomorrow = next_day_start(frozen_clock.now())
    paused = await limits.admit(request(device="someone-else", reserve=1))
    assert (paused.refused_by, paused.retry_after) == ("paused", tomorrow - frozen_clock.now())
    state = await limits.budget_state()
    assert state.pause is not None
    assert state.pause.is_automatic and state.pause.until == tomorrow

    frozen_clock.set(tomorrow - 1)
    assert (await limits.admit(request(reserve=1))).refused_by == "paused"
    frozen_clock.set(tomorrow)
    assert (await limits.admit(request(reserve=500_000))).admitted
    assert (await limits.budget_state()).pause is None


async def test_the_pause_floor_is_one_percent_of_the_budget_by_default(
    backend: Backend, budget: Callable[..., None]
) -> None:
    budget("1.00")
    first = await limits.admit(request(reserve=USD))
    assert not (await limits.settle(reservation(first), actual_micro_usd=990_000)).auto_paused
    second = await limits.admit(request(reserve=10_000))
    assert (await limits.settle(reservation(second), actual_micro_usd=1)).auto_paused


async def test_a_late_settlement_of_yesterday_pauses_nothing_today(
    backend: Backend, budget: Callable[..., None], frozen_clock: FrozenClock
) -> None:
    budget("1.00")
    admission = await limits.admit(request(reserve=USD))
    frozen_clock.set(next_day_start(frozen_clock.now()) + 5)
    assert not (await limits.settle(reservation(admission), actual_micro_usd=USD)).auto_paused
    assert (await limits.admit(request(reserve=1))).admitted


async def test_an_automatic_pause_ends_with_resume_service(
    backend: Backend, budget: Callable[..., None]
) -> None:
    budget("1.00")
    first = await limits.admit(request(reserve=USD))
    assert (await limits.settle(reservation(first), actual_micro_usd=USD)).auto_paused
    assert (await limits.admit(request(reserve=1))).refused_by == "paused"
    await resume()
    assert (await limits.admit(request(reserve=0))).admitted


async def test_an_operator_pause_refuses_everyone_until_resumed(
    backend: Backend, frozen_clock: FrozenClock
) -> None:
    operator_pause = await pause(reason="provider incident")
    refused = await limits.admit(request())
    assert refused.refused_by == "paused"
    assert refused.retry_after == next_day_start(frozen_clock.now()) - frozen_clock.now()
    state = await sync_to_async(limits.budget_state_sync)()
    assert state.pause == operator_pause
    assert (state.pause.reason, state.pause.is_automatic, state.pause.until) == (
        "provider incident",
        False,
        None,
    )
    frozen_clock.advance(3 * 86400)  # an operator pause does not end by itself
    assert (await limits.admit(request())).refused_by == "paused"
    await resume()
    assert (await limits.admit(request())).admitted
    assert (await sync_to_async(limits.budget_state_sync)()).pause is None


async def test_an_operator_pause_with_an_end_answers_retry_after_until_then(
    backend: Backend, frozen_clock: FrozenClock
) -> None:
    await pause(reason="deploy", until=frozen_clock.now() + 600)
    assert (await limits.admit(request())).retry_after == 600
    frozen_clock.advance(600)
    assert (await limits.admit(request())).admitted


# --- Settle --------------------------------------------------------------------


async def test_settling_twice_or_concurrently_counts_the_cost_once(backend: Backend) -> None:
    admission = await limits.admit(request(reserve=500_000))
    results = await asyncio.gather(
        *(limits.settle(reservation(admission), actual_micro_usd=123_456) for _ in range(10))
    )
    assert sorted(bool(result) for result in results) == [False] * 9 + [True]
    assert not await limits.settle(reservation(admission), actual_micro_usd=123_456)
    state = await limits.budget_state()
    assert (state.spent_micro_usd, state.reserved_micro_usd) == (123_456, 0)


async def test_settling_at_zero_releases_the_reservation(
    backend: Backend, budget: Callable[..., None]
) -> None:
    budget("1.00")
    admission = await limits.admit(request(reserve=USD))
    assert not (await limits.admit(request(reserve=1))).admitted
    assert await limits.settle(reservation(admission), actual_micro_usd=0)
    assert (await limits.admit(request(reserve=USD))).admitted


async def test_a_cost_settled_after_midnight_belongs_to_the_day_of_admission(
    backend: Backend, frozen_clock: FrozenClock
) -> None:
    midnight = next_day_start(frozen_clock.now())
    frozen_clock.set(midnight - 5)
    admission = await limits.admit(request(reserve=100_000))
    admitted_day = (await limits.budget_state()).day
    frozen_clock.set(midnight + 5)
    assert await limits.settle(reservation(admission), actual_micro_usd=70_000)
    yesterday = await limits.budget_state(admitted_day)
    today = await limits.budget_state()
    assert (yesterday.spent_micro_usd, yesterday.reserved_micro_usd) == (70_000, 0)
    assert today.day != admitted_day
    assert (today.spent_micro_usd, today.reserved_micro_usd) == (0, 0)


def as_process(monkeypatch: pytest.MonkeyPatch, process_id: str) -> None:
    """Admissions from now on come from the process ``process_id``."""
    monkeypatch.setattr(liveness, "process_id", lambda: process_id)


# Liveness is real time (a process does not die of a moved gateway clock): short here.
LIVENESS = 0.3


async def outlive(frozen_clock: FrozenClock, seconds: float = LIVENESS) -> None:
    """Let ``seconds`` pass, in real time and on the gateway clock."""
    await asyncio.sleep(seconds)
    frozen_clock.advance(seconds)


async def test_a_reservation_of_a_dead_process_counts_as_spent_at_its_worst_case(
    backend: Backend,
    budget: Callable[..., None],
    frozen_clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
) -> None:
    settings.RESERVATION_LIVENESS_SECONDS = LIVENESS
    budget("1.00")
    as_process(monkeypatch, "crashed")
    crashed = await limits.admit(request(reserve=600_000))  # its process dies: never settled
    as_process(monkeypatch, "alive")
    assert not (await limits.admit(request(reserve=600_000))).admitted
    state = await limits.budget_state()
    assert (state.spent_micro_usd, state.reserved_micro_usd) == (0, 600_000)
    await outlive(frozen_clock)
    # Silent for the liveness period: dead. Its worst case is spent, not released.
    state = await limits.budget_state()
    assert (state.spent_micro_usd, state.reserved_micro_usd) == (600_000, 0)
    assert not (await limits.admit(request(reserve=600_000))).admitted
    assert (await limits.admit(request(reserve=400_000))).admitted
    # A holder that was only slow still settles: the real cost replaces the worst case, once.
    assert await limits.settle(reservation(crashed), actual_micro_usd=200_000)
    assert not await limits.settle(reservation(crashed), actual_micro_usd=200_000)
    state = await limits.budget_state()
    assert (state.spent_micro_usd, state.reserved_micro_usd) == (200_000, 400_000)


async def test_a_reservation_lives_as_long_as_its_process_beats(
    backend: Backend,
    budget: Callable[..., None],
    frozen_clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
) -> None:
    settings.RESERVATION_LIVENESS_SECONDS = LIVENESS
    budget("1.00")
    as_process(monkeypatch, "streaming")
    stream = await limits.admit(request(reserve=600_000))
    as_process(monkeypatch, "other")
    for _ in range(10):  # ten liveness periods: a stalled reader, an hour-long stream
        await backend.heartbeat("streaming", LIVENESS)
        await outlive(frozen_clock, LIVENESS / 2)
        await backend.heartbeat("streaming", LIVENESS)
        await outlive(frozen_clock, LIVENESS / 2)
        assert not (await limits.admit(request(reserve=600_000))).admitted
    # The gateway clock jumping a day ahead does not kill a beating process.
    frozen_clock.advance(86400 / 2)
    assert not (await limits.admit(request(reserve=600_000))).admitted
    state = await limits.budget_state()
    assert (state.spent_micro_usd, state.reserved_micro_usd) == (0, 600_000)
    assert await limits.settle(reservation(stream), actual_micro_usd=10)
    assert (await limits.admit(request(reserve=600_000))).admitted


async def test_a_device_holds_at_most_its_tiers_requests_in_flight(
    backend: Backend, settings: Settings
) -> None:
    settings.MAX_CONCURRENT_REQUESTS = {"free": 2, "paid": 10}
    results = await admit_all(request(reserve=1) for _ in range(5))
    admitted = [a for a in results if a.admitted]
    assert len(admitted) == 2
    refused = [a for a in results if not a.admitted]
    assert {(a.refused_by, a.retry_after) for a in refused} == {("concurrency", 1)}
    assert (await limits.admit(request(device="dev-2", reserve=1))).admitted
    assert (await limits.admit(request(tier="paid", device="dev-3"))).admitted

    await limits.settle(reservation(admitted[0]), actual_micro_usd=1)
    assert (await limits.admit(request(reserve=1))).admitted
    assert (await limits.admit(request(reserve=1))).refused_by == "concurrency"


async def test_the_requests_a_dead_process_had_in_flight_free_their_slots(
    backend: Backend, settings: Settings, frozen_clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.RESERVATION_LIVENESS_SECONDS = LIVENESS
    settings.MAX_CONCURRENT_REQUESTS = {"free": 2, "paid": 10}
    as_process(monkeypatch, "crashed")
    await admit_all(request(reserve=1) for _ in range(2))
    as_process(monkeypatch, "alive")
    assert (await limits.admit(request(reserve=1))).refused_by == "concurrency"
    await outlive(frozen_clock)
    assert (await limits.admit(request(reserve=1))).admitted
