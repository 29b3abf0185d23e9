"""Rolling windows at their edges, and their memory, on both backends."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import pytest
from pytest_django import Settings

from gateway.core.store import sync_redis
from tests.usage.conftest import START, FrozenClock, reservation
from usage import limits
from usage.backends.base import Backend, layer_keys, reservation_keys
from usage.backends.memory import MemoryBackend
from usage.limits import Admission, AdmissionRequest
from usage.windows import DAY, BucketWindow, SlidingLog, WindowSpec

pytestmark = pytest.mark.django_db

_ids = itertools.count()


async def admit(device: str = "dev-1") -> Admission:
    return await limits.admit(
        AdmissionRequest(f"w-{next(_ids)}", device, "203.0.113.7", None, "free", 0)
    )


@pytest.mark.parametrize("into_bucket", [0.001, 360.0, 719.999])
async def test_a_daily_slot_frees_no_earlier_than_24_hours_and_at_most_one_bucket_later(
    backend: Backend,
    limits_config: Callable[..., None],
    frozen_clock: FrozenClock,
    into_bucket: float,
) -> None:
    limits_config(device=2)
    frozen_clock.set(START + into_bucket)
    start = frozen_clock.now()
    assert (await admit()).admitted and (await admit()).admitted
    refused = await admit()
    assert refused.refused_by == "device"
    frees_at = refused.layers["device"].reset_at
    assert start + 86400 <= frees_at <= start + 86400 + DAY.bucket_seconds
    assert refused.retry_after == math.ceil(frees_at - start)

    frozen_clock.set(start + 86400 - 0.001)
    assert (await admit()).refused_by == "device"
    frozen_clock.set(frees_at - 0.001)
    assert (await admit()).refused_by == "device"
    frozen_clock.set(frees_at)
    assert (await admit()).admitted
    assert (await admit()).admitted
    assert (await admit()).refused_by == "device"


async def test_a_daily_window_never_admits_more_than_its_limit_in_any_24_hours(
    backend: Backend, limits_config: Callable[..., None], frozen_clock: FrozenClock
) -> None:
    limit = 6
    limits_config(device=limit)
    rng = random.Random(3)
    admitted: list[float] = []
    refused: list[float] = []
    for _ in range(150):
        frozen_clock.advance(rng.expovariate(1 / 1700))  # ~3 days in all
        (admitted if (await admit()).admitted else refused).append(frozen_clock.now())
    assert len(admitted) >= 2 * limit and refused
    for at in admitted:
        assert sum(1 for t in admitted if at - 86400 < t <= at) <= limit
    # ...and it is not stricter than a day plus one bucket.
    for at in refused:
        assert sum(1 for t in admitted if at - 86400 - DAY.bucket_seconds < t <= at) >= limit


async def test_the_burst_slot_frees_exactly_sixty_seconds_after_its_request(
    backend: Backend, limits_config: Callable[..., None], frozen_clock: FrozenClock
) -> None:
    limits_config(burst=3)
    start = frozen_clock.now()
    for offset in (0, 10, 20):
        frozen_clock.set(start + offset)
        assert (await admit()).admitted
    frozen_clock.set(start + 30)
    refused = await admit()
    assert refused.refused_by == "burst"
    assert refused.layers["burst"].reset_at == start + 60
    assert refused.retry_after == 30
    frozen_clock.set(start + 59.999)
    assert (await admit()).refused_by == "burst"
    frozen_clock.set(start + 60)
    assert (await admit()).admitted
    assert (await admit()).refused_by == "burst"


async def test_there_is_no_double_burst_at_a_minute_boundary(
    backend: Backend, limits_config: Callable[..., None], frozen_clock: FrozenClock
) -> None:
    limits_config(burst=5)
    minute = math.ceil(frozen_clock.now() / 60) * 60
    frozen_clock.set(minute - 0.5)
    assert all([(await admit()).admitted for _ in range(5)])
    frozen_clock.set(minute + 0.5)
    assert (await admit()).refused_by == "burst"


def structure_sizes(backend: Backend, device: str = "dev-1") -> tuple[int, int, int]:
    """(buckets of the device's day window, entries of its burst log, open reservations)."""
    keys = layer_keys(device, "203.0.113.7", None)
    if backend.name == "redis":
        redis = sync_redis()
        day_fields = redis.hlen(keys["device"])
        open_reservations = len(redis.keys(reservation_keys("*")["open"]))
        return day_fields - 2, redis.zcard(keys["burst"]), open_reservations
    assert isinstance(backend, MemoryBackend)
    window = backend._windows[keys["device"]][1]
    opened = sum(len(day.open) for day in backend._days.values())
    return len(window.counts), len(backend._logs[keys["burst"]].times), opened


async def test_memory_per_key_stays_bounded_however_many_requests(
    backend: Backend, limits_config: Callable[..., None], frozen_clock: FrozenClock
) -> None:
    limits_config(device=10**6, ip=10**6, burst=7, global_=10**6)
    for _ in range(1000):  # one every 150 s: ~42 hours, 5 per day bucket
        admission = await admit()
        await limits.settle(reservation(admission), actual_micro_usd=1)
        frozen_clock.advance(150)
    buckets, burst_entries, open_reservations = structure_sizes(backend)
    assert buckets <= DAY.buckets
    assert burst_entries <= 7
    assert open_reservations == 0
    if backend.name == "redis":
        # The marker, 4 windows, the total and the device's budget of each of
        # the 3 budget days touched, and this process's heartbeat: nothing
        # grows with the number of requests.
        assert sync_redis().dbsize() == 1 + 4 + 2 * 3 + 1


async def test_the_in_process_store_forgets_idle_keys(
    settings: Settings, limits_config: Callable[..., None], frozen_clock: FrozenClock
) -> None:
    settings.GATEWAY_STORE = "memory"
    from usage.backends import get_backend

    backend = get_backend()
    assert isinstance(backend, MemoryBackend)
    for n in range(50):
        await admit(device=f"d{n}")
    frozen_clock.advance(86400 + 2 * DAY.bucket_seconds)
    await admit(device="fresh")
    fresh = layer_keys("fresh", "203.0.113.7", None)
    assert set(backend._windows) == {key for layer, key in fresh.items() if layer != "burst"}
    assert len(backend._logs) == 1


# --- The reference implementation, without a store -------------------------------


def test_a_bucket_window_counts_a_request_until_its_bucket_leaves() -> None:
    spec = WindowSpec(seconds=60, bucket_seconds=10)
    window = BucketWindow()
    window.add(spec.bucket_of(105.0))  # bucket 10: [100, 110)
    assert spec.buckets == 7
    assert window.prune(spec, spec.bucket_of(165.0)) == 1
    assert window.reset_at(spec, 1, 165.0) == 170.0  # 105 + 60 < 170 <= 105 + 60 + 10
    assert window.prune(spec, spec.bucket_of(170.0)) == 0


def test_a_bucket_window_reports_when_enough_requests_leave_for_one_more() -> None:
    spec = WindowSpec(seconds=60, bucket_seconds=10)
    window = BucketWindow()
    for at in (100.0, 100.0, 125.0, 131.0):
        window.add(spec.bucket_of(at))
    assert window.reset_at(spec, 1, 140.0) == 170.0
    assert window.reset_at(spec, 3, 140.0) == 190.0
    assert window.reset_at(spec, 9, 140.0) == 200.0


def test_a_sliding_log_frees_each_slot_exactly_its_window_later() -> None:
    log = SlidingLog()
    for at in (10.0, 20.0, 30.0):
        log.add(at)
    assert log.prune(60, 69.999) == 3
    assert log.reset_at(60, 1, 69.999) == 70.0
    assert log.reset_at(60, 2, 69.999) == 80.0
    assert log.prune(60, 70.0) == 2


def test_a_sliding_log_stays_sorted_when_the_clock_steps_back() -> None:
    log = SlidingLog()
    for at in (30.0, 10.0, 20.0):
        log.add(at)
    assert log.times == [10.0, 20.0, 30.0]
