from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn

import pytest

from devices import activity, housekeeping
from devices.auth import authenticate
from devices.models import Device
from gateway.core.errors import ServiceUnavailable
from tests.conftest import TestClock
from tests.devices.support import Registered, in_thread

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_store_clients"),
]


async def last_seen(device_id: str) -> tuple[datetime | None, str | None]:
    device = await in_thread(Device.objects.get)(pk=device_id)
    return device.last_seen_at, device.last_ip


async def test_authenticating_writes_nothing_until_the_flush(
    make_device: Callable[..., Registered], count_queries: list[str]
) -> None:
    registered = await in_thread(make_device)("approved")
    count_queries.clear()
    for _ in range(3):
        await authenticate(registered.pair(), ip="198.51.100.7")
    writes = [sql for sql in count_queries if sql.lstrip().upper().startswith("UPDATE")]
    assert writes == []
    assert await last_seen(registered.id) == (None, None)
    await housekeeping.flush_activity()
    seen_at, ip = await last_seen(registered.id)
    assert seen_at is not None and ip == "198.51.100.7"


async def test_the_latest_sighting_wins_and_refused_tokens_are_not_recorded(
    make_device: Callable[..., Registered],
) -> None:
    registered = await in_thread(make_device)("approved")
    revoked = await in_thread(make_device)("revoked")
    await authenticate(registered.bearer(), ip="198.51.100.1")
    await authenticate(registered.bearer(), ip="198.51.100.2")
    with pytest.raises(Exception):
        await authenticate(revoked.bearer(), ip="198.51.100.3")
    await housekeeping.flush_activity()
    assert (await last_seen(registered.id))[1] == "198.51.100.2"
    assert await last_seen(revoked.id) == (None, None)


async def test_a_failed_flush_keeps_the_sightings_for_the_next_one(
    make_device: Callable[..., Registered], monkeypatch: pytest.MonkeyPatch
) -> None:
    registered = await in_thread(make_device)("approved")
    await authenticate(registered.bearer(), ip="198.51.100.1")

    def unavailable(**kwargs: Any) -> NoReturn:
        raise ServiceUnavailable()

    monkeypatch.setattr(housekeeping, "device_record_activity", unavailable)
    with pytest.raises(ServiceUnavailable):
        await housekeeping.flush_activity()
    monkeypatch.undo()
    await housekeeping.flush_activity()
    assert (await last_seen(registered.id))[1] == "198.51.100.1"


async def test_stopping_housekeeping_flushes_what_it_holds(
    make_device: Callable[..., Registered],
) -> None:
    registered = await in_thread(make_device)("approved")
    await housekeeping.start()
    await authenticate(registered.bearer(), ip="198.51.100.1")
    await housekeeping.stop()
    assert (await last_seen(registered.id))[1] == "198.51.100.1"
    assert activity.take() == {}


async def test_housekeeping_records_ended_suspensions(
    make_device: Callable[..., Registered], clock: TestClock
) -> None:
    registered = await in_thread(make_device)("suspended")
    clock.advance(3 * 3600)
    await housekeeping.run_once()
    device = await in_thread(Device.objects.get)(pk=registered.id)
    assert device.status == "approved"
