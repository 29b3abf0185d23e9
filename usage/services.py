"""Writes to the ledger: one usage record per admitted request, never lost.

``usage_record_write`` appends the record to this process's spool (see
usage.spool) and returns: microseconds, no database on the response's
path. The spool's flusher inserts it within about half a second, or when
the database is back. ``usage_record_write_now`` inserts synchronously for
code that needs the row at once (commands, tests).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    models,
    transaction,
)

from usage import spool
from usage.models import UsageRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UsageRecordData:
    """Every field of a UsageRecord; what the proxy hands to the ledger.

    (With slots=True, ``__slots__`` names the fields, in order.)
    """

    request_id: str
    device_id: str
    owner: str
    ip: str
    model: str
    provider: str
    tier: str
    tokens_in: int
    tokens_out: int
    cost_usd: Decimal
    is_estimated: bool
    status: str
    is_streamed: bool
    duration_ms: int
    budget_day: date
    created_at: datetime
    requested_model: str = ""
    attempts: int = 1

    def to_line(self) -> bytes:
        # orjson encodes the dataclass itself, fields in order, dates and
        # datetimes as isoformat() writes them: no dataclasses.asdict, whose
        # deep copy cost ten times the encoding. Only the Decimal needs help.
        return orjson.dumps(self, default=_decimal_str, option=orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_line(cls, line: bytes) -> UsageRecordData:
        """Decode a spooled line; ValueError if it is not a whole record."""
        try:
            data = orjson.loads(line)
            data["cost_usd"] = Decimal(data["cost_usd"])
            data["budget_day"] = date.fromisoformat(data["budget_day"])
            data["created_at"] = datetime.fromisoformat(data["created_at"])
            # Spooled before fallbacks existed: one attempt, at the model asked for.
            data.setdefault("requested_model", data.get("model"))
            data.setdefault("attempts", 1)
            return cls(**{name: data[name] for name in cls.__slots__})
        except (orjson.JSONDecodeError, KeyError, TypeError, InvalidOperation) as exc:
            raise ValueError(f"not a usage record line: {type(exc).__name__}") from None

    def to_model(self) -> UsageRecord:
        # The flusher's thread makes one per record, and shares the interpreter
        # with the event loop: the fields as they are, not asdict's deep copy.
        return UsageRecord(**{name: getattr(self, name) for name in self.__slots__})

    def problems(self) -> list[str]:
        """What the database would refuse, or (SQLite's INSERT OR IGNORE) silently drop."""
        found = []
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            limit = _MAX_LENGTHS[name]
            if not isinstance(value, str) or len(value) > limit:
                found.append(f"{name} is not a string of at most {limit} characters")
        for name in ("tokens_in", "tokens_out", "duration_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
                found.append(f"{name} is not a non-negative 32-bit integer")
        attempts = self.attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 0 <= attempts < 2**15:
            found.append("attempts is not a count from 0 to 32767")
        cost = self.cost_usd
        if not isinstance(cost, Decimal) or not cost.is_finite() or not 0 <= cost < 10**8:
            found.append("cost_usd is not an amount of at most 8 integer digits")
        elif cost != cost.quantize(Decimal("0.000001")):
            found.append("cost_usd has more than six decimal places")
        if self.status not in _STATUSES:
            found.append("status is not a known usage status")
        if not self.request_id:
            found.append("request_id is empty")
        return found


def _decimal_str(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a usage record field type")


def _concrete_field(name: str) -> models.Field[Any, Any]:
    field = UsageRecord._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field


def _max_length(name: str) -> int:
    field = _concrete_field(name)
    assert isinstance(field, models.CharField) and field.max_length
    return field.max_length


_TEXT_FIELDS = (
    "request_id",
    "device_id",
    "owner",
    "ip",
    "model",
    "provider",
    "tier",
    "requested_model",
)
_MAX_LENGTHS = {name: _max_length(name) for name in _TEXT_FIELDS}
# Status.values builds its list anew on each access; this is read once a request.
_STATUSES = frozenset(UsageRecord.Status.values)


def usage_records_insert(records: list[UsageRecordData]) -> None:
    """Insert in one transaction, skipping request ids already in the ledger."""
    with transaction.atomic():
        if connection.vendor != "postgresql":
            UsageRecord.objects.bulk_create(
                [record.to_model() for record in records], ignore_conflicts=True
            )
            return
        # The flusher's thread shares the interpreter with the event loop:
        # bulk_create's model instances and per-value preparation hold it in
        # 5 ms slices that requests queue behind. On
        # PostgreSQL the fields go as they are (psycopg adapts str, int,
        # bool, Decimal, date and aware datetime itself), one array a column,
        # in the statement bulk_create would send.
        columns = [[getattr(record, name) for record in records] for name in _FIELDS]
        with connection.cursor() as cursor:
            cursor.execute(_unnest_insert_sql(), columns)


# UsageRecordData's fields are the model's, in its order (the id aside).
_FIELDS = UsageRecordData.__slots__


@functools.cache
def _unnest_insert_sql() -> str:
    quote = connection.ops.quote_name
    fields = [_concrete_field(name) for name in _FIELDS]
    table = quote(UsageRecord._meta.db_table)
    columns = ", ".join(quote(field.column) for field in fields)
    # db_type without its length (varchar, not varchar(64)): the arrays'
    # element type; the column's own type still checks each value.
    arrays = ", ".join(f"%s::{str(field.db_type(connection)).split('(')[0]}[]" for field in fields)
    # Identifiers and types come from the model; the values are parameters.
    insert = f"INSERT INTO {table} ({columns})"
    return f"{insert} SELECT * FROM UNNEST({arrays}) ON CONFLICT DO NOTHING"  # noqa: S608


def usage_record_lines_insert(lines: list[bytes]) -> None:
    """The spool's sink: decode, check and insert spooled lines (ValueError on a bad one)."""
    records = [UsageRecordData.from_line(line) for line in lines]
    for record in records:
        problems = record.problems()
        if problems:
            raise ValueError(f"usage record {record.request_id!r}: {'; '.join(problems)}")
    usage_records_insert(records)


async def usage_record_write(record: UsageRecordData) -> None:
    """Make ``record`` durable: in the spool now, in the database soon.

    In a process without a running flusher (no ASGI lifespan, e.g. a test
    client), the spool is flushed right away in a worker thread, so the row
    is in the database when this returns unless the database is down (then
    it waits in the spool for the next flush or replay).
    """
    problems = record.problems()
    if problems:
        # Still spooled: the flush keeps it in the spool's .rejected file.
        logger.error("usage record %s is invalid: %s", record.request_id, "; ".join(problems))
    if not await _spool_async(record):
        return
    if spool.is_flusher_running():
        return
    try:
        await spool.flush_async()
    except DatabaseError:
        logger.warning("usage spool: database unavailable, %s kept spooled", record.request_id)


async def _spool_async(record: UsageRecordData) -> bool:
    line = record.to_line()
    try:
        spool.append(line)
    except OSError:
        logger.exception("usage spool: append failed, writing %s directly", record.request_id)
        await asyncio.to_thread(_insert_closing, record)
        return False
    return True


def _insert_closing(record: UsageRecordData) -> None:
    try:
        usage_records_insert([record])
    finally:
        connections.close_all()


def usage_record_write_now(record: UsageRecordData) -> None:
    """Insert ``record`` synchronously; if the database is down, spool it (fsynced).

    Either way the record is durable when this returns. A record the
    database would refuse raises ValueError (a caller's bug, caught early).
    """
    problems = record.problems()
    if problems:
        raise ValueError(f"usage record {record.request_id!r}: {'; '.join(problems)}")
    try:
        usage_records_insert([record])
    except (OperationalError, InterfaceError):
        spool.append(record.to_line())
        spool.sync()
        logger.warning("usage ledger: database unavailable, %s spooled", record.request_id)


spool.set_sink(usage_record_lines_insert)
