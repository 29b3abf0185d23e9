from __future__ import annotations

import json
import logging

import pytest

from gateway.logs import JsonFormatter, RedactingFormatter, redact, register_secret

SECRETS = [
    "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123456789",
    "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx",
    "dop_v1_0123456789abcdef0123456789abcdef",
    "hzt_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
]


@pytest.mark.parametrize("secret", SECRETS)
def test_secret_shapes_are_masked(secret):
    assert secret not in redact(f"calling upstream with {secret} now")


def test_bearer_and_api_key_headers_are_masked():
    line = redact("headers: Authorization: Bearer opaque-token-value x-api-key: plainvalue123")
    assert "opaque-token-value" not in line
    assert "plainvalue123" not in line


def test_a_registered_secret_is_masked_whatever_its_shape():
    register_secret("correct-horse-battery-staple")
    assert "correct-horse-battery-staple" not in redact("key=correct-horse-battery-staple")


def test_ordinary_text_and_request_ids_survive():
    line = "req_0123456789abcdef0123456789abcdef POST /v1/chat/completions 200"
    assert redact(line) == line


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, message, args, None)
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    record.request_id = "req_1"
    return record


def test_formatters_mask_arguments_and_tracebacks():
    secret = SECRETS[0]
    try:
        raise ValueError(f"upstream said {secret}")
    except ValueError as error:
        text_line = RedactingFormatter("%(message)s").format(_record("key %s", secret, exc=error))
        json_line = JsonFormatter().format(_record("key %s", secret, exc=error))
    assert secret not in text_line and "ValueError" in text_line
    assert secret not in json_line
    assert json.loads(json_line)["request_id"] == "req_1"


def test_every_request_is_one_access_line_with_its_id(client, caplog):
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        response = client.get("/health")
    lines = [r for r in caplog.records if r.name == "gateway.access"]
    assert len(lines) == 1
    assert lines[0].request_id == response["X-Request-ID"]
    assert "GET /health 200" in lines[0].getMessage()
