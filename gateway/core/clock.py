"""The one wall clock every time-dependent decision reads.

Windows, budget days, suspensions and reservations all ask ``now()``. In
production it is ``time.time()``. Tests move it: in their own process with
``set_offset``/``advance``, and in gateway server processes they start
through a small file named by the ``GATEWAY_TEST_CLOCK_FILE`` setting, which
holds the offset in seconds and is re-read whenever it changes. Durations
(latency, timeouts) use ``time.monotonic`` and are never moved.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.files import WatchedFile

_offset = 0.0
_file: WatchedFile[float] | None = None


def configure(path: str | os.PathLike[str] | None) -> None:
    """Follow the offset kept in ``path`` (tests only); ``None`` stops following."""
    global _file
    _file = WatchedFile(Path(path), float, 0.0) if path else None


def _follow_file() -> None:
    global _offset
    assert _file is not None
    _offset = _file.value()


def now() -> float:
    """Seconds since the epoch, as the gateway sees them."""
    if _file is not None:
        _follow_file()
    return time.time() + _offset


def utcnow() -> datetime:
    return datetime.fromtimestamp(now(), tz=UTC)


def offset() -> float:
    if _file is not None:
        _follow_file()
    return _offset


def set_offset(seconds: float) -> None:
    """Move the clock to ``seconds`` away from real time (tests only)."""
    global _offset
    _offset = float(seconds)
    if _file is not None:
        # Write then rename, so a reader never sees a half-written number
        # (and the new inode tells every reader to read it again).
        temporary = _file.path.with_suffix(".tmp")
        temporary.write_text(repr(_offset))
        os.replace(temporary, _file.path)


def advance(seconds: float) -> None:
    set_offset(offset() + seconds)
