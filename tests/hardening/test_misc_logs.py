"""Log injection: what a request carries never starts a line of its own in the log.

A client chooses its path (percent-encoded, so any character), its headers
and the names it registers; a raw CR or LF among them would let it write a
line that looks like the gateway's own, and other control characters
(ESC, DEL, C1, Unicode line separators) can rewrite what a terminal or a
log viewer shows.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable

import httpx

from gateway.core.logs import JsonFormatter, RedactingFormatter
from tests.proxy.conftest import Gateway
from tests.support.processes import wait_for

# CR LF, then a tab, ESC, DEL, NEL (C1) and LINE SEPARATOR.
ATTACK = "/admin/x%0d%0aFORGED-LINE-2%09%1b%7f%c2%85%e2%80%a8end"
DECODED = "/admin/x\r\nFORGED-LINE-2\t\x1b\x7f\x85\u2028end"
ESCAPED = "/admin/x\\r\\nFORGED-LINE-2\\t\\x1b\\x7f\\x85\\u2028end"
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def attack(gateway: Gateway) -> tuple[str, str]:
    """Send the request; returns (its request id, the log the server wrote since)."""
    server = gateway.servers[0]
    skip = len(server.log_path.read_bytes())  # the server may be shared with earlier tests
    response = httpx.get(f"{gateway.url}{ATTACK}", timeout=30)
    request_id = response.headers["x-request-id"]

    def written() -> str:
        return server.log_path.read_bytes()[skip:].decode("utf-8", errors="replace")

    wait_for(lambda: request_id in written(), timeout=10, what="the access line")
    return request_id, written()


def test_a_path_with_control_characters_is_one_escaped_line_in_the_text_log(
    gateway: Gateway,
) -> None:
    request_id, text = attack(gateway)
    lines = text.split("\n")
    mentioning = [line for line in lines if "FORGED-LINE-2" in line]
    assert len(mentioning) == 1, mentioning
    (line,) = mentioning
    assert f"[{request_id}] GET {ESCAPED} " in line
    assert not RAW_CONTROL.search(text), [line for line in lines if RAW_CONTROL.search(line)]


def test_the_json_log_keeps_the_path_as_an_escaped_string_on_one_line(
    start_gateway: Callable[..., Gateway],
) -> None:
    request_id, text = attack(start_gateway(LOG_FORMAT="json"))
    assert not RAW_CONTROL.search(text)
    entries = [json.loads(line) for line in text.split("\n") if line]  # each line one object
    (access,) = [entry for entry in entries if entry.get("request_id") == request_id]
    assert access["path"] == DECODED


def test_an_exception_message_cannot_forge_a_line_inside_a_traceback() -> None:
    try:
        raise ValueError("bad header value\r\n2026-01-01 00:00:00,000 INFO gateway.access forged")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "gateway.core.errors",
        logging.ERROR,
        __file__,
        1,
        "Unhandled exception on %s",
        ("/v1/x",),
        None,
    )
    record.exc_info = exc_info
    record.request_id = "req_0"
    text = RedactingFormatter("%(levelname)s [%(request_id)s] %(message)s").format(record)
    lines = text.split("\n")
    assert lines[0] == "ERROR [req_0] Unhandled exception on /v1/x"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == (
        "ValueError: bad header value\\r\\n2026-01-01 00:00:00,000 INFO gateway.access forged"
    )
    assert not RAW_CONTROL.search(text)
    # The JSON log keeps the whole record, traceback included, on its one line.
    assert "\n" not in JsonFormatter().format(record)
