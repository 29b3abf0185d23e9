"""When and from where each device was last seen, without a write per request.

Authentication records the latest (time, IP) per device in this process
(any request whose token names a device that is not revoked, so operators
also see when pending and suspended devices last called);
housekeeping writes them in batches every ``FLUSH_SECONDS`` and once more at
shutdown. So ``last_seen_at`` / ``last_ip`` lag by at most ``FLUSH_SECONDS``
(plus one flush's duration) while a process runs, and a process that dies
without a graceful shutdown loses at most that window. Memory is bounded by
the number of distinct devices seen between two flushes.
"""

from __future__ import annotations

from datetime import datetime

from gateway.core import clock

FLUSH_SECONDS = 30

_seen: dict[str, tuple[datetime, str]] = {}


def record(device_id: str, ip: str) -> None:
    _seen[device_id] = (clock.utcnow(), ip)


def take() -> dict[str, tuple[datetime, str]]:
    """Everything recorded since the last take (the caller writes it or gives it back)."""
    global _seen
    taken, _seen = _seen, {}
    return taken


def give_back(seen: dict[str, tuple[datetime, str]]) -> None:
    """Return an unwritten batch; newer sightings recorded meanwhile win."""
    for device_id, sighting in seen.items():
        current = _seen.get(device_id)
        if current is None or current[0] < sighting[0]:
            _seen[device_id] = sighting
