from __future__ import annotations

import json
import logging
import os
import random
import re

import pytest
from django.test import Client

from gateway.core import logs
from gateway.core.logs import (
    JsonFormatter,
    RedactingFormatter,
    new_request_id,
    redact,
    register_secret,
)

SECRETS = [
    "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123456789",
    "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx",
    "dop_v1_0123456789abcdef0123456789abcdef",
    "hzt_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
]


@pytest.mark.parametrize("secret", SECRETS)
def test_secret_shapes_are_masked(secret: str) -> None:
    assert secret not in redact(f"calling upstream with {secret} now")


def test_bearer_and_api_key_headers_are_masked() -> None:
    line = redact("headers: Authorization: Bearer opaque-token-value x-api-key: plainvalue123")
    assert "opaque-token-value" not in line
    assert "plainvalue123" not in line


def test_a_registered_secret_is_masked_whatever_its_shape() -> None:
    register_secret("correct-horse-battery-staple")
    assert "correct-horse-battery-staple" not in redact("key=correct-horse-battery-staple")


def test_ordinary_text_and_request_ids_survive() -> None:
    line = "req_0123456789abcdef0123456789abcdef POST /v1/chat/completions 200"
    assert redact(line) == line


ACCESS_LINE = (
    "2026-11-26 17:37:20,354 INFO gateway.access [req_da1e2fec387244c2bc347cde4ab9370a] "
    "POST /v1/chat/completions 200 12.3ms upstream_ms=8.1 device_id=dev_7dg5gL1kKwDbMqQm7SvkYA "
    "model=openai-gpt-4o provider=openai tokens_in=12 tokens_out=9 cost_usd=0.000120"
)


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        # Each shape, in another case or spelling than the tests above, and at
        # the end of an otherwise ordinary line (the pre-check sees it all).
        (f"{ACCESS_LINE} AUTHORIZATION=opaquevalue1", "opaquevalue1"),
        (f"{ACCESS_LINE} X-Api-Key: 'opaquevalue2'", "opaquevalue2"),
        (f"{ACCESS_LINE} apikey=opaquevalue3", "opaquevalue3"),
        (f"{ACCESS_LINE} X-SESSION-TOKEN=opaquevalue4", "opaquevalue4"),
        (f"{ACCESS_LINE} BEARER opaquevalue5", "opaquevalue5"),
        (f"{ACCESS_LINE} xoxb-0123456789-abcdef", "xoxb-0123456789-abcdef"),
        (f"{ACCESS_LINE} hash={'AB12' * 16}", "AB12" * 16),
        # Under IGNORECASE, re matches a few non-ASCII letters to ASCII ones
        # that lower() does not turn into them (U+017F to "s", U+0131 to "i").
        (f"{ACCESS_LINE} x-\u017fession-token=opaquevalue6", "opaquevalue6"),
        (f"{ACCESS_LINE} author\u0131zation: opaquevalue7", "opaquevalue7"),
        (f"{ACCESS_LINE} api_\u212aey=opaquevalue8", "opaquevalue8"),  # Kelvin sign
    ],
)
def test_the_quick_check_never_skips_a_line_holding_a_secret(line: str, secret: str) -> None:
    assert secret not in redact(line)
    assert redact(line) == logs._mask_shapes(line)


def test_redacting_with_the_quick_check_equals_every_substitution() -> None:
    """Random lines built from pieces of every shape, near misses and ordinary text."""
    pieces = [
        "bearer ", "Bearer", "BEARER\t", "hzt_", "sk-", "dop_v1_", "xoxp-", "xoxz-", "api", "-key",
        "_key", "key", "x-", "session-token", "authori", "zation", ": ", "=", '"', "'", " ", ",",
        "0123456789abcdef", "ABCDEF", "deadbeef" * 4, "req_", "dev_", "/v1/chat", "\u017f",
        "\u212a", "\u0130", "\u0131", "\u00e9", "opaque-Value_123",
    ]  # fmt: skip
    rng = random.Random(11)
    for _ in range(3000):
        line = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 40)))
        assert redact(line) == logs._mask_shapes(line), line


def test_request_ids_are_random_hex_and_never_repeat() -> None:
    ids = [new_request_id() for _ in range(2000)]  # several of the batches drawn at once
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_process_never_repeats_its_parents_request_ids() -> None:
    new_request_id()  # this process now holds a batch of ids drawn ahead
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its ids and leave at once
        os.write(write_end, " ".join(new_request_id() for _ in range(300)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child_ids = set(pipe.read().decode().split())
    os.waitpid(pid, 0)
    assert len(child_ids) == 300
    assert child_ids.isdisjoint(new_request_id() for _ in range(300))


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, message, args, None)
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    record.request_id = "req_1"
    return record


def test_formatters_mask_arguments_and_tracebacks() -> None:
    secret = SECRETS[0]
    try:
        raise ValueError(f"upstream said {secret}")
    except ValueError as error:
        text_line = RedactingFormatter("%(message)s").format(_record("key %s", secret, exc=error))
        json_line = JsonFormatter().format(_record("key %s", secret, exc=error))
    assert secret not in text_line and "ValueError" in text_line
    assert secret not in json_line
    assert json.loads(json_line)["request_id"] == "req_1"


def test_every_request_is_one_access_line_with_its_id(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        response = client.get("/health")
    lines = [r for r in caplog.records if r.name == "gateway.access"]
    assert len(lines) == 1
    assert getattr(lines[0], "request_id") == response["X-Request-ID"]
    assert "GET /health 200" in lines[0].getMessage()
