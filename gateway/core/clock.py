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

_offset = 0.0
_file: Path | None = None
_file_stamp: tuple[int, int] | None = None


def configure(path: str | os.PathLike[str] | None) -> None:
    """Follow the offset kept in ``path`` (tests only); ``None`` stops following."""
    global _file, _file_stamp
    _file = Path(path) if path else None
    _file_stamp = None


def _follow_file() -> None:
    global _offset, _file_stamp
    assert _file is not None
    try:
        stat = _file.stat()
    except FileNotFoundError:
        _offset = 0.0
        return
    # Every write replaces the file, so its inode changes even when two writes
    # fall inside one tick of the file system's mtime resolution.
    stamp = (stat.st_ino, stat.st_mtime_ns)
    if stamp != _file_stamp:
        text = _file.read_text().strip()
        _offset = float(text) if text else 0.0
        _file_stamp = stamp


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
    global _offset, _file_stamp
    _offset = float(seconds)
    if _file is not None:
        # Write then rename, so a reader never sees a half-written number.
        temporary = _file.with_suffix(".tmp")
        temporary.write_text(repr(_offset))
        os.replace(temporary, _file)
        _file_stamp = None


def advance(seconds: float) -> None:
    set_offset(offset() + seconds)
