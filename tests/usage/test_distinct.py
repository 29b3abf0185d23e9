"""``Backend.distinct_add``: the bounded sets of distinct values (suspicious devices)."""

from __future__ import annotations

import asyncio

import pytest

from usage.backends.base import Backend

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "{hz}:test:distinct"


async def test_each_new_member_is_counted_once(backend: Backend) -> None:
    assert await backend.distinct_add(KEY, "a", cap=5, now=1000.0, ttl_seconds=60) == 1
    assert await backend.distinct_add(KEY, "b", cap=5, now=1000.0, ttl_seconds=60) == 2
    assert await backend.distinct_add(KEY, "a", cap=5, now=1000.0, ttl_seconds=60) == 0


async def test_the_set_stops_one_past_its_cap_so_one_call_crosses_it(backend: Backend) -> None:
    sizes = await asyncio.gather(
        *(
            backend.distinct_add(KEY, f"10.0.0.{n}", cap=3, now=1000.0, ttl_seconds=60)
            for n in range(10)
        )
    )
    assert sorted(sizes) == [0] * 6 + [1, 2, 3, 4]
    assert await backend.distinct_add(KEY, "10.0.1.1", cap=3, now=1000.0, ttl_seconds=60) == 0


async def test_a_removed_member_counts_again(backend: Backend) -> None:
    for member in ("a", "b"):
        await backend.distinct_add(KEY, member, cap=1, now=1000.0, ttl_seconds=60)
    await backend.distinct_remove(KEY, "b")
    assert await backend.distinct_add(KEY, "c", cap=1, now=1000.0, ttl_seconds=60) == 2


async def test_separate_keys_are_separate_sets(backend: Backend) -> None:
    assert await backend.distinct_add(KEY, "a", cap=5, now=1000.0, ttl_seconds=60) == 1
    assert await backend.distinct_add(KEY + ":2", "a", cap=5, now=1000.0, ttl_seconds=60) == 1
