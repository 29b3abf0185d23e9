"""Admission from a cached view (``Expectation``): nothing is taken unless the store agrees."""

from __future__ import annotations

import pytest

from gateway.core import store
from tests.usage.test_admission import request
from usage import limits
from usage.backends.base import LIVE_KEY, Backend, Expectation

pytestmark = pytest.mark.django_db(transaction=True)

VERSION_KEY = "{hz}:test:version"
ABSENT_KEY = "{hz}:test:absent"


async def _expectation(version: str) -> Expectation:
    generation = await store.async_redis().execute("GET", LIVE_KEY)
    return Expectation(((VERSION_KEY, version), (ABSENT_KEY, ""), (LIVE_KEY, generation.decode())))


async def _admitted_count(device: str) -> int:
    layers = await limits.layer_state(device_id=device, ip="203.0.113.7", user_id=None, tier="free")
    return layers["device"].limit - layers["device"].remaining


async def test_a_view_the_store_still_holds_is_admitted_in_one_step(backend: Backend) -> None:
    if backend.name != "redis":
        pytest.skip("only a shared store can confirm a cached view")
    await limits.layer_state(device_id="d", ip="203.0.113.7", user_id=None, tier="free")
    await store.async_redis().execute("SET", VERSION_KEY, "7")
    admission = await limits.admit(request(device="d", expect=await _expectation("7")))
    assert admission.admitted
    assert await _admitted_count("d") == 1


@pytest.mark.parametrize("change", ["version moved", "key appeared", "store lost its data"])
async def test_a_view_the_store_no_longer_holds_takes_nothing(
    backend: Backend, change: str
) -> None:
    if backend.name != "redis":
        pytest.skip("only a shared store can confirm a cached view")
    await limits.layer_state(device_id="d", ip="203.0.113.7", user_id=None, tier="free")
    await store.async_redis().execute("SET", VERSION_KEY, "7")
    expect = await _expectation("7")
    redis = store.async_redis()
    if change == "version moved":
        await redis.execute("INCR", VERSION_KEY)
    elif change == "key appeared":
        await redis.execute("SET", ABSENT_KEY, "1")
    else:
        await redis.execute("SET", LIVE_KEY, "another-generation")
    with pytest.raises(limits.StaleView):
        await limits.admit(request(device="d", expect=expect))
    assert await _admitted_count("d") == 0


async def test_the_in_process_store_never_admits_from_a_view(backend: Backend) -> None:
    if backend.name != "memory":
        pytest.skip("the in-process store has no cached view to confirm")
    with pytest.raises(limits.StaleView):
        await limits.admit(request(device="d", expect=Expectation(((LIVE_KEY, "x"),))))
    assert await _admitted_count("d") == 0
