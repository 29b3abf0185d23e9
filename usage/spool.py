"""A local spool of usage records, replayed into the database idempotently.

Why: a usage record must never be lost, yet a slow or absent database must
not sit on the response's critical path. So ``usage.services`` appends each
record as one JSON line to a segment file under ``USAGE_SPOOL_DIR`` (one
``os.write`` on an ``O_APPEND`` descriptor, microseconds), and a background
flusher inserts the lines in batches (``usage.services``: one insert that
skips request ids already in the ledger), deleting a segment only after its
inserts committed. The flusher seals the segment being appended to at each cycle
(so it can replay and delete it) and opens its successor itself, in its
thread, so an append on the event loop is one ``os.write`` and never waits
for a file to be created and locked.

Segments and ownership:

* each process appends to its own segment (``usage-<pid>-<ns>-<n>.jsonl``),
  so writers in different processes never share a file;
* a process holds an exclusive ``flock`` on every segment it owns (created
  under a ``.tmp`` name, locked, then renamed, so no other process can see an
  unlocked new segment). ``flock`` belongs to the open file, so the kernel
  drops it when the process dies however it dies;
* hence a segment whose lock can be taken is an orphan (its writer is gone):
  any process may replay it. Two replaying at once insert the same rows
  twice, which ``ignore_conflicts`` makes harmless.

Durability: a killed process loses nothing (its lines are in the page
cache, then the file); against power loss, segments are fsynced whenever
their records cannot be inserted at once (database down) and at shutdown,
so at most one flush interval of records is exposed while the database is up.

Lines that are not valid records (a writer killed mid-line) or that the
database rejects for their content are moved to ``<segment>.rejected`` with
an error log, never silently dropped, and never block the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, connections

from gateway.core.files import FILE_MODE, open_private_append, private_directory
from gateway.core.loops import BackgroundTask

logger = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"
REJECTED_SUFFIX = ".rejected"
# Decoding and inserting a batch holds the interpreter the event loop needs;
# between batches the flusher waits on the database and lets it go, so
# smaller batches keep the requests' tail latency low (docs/benchmarks.md).
BATCH_SIZE = 100
FLUSH_INTERVAL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
ORPHAN_SCAN_SECONDS = 5.0

# Inserts a batch of decoded records; raises DatabaseError when it cannot.
Sink = Callable[[list[bytes]], None]


def spool_dir() -> Path:
    return Path(settings.USAGE_SPOOL_DIR)


@dataclass
class _Segment:
    path: Path
    fd: int
    directory: str  # USAGE_SPOOL_DIR when it was opened (compared as is, per append)
    lines: int = 0
    synced_lines: int = 0


class _ProcessSpool:
    """This process's segments: the one being appended to and the sealed ones."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()  # guards active/sealed and every append
        self.flush_lock = threading.Lock()  # one flush at a time
        self.active: _Segment | None = None
        self.sealed: list[_Segment] = []
        self.directory_dirty: Path | None = None
        self.counter = itertools.count()


_state = _ProcessSpool()


def _process_state() -> _ProcessSpool:
    global _state
    if _state.pid != os.getpid():
        # A forked child must not append to its parent's segment: start anew
        # (the inherited descriptors stay open; the parent still owns them).
        _state = _ProcessSpool()
    return _state


def _open_segment(state: _ProcessSpool, setting: str) -> _Segment:
    directory = private_directory(Path(setting))
    name = f"usage-{state.pid}-{time.time_ns()}-{next(state.counter)}"
    temporary = directory / f"{name}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
    fd = os.open(temporary, flags, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = directory / f"{name}{SEGMENT_SUFFIX}"
        os.rename(temporary, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    state.directory_dirty = directory
    return _Segment(path=path, fd=fd, directory=setting)


def append(line: bytes) -> None:
    """Append one record line (ending in a newline) to this process's segment."""
    state = _process_state()
    # The setting's string, not a Path: this runs once per request.
    directory = settings.USAGE_SPOOL_DIR
    with state.lock:
        segment = state.active
        if segment is None or segment.directory != directory:
            if segment is not None:
                state.sealed.append(segment)
            segment = state.active = _open_segment(state, directory)
        view = memoryview(line)
        try:
            while view:
                written = os.write(segment.fd, view)
                view = view[written:]
        except OSError:
            # A half-written line would swallow the next one: seal this
            # segment (the reader quarantines the fragment) and re-raise.
            state.sealed.append(segment)
            state.active = None
            raise
        segment.lines += 1


def sync() -> None:
    """fsync every segment of this process holding lines not yet on disk."""
    state = _process_state()
    with state.lock:
        segments = [*state.sealed, *([state.active] if state.active else [])]
        directory, state.directory_dirty = state.directory_dirty, None
    for segment in segments:
        if segment.lines > segment.synced_lines:
            lines = segment.lines
            os.fsync(segment.fd)
            segment.synced_lines = lines
    if directory is not None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _batches(path: Path, quarantine: list[bytes]) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    with path.open("rb") as stream:
        for line in stream:
            if not line.endswith(b"\n"):
                quarantine.append(line + b"\n")  # a writer died mid-line
                continue
            batch.append(line)
            if len(batch) >= BATCH_SIZE:
                yield batch
                batch = []
    if batch:
        yield batch


def _quarantine(path: Path, lines: list[bytes]) -> None:
    if not lines:
        return
    target = path.with_name(path.name + REJECTED_SUFFIX)
    with open(open_private_append(target), "ab") as stream:
        stream.writelines(lines)
        stream.flush()
        os.fsync(stream.fileno())
    logger.error("usage spool: %d unreadable record line(s) kept in %s", len(lines), target)


def _insert_lines(lines: list[bytes], sink: Sink, rejected: list[bytes]) -> None:
    try:
        sink(lines)
    except (DataError, IntegrityError, ValueError):
        # One bad record must not block its batch: retry one by one.
        # (OperationalError, a database outage, propagates: keep the file.)
        for line in lines:
            try:
                sink([line])
            except (DataError, IntegrityError, ValueError):
                rejected.append(line)


def _replay_file(path: Path, sink: Sink) -> int:
    """Insert every line of ``path``; raises DatabaseError if the database is down."""
    torn: list[bytes] = []
    rejected: list[bytes] = []
    count = 0
    for batch in _batches(path, torn):
        _insert_lines(batch, sink, rejected)
        count += len(batch)
    _quarantine(path, torn + rejected)
    return count - len(rejected)


def _flush_own(state: _ProcessSpool, sink: Sink, open_next: bool) -> int:
    with state.lock:
        active = state.active
        # While older segments still wait (database down), keep appending to
        # the active one instead of sealing a new segment every cycle. An
        # empty one is kept while the flusher runs (it opened it for the next
        # appends) and goes at the last flush.
        if not state.sealed and active is not None and (active.lines or not open_next):
            state.sealed.append(active)
            state.active = None
        pending = list(state.sealed)
    inserted = 0
    for segment in pending:
        inserted += _replay_file(segment.path, sink)
        # Committed: only now may the lines go. Unlink before unlocking, so
        # no replayer can open the file after we let go of it.
        segment.path.unlink(missing_ok=True)
        os.close(segment.fd)
        with state.lock:
            state.sealed.remove(segment)
    if open_next:
        _open_next(state)
    return inserted


def _open_next(state: _ProcessSpool) -> None:
    """Open the segment the next appends will use, here in the flusher's thread.

    Creating, locking and renaming a file are four system calls, and each
    lets another thread take the interpreter: on the event loop, right after
    a seal, that other thread is this busy flusher.
    """
    with state.lock:
        if state.active is None:
            # On failure the next append tries again, and falls back and logs.
            with contextlib.suppress(OSError):
                state.active = _open_segment(state, settings.USAGE_SPOOL_DIR)


def _own_paths(state: _ProcessSpool) -> set[Path]:
    with state.lock:
        return {segment.path for segment in state.sealed} | (
            {state.active.path} if state.active else set()
        )


def _remove_abandoned_temporaries(directory: Path) -> None:
    """A writer killed between creating and renaming its segment leaves an empty .tmp."""
    for path in directory.glob("*.tmp"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_size == 0:
                path.unlink(missing_ok=True)
        except BlockingIOError:
            pass  # being created right now
        finally:
            os.close(fd)


def _replay_orphans(state: _ProcessSpool, sink: Sink) -> int:
    directory = spool_dir()
    if not directory.is_dir():
        return 0
    own = _own_paths(state)
    _remove_abandoned_temporaries(directory)
    inserted = 0
    for path in sorted(directory.glob(f"*{SEGMENT_SUFFIX}")):
        if path in own:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # another process replayed it meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            if os.fstat(fd).st_nlink == 0:
                continue  # replayed and deleted while we waited for the lock
            count = _replay_file(path, sink)
            path.unlink(missing_ok=True)
            inserted += count
            if count:
                logger.info("usage spool: replayed %d record(s) from %s", count, path.name)
        finally:
            os.close(fd)
    return inserted


# Where flushed lines go: ``usage.services`` names its insert here when it is
# imported (the spool is the layer below it and never imports it).
_sink: Sink | None = None


def set_sink(sink: Sink) -> None:
    global _sink
    _sink = sink


def _default_sink() -> Sink:
    if _sink is None:
        raise RuntimeError("usage.services sets the spool's sink when it is imported")
    return _sink


def flush(
    *, include_orphans: bool = False, sink: Sink | None = None, open_next: bool = False
) -> int:
    """Insert this process's spooled records (and orphans'); returns rows handled.

    ``open_next`` (the running flusher) opens the segment for the next
    appends once the records are in. Raises DatabaseError when the database
    is unreachable: the records stay spooled (and are fsynced) for the next
    attempt.
    """
    state = _process_state()
    sink = sink or _default_sink()
    with state.flush_lock:
        try:
            inserted = _flush_own(state, sink, open_next)
            if include_orphans:
                inserted += _replay_orphans(state, sink)
        except DatabaseError:
            sync()
            raise
    return inserted


def spool_replay() -> int:
    """Replay everything this process can reach: its own and dead processes' segments.

    Synchronous, for start-up and commands; idempotent (by request id).
    """
    return flush(include_orphans=True)


def pending_segments() -> list[Path]:
    directory = spool_dir()
    return sorted(directory.glob(f"*{SEGMENT_SUFFIX}")) if directory.is_dir() else []


# --- The background flusher --------------------------------------------------


_flusher = BackgroundTask("usage-spool-flusher")
_wake: asyncio.Event | None = None  # set: flush now (the flusher's loop owns it)


def _flush_in_thread(include_orphans: bool, open_next: bool) -> int:
    try:
        return flush(include_orphans=include_orphans, open_next=open_next)
    finally:
        # This worker thread's connection goes back (the pool keeps it warm).
        connections.close_all()


async def flush_async(*, include_orphans: bool = False, open_next: bool = False) -> int:
    return await asyncio.to_thread(_flush_in_thread, include_orphans, open_next)


async def _run() -> None:
    delay = FLUSH_INTERVAL_SECONDS
    last_orphan_scan = 0.0
    is_down = False
    wake = _wake
    assert wake is not None
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=delay)
        wake.clear()
        scan = time.monotonic() - last_orphan_scan >= ORPHAN_SCAN_SECONDS
        try:
            await flush_async(include_orphans=scan, open_next=True)
        except DatabaseError:
            if not is_down:
                logger.warning("usage spool: database unavailable, records kept in the spool")
            is_down = True
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
            continue
        except Exception:
            logger.exception("usage spool: flush failed, retrying")
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
            continue
        if is_down:
            logger.warning("usage spool: database back, spooled records inserted")
        is_down = False
        delay = FLUSH_INTERVAL_SECONDS
        if scan:
            last_orphan_scan = time.monotonic()


def is_flusher_running() -> bool:
    return _flusher.is_running()


def wake_flusher() -> None:
    """Ask the flusher to run now (call from its event loop)."""
    if _flusher.is_running() and _wake is not None:
        _wake.set()


async def start_flusher() -> None:
    """Start-up hook: replay what earlier processes left, then flush in the background."""
    global _wake
    if _flusher.is_running():
        return
    # The first cycle replays orphans at once (last scan time is 0).
    _wake = asyncio.Event()
    _wake.set()
    _flusher.start(_run)


async def stop_flusher() -> None:
    """Shutdown hook: stop the loop, then one last flush (records stay spooled if it fails)."""
    await _flusher.stop()
    try:
        await flush_async()
    except DatabaseError:
        logger.warning("usage spool: database unavailable at shutdown, records kept in the spool")
    await asyncio.to_thread(sync)
