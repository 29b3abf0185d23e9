"""Logging: request ids, one line per request, redaction of secrets, escaping.

Redaction happens in the formatters, on the fully formatted line (message,
arguments and traceback together), so no code path can log a secret by
accident: provider keys, bearer tokens, session tokens and token hashes are
masked by shape, and any exact secret registered at run time (the provider
keys the key manager loaded) is masked by value.

Escaping happens there too, so no field can forge a line: a request's path
is percent-decoded (any character), and headers and names are the client's.
The text format writes every control character of a record's line, and of
the exception messages in its traceback, as a Python escape (``\r``,
``\x1b``); the JSON format's encoder escapes them all already.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import re
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Generator, Iterable
from types import TracebackType
from typing import Any

# What sys.exc_info() returns, as logging takes it.
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

MASK = "[REDACTED]"

# Shapes of secrets. Session tokens are "hzt_" + 43 url-safe chars (see
# devices.tokens); token hashes are 64 hex chars; provider keys come in
# several vendor shapes.
_SECRET_PATTERNS = [
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bhzt_[A-Za-z0-9_-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"\bdop_v1_[A-Za-z0-9_-]{8,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}"),
    re.compile(r"\b[0-9a-fA-F]{64}\b"),
    re.compile(
        r"(?i)(x-api-key|x-session-token|api[_-]?key|authorization)([\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"
    ),
]

# A quick check before the substitutions: every shape above contains one of
# these words (compared in lower case) or 64 hex digits in a row, so a line
# with neither matches no shape. Most lines, the access line among them,
# have neither and skip the seven substitutions. Keep the
# words in step with the patterns. ASCII text only: under IGNORECASE re also
# matches a few non-ASCII letters to ASCII ones that lower() does not turn
# into them ("\u017f" to "s", "\u0131" and "\u0130" to "i"), so any other
# text takes the substitutions.
_SHAPE_WORDS = (
    "bearer",
    "hzt_",
    "sk-",
    "dop_v1_",
    "xox",
    "api-key",  # also x-api-key
    "api_key",
    "apikey",
    "x-session-token",
    "authorization",
)
_HEX_RUN = re.compile(r"[0-9a-fA-F]{64}")

_registered: set[str] = set()
_registered_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Mask this exact value in every later log line (e.g. a loaded provider key)."""
    if value and len(value) >= 8:
        with _registered_lock:
            _registered.add(value)


def redact(text: str) -> str:
    for secret in tuple(_registered):
        if secret in text:
            text = text.replace(secret, MASK)
    if text.isascii() and not _may_hold_a_shape(text):
        return text
    return _mask_shapes(text)


def _may_hold_a_shape(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _SHAPE_WORDS) or _HEX_RUN.search(text) is not None


def _mask_shapes(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        else:
            text = pattern.sub(MASK, text)
    return text


# C0 (CR and LF among them), DEL, C1, and the line and paragraph separators
# some log viewers break lines at.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def escape_controls(text: str) -> str:
    """``text`` with every control character written as its Python escape."""
    # Nearly every line is printable ASCII, which deleting the printable bytes
    # tells faster than the regular expression would.
    if text.isascii() and not text.encode().translate(None, _PRINTABLE_ASCII):
        return text
    return _CONTROL.sub(_escape, text)


def _escaped_lines(lines: Callable[[], Iterable[str]]) -> Generator[str, None, None]:
    for line in lines():
        yield escape_controls(line.removesuffix("\n")) + "\n"


def format_exception_escaped(exc_info: ExcInfo) -> str:
    """The traceback ``logging`` writes, with its exception messages escaped.

    Frames come from the code; a message may quote a request (a header, a
    path), so only the messages are escaped and the traceback keeps its lines.
    """
    kind, value, tb = exc_info
    if kind is None or value is None:
        return "NoneType: None"
    formatted = traceback.TracebackException(kind, value, tb, compact=True)
    pending, seen = [formatted], set()
    while pending:  # the exception, its cause and context, a group's members
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        item.format_exception_only = functools.partial(  # type: ignore[method-assign]
            _escaped_lines, item.format_exception_only
        )
        linked = (item.__cause__, item.__context__, *(item.exceptions or ()))
        pending.extend(other for other in linked if other is not None)
    return "".join(formatted.format()).removesuffix("\n")


# Request ids are "req_" and 128 random bits in hex, drawn from the OS in
# batches: one getrandom call per request cost more than the rest of the id
# and let other threads take the interpreter. deque.popleft is atomic, and a
# forked child drops the batch it inherited, so no two processes share an id.
_ID_BATCH = 256
_ids: deque[str] = deque()
os.register_at_fork(after_in_child=_ids.clear)


def new_request_id() -> str:
    try:
        return _ids.popleft()
    except IndexError:
        digits = os.urandom(16 * _ID_BATCH).hex()
        _ids.extend([f"req_{digits[i : i + 32]}" for i in range(32, len(digits), 32)])
        return f"req_{digits[:32]}"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        return True


class RedactingFormatter(logging.Formatter):
    """The text format: one line per record (a traceback's lines after it), secrets masked."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: ExcInfo) -> str:
        return format_exception_escaped(ei)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


# Fields a request log line may carry (see log_request); anything else in
# ``extra`` is ignored by the JSON formatter so nothing unexpected is emitted.
REQUEST_FIELDS = (
    "request_id",
    "method",
    "path",
    "status",
    "duration_ms",
    "upstream_ms",
    "device_id",
    "model",
    "provider",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "is_streamed",
    "code",
    "layer",
    "client_ip",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in REQUEST_FIELDS:
            value = getattr(record, field, None)
            if value is not None and value != "-":
                entry[field] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # ensure_ascii (the default) escapes every control character: one line.
        return redact(json.dumps(entry, default=str))


access_logger = logging.getLogger("gateway.access")

# The access line's ``key=value`` part: the fields its summary does not show.
_DETAIL_FIELDS = tuple(
    key
    for key in REQUEST_FIELDS
    if key not in ("method", "path", "status", "duration_ms", "request_id")
)


def log_request(**fields: Any) -> None:
    """Emit the one line per request: ``method path status duration`` plus context."""
    summary = (
        f"{fields.get('method')} {fields.get('path')} {fields.get('status')} "
        f"{fields.get('duration_ms')}ms"
    )
    details = " ".join(
        [f"{key}={fields[key]}" for key in _DETAIL_FIELDS if fields.get(key) is not None]
    )
    access_logger.info("%s%s", summary, f" {details}" if details else "", extra=fields)
