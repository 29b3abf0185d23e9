"""The ledger's write path: usage records go through a local spool and are never lost."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import NoReturn
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connections
from pytest_django import Settings

from tests.billing.factories import record_data
from tests.conftest import gateway_environment
from tests.support.processes import python_child, unreachable_database_url
from usage import services, spool
from usage.models import UsageRecord
from usage.services import (
    UsageRecordData,
    usage_record_write,
    usage_record_write_now,
)


def _forget_process_spool() -> None:
    state = spool._process_state()
    for segment in [*state.sealed, *([state.active] if state.active else [])]:
        os.close(segment.fd)
    spool._state = spool._ProcessSpool()


@pytest.fixture
def spool_var(settings: Settings, tmp_path: Path) -> Iterator[Path]:
    """An empty spool of this test's own (in a temporary directory)."""
    _forget_process_spool()
    settings.USAGE_SPOOL_DIR = str(tmp_path / "spool")
    yield tmp_path / "spool"
    _forget_process_spool()


@pytest.fixture
async def async_orm() -> AsyncIterator[None]:
    """Give back the connection the ORM's async calls took in their worker thread.

    Otherwise it stays checked out of the pool and the test database cannot be dropped.
    """
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def database_down(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every ledger insert fails as if the database were unreachable; returns the attempts."""
    attempts: list[int] = []

    def refuse(records: list[UsageRecordData]) -> None:
        attempts.append(len(records))
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "usage_records_insert", refuse)
    return attempts


def _child(
    var_dir: Path, prefix: str, count: int, mode: str, *flags: str, **env: str
) -> subprocess.Popen[str]:
    return python_child(
        "-m",
        "tests.usage.spool_child",
        str(var_dir),
        prefix,
        str(count),
        mode,
        *flags,
        env=gateway_environment(**env),
        stdin=subprocess.PIPE,
    )


def _ids(prefix: str) -> list[str]:
    return sorted(
        UsageRecord.objects.filter(request_id__startswith=prefix).values_list(
            "request_id", flat=True
        )
    )


def test_a_record_written_now_has_every_field(db: None, spool_var: Path) -> None:
    record = record_data(is_streamed=True, is_estimated=True, status="client_disconnected")
    usage_record_write_now(record)
    row = UsageRecord.objects.get(request_id=record.request_id)
    assert UsageRecordData(**{name: getattr(row, name) for name in record.__slots__}) == record


def test_writing_the_same_request_twice_leaves_one_row(db: None, spool_var: Path) -> None:
    record = record_data()
    usage_record_write_now(record)
    usage_record_write_now(record)
    spool.append(record.to_line())
    spool.spool_replay()
    assert UsageRecord.objects.filter(request_id=record.request_id).count() == 1


def test_a_replayed_batch_keeps_every_field_and_skips_only_the_ids_already_there(
    db: None, spool_var: Path
) -> None:
    # Several records in one statement (PostgreSQL: one UNNEST insert), two
    # of them already in the ledger with other values, which must stay.
    records = [
        record_data(
            owner=f"o{i}",
            tokens_in=i,
            cost_usd=Decimal("12345.000001") * (i + 1),
            is_streamed=i % 2 == 0,
            created_at=datetime(2026, 11, 26, 23, 59, 59, 999_990 + i, tzinfo=UTC),
        )
        for i in range(5)
    ]
    earlier = [
        dataclasses.replace(record, tokens_in=999, status="upstream_error")
        for record in records[1:3]
    ]
    for record in earlier:
        usage_record_write_now(record)
    for record in records:
        spool.append(record.to_line())
    assert spool.spool_replay() == 5
    assert not list(spool_var.glob("*.rejected"))  # a known id is skipped, not refused
    rows = UsageRecord.objects.filter(request_id__in=[r.request_id for r in records])
    fields = UsageRecordData.__slots__
    stored = {
        row.request_id: UsageRecordData(**{name: getattr(row, name) for name in fields})
        for row in rows
    }
    assert stored == {record.request_id: record for record in [records[0], *earlier, *records[3:]]}


def test_a_spooled_line_round_trips_to_the_same_record(spool_var: Path) -> None:
    record = record_data(owner="ana", tokens_in=123_456, cost_usd=record_data().cost_usd * 7)
    assert UsageRecordData.from_line(record.to_line()) == record
    with pytest.raises(ValueError):
        UsageRecordData.from_line(b'{"request_id": "x"}\n')


@pytest.mark.parametrize(
    "created_at",
    [
        datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        datetime(2026, 11, 26, 12, 0, 1, 123456, tzinfo=UTC),
        datetime(2026, 11, 26, 7, 0, 1, 7, tzinfo=ZoneInfo("America/New_York")),
    ],
)
def test_a_spooled_line_is_the_documented_json(spool_var: Path, created_at: datetime) -> None:
    # Processes of another version may replay this spool: the line's shape is fixed.
    record = record_data(cost_usd=Decimal("1.500000"), created_at=created_at)
    line = record.to_line()
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        **{name: getattr(record, name) for name in record.__slots__},
        "cost_usd": "1.500000",
        "budget_day": record.budget_day.isoformat(),
        "created_at": created_at.isoformat(),
    }
    assert list(json.loads(line)) == list(record.__slots__)
    assert UsageRecordData.from_line(line) == record


def test_a_record_waits_in_the_spool_while_the_database_is_down(
    db: None, spool_var: Path, database_down: list[int]
) -> None:
    record = record_data()
    usage_record_write_now(record)
    assert database_down, "the insert was attempted"
    assert not UsageRecord.objects.filter(request_id=record.request_id).exists()
    assert len(spool.pending_segments()) == 1
    with pytest.raises(OperationalError):
        spool.spool_replay()
    assert len(spool.pending_segments()) == 1


def test_spooled_records_land_once_when_the_database_is_back(
    db: None, spool_var: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [record_data() for _ in range(5)]
    original = services.usage_records_insert
    monkeypatch.setattr(services, "usage_records_insert", _refusing)
    for record in records:
        usage_record_write_now(record)
    monkeypatch.setattr(services, "usage_records_insert", original)
    assert spool.spool_replay() == 5
    assert spool.spool_replay() == 0
    assert UsageRecord.objects.filter(request_id__in=[r.request_id for r in records]).count() == 5
    assert spool.pending_segments() == []


def _refusing(records: list[UsageRecordData]) -> NoReturn:
    raise OperationalError("connection refused")


def test_a_process_whose_database_is_unreachable_spools_and_the_next_replay_lands_it(
    db: None, spool_var: Path
) -> None:
    child = _child(
        spool_var.parent, "req_down", 2, "write-now", DATABASE_URL=unreachable_database_url()
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert "written" in out
    assert _ids("req_down") == []
    assert spool.spool_replay() == 2
    assert len(_ids("req_down")) == 2


def test_a_live_writers_segment_is_left_alone_and_replayed_once_it_is_killed(
    db: None, spool_var: Path
) -> None:
    child = _child(spool_var.parent, "req_live", 50, "spool", "--hold")
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    try:
        assert child.stdout.readline().strip() == "written"
        assert spool.spool_replay() == 0
        assert _ids("req_live") == []
        (segment,) = spool.pending_segments()
        # A batch of it had already been committed when the process died.
        half = [record_data(request_id=f"req_live-{i}") for i in range(25)]
        UsageRecord.objects.bulk_create([record.to_model() for record in half])
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        child.stdin.close()
        child.stderr.close()
    assert spool.spool_replay() == 50
    assert spool.spool_replay() == 0
    assert len(_ids("req_live")) == 50
    assert not segment.exists()


def test_two_processes_writing_one_spool_at_once_never_corrupt_it(
    db: None, spool_var: Path
) -> None:
    children = [_child(spool_var.parent, f"req_w{n}", 3000, "spool", "--wait-go") for n in (1, 2)]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        _out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
    assert len(spool.pending_segments()) == 2
    assert spool.spool_replay() == 6000
    assert len(_ids("req_w1")) == 3000
    assert len(_ids("req_w2")) == 3000
    assert list(spool_var.glob("*.rejected")) == []


def test_threads_appending_at_once_never_tear_a_line(db: None, spool_var: Path) -> None:
    records = [record_data() for _ in range(2000)]

    def write(chunk: list[UsageRecordData]) -> None:
        for record in chunk:
            spool.append(record.to_line())

    threads = [threading.Thread(target=write, args=(records[n::8],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert spool.spool_replay() == 2000
    assert UsageRecord.objects.count() == 2000
    assert list(spool_var.glob("*.rejected")) == []


def test_an_empty_segment_abandoned_before_its_rename_is_cleaned_up(
    db: None, spool_var: Path
) -> None:
    spool_var.mkdir(parents=True)
    abandoned = spool_var / "usage-1-1-0.tmp"
    abandoned.touch()
    assert spool.spool_replay() == 0
    assert not abandoned.exists()


def test_a_torn_last_line_is_quarantined_and_the_rest_inserted(db: None, spool_var: Path) -> None:
    spool_var.mkdir(parents=True)
    good = [record_data() for _ in range(3)]
    torn = record_data().to_line()[:40]
    (spool_var / "usage-1-1-0.jsonl").write_bytes(b"".join(r.to_line() for r in good) + torn)
    assert spool.spool_replay() == 3
    assert UsageRecord.objects.filter(request_id__in=[r.request_id for r in good]).count() == 3
    (rejected,) = spool_var.glob("*.rejected")
    assert rejected.read_bytes() == torn + b"\n"
    assert spool.pending_segments() == []


def test_the_flusher_opens_the_next_segment_and_the_last_flush_removes_it(spool_var: Path) -> None:
    inserted: list[bytes] = []
    spool.append(record_data().to_line())
    assert spool.flush(sink=inserted.extend, open_next=True) == 1
    # The next segment is open already: created, locked and empty.
    (segment,) = spool.pending_segments()
    assert segment.stat().st_size == 0
    fd = os.open(segment, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # owned: no replayer may take it
    finally:
        os.close(fd)
    spool.append(record_data().to_line())
    assert spool.pending_segments() == [segment]  # the append used it
    assert spool.flush(sink=inserted.extend, open_next=True) == 1
    assert spool.pending_segments() not in ([], [segment])
    # The last flush (shutdown) leaves no empty segment behind.
    assert spool.flush(sink=inserted.extend) == 0
    assert spool.pending_segments() == []
    assert len(inserted) == 2


def test_a_record_the_database_rejects_does_not_block_its_batch(db: None, spool_var: Path) -> None:
    good = [record_data() for _ in range(4)]
    bad = record_data(tokens_in=-5)  # violates the positive-integer check
    for record in [*good[:2], bad, *good[2:]]:
        spool.append(record.to_line())
    assert spool.spool_replay() == 4
    assert UsageRecord.objects.filter(request_id__in=[r.request_id for r in good]).count() == 4
    (rejected,) = spool_var.glob("*.rejected")
    assert bad.request_id in rejected.read_text()


async def test_an_async_write_without_a_flusher_is_in_the_database_on_return(
    transactional_db: None, async_orm: None, spool_var: Path
) -> None:
    records = [record_data() for _ in range(20)]
    await asyncio.gather(*(usage_record_write(record) for record in records))
    ids = [record.request_id for record in records]
    assert await UsageRecord.objects.filter(request_id__in=ids).acount() == 20
    assert spool.pending_segments() == []


async def test_the_flusher_inserts_in_the_background_and_flushes_at_shutdown(
    transactional_db: None, async_orm: None, spool_var: Path
) -> None:
    await spool.start_flusher()
    try:
        records = [record_data() for _ in range(30)]
        await asyncio.gather(*(usage_record_write(record) for record in records))
        ids = [record.request_id for record in records]
        spool.wake_flusher()
        for _ in range(500):
            if await UsageRecord.objects.filter(request_id__in=ids).acount() == 30:
                break
            await asyncio.sleep(0.02)
        assert await UsageRecord.objects.filter(request_id__in=ids).acount() == 30
        late = record_data()
        await usage_record_write(late)
    finally:
        await spool.stop_flusher()
    assert await UsageRecord.objects.filter(request_id=late.request_id).aexists()
    assert spool.pending_segments() == []


async def test_the_flusher_keeps_records_through_an_outage_and_lands_them_after(
    transactional_db: None,
    async_orm: None,
    spool_var: Path,
    database_down: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await spool.start_flusher()
    try:
        records = [record_data() for _ in range(10)]
        for record in records:
            await usage_record_write(record)
        spool.wake_flusher()
        for _ in range(500):
            if database_down:
                break
            await asyncio.sleep(0.02)
        assert database_down, "the flusher tried the database"
        assert len(spool.pending_segments()) == 1
        monkeypatch.undo()  # the database is back
    finally:
        await spool.stop_flusher()
    ids = [record.request_id for record in records]
    assert await UsageRecord.objects.filter(request_id__in=ids).acount() == 10
    assert spool.pending_segments() == []


async def test_a_flusher_starting_up_replays_what_a_dead_process_left(
    transactional_db: None, async_orm: None, spool_var: Path
) -> None:
    child = await sync_to_async(_child)(spool_var.parent, "req_dead", 15, "spool")
    await asyncio.to_thread(child.communicate, timeout=60)
    await spool.start_flusher()
    try:
        for _ in range(500):
            if await UsageRecord.objects.filter(request_id__startswith="req_dead").acount() == 15:
                break
            await asyncio.sleep(0.02)
    finally:
        await spool.stop_flusher()
    assert await UsageRecord.objects.filter(request_id__startswith="req_dead").acount() == 15
    assert spool.pending_segments() == []
