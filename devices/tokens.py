"""Session tokens and device ids.

A token is ``hzt_`` + 43 url-safe characters (256 random bits). Only its
HMAC-SHA256 under ``TOKEN_PEPPER`` is stored, so a copy of the database does
not let anyone authenticate, and the pepper can stay put while ``SECRET_KEY``
rotates. When no pepper is configured one is derived from ``SECRET_KEY``
(system check hanzo.W003 warns about that on the production profile).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import lru_cache

from django.conf import settings

TOKEN_PREFIX = "hzt_"  # noqa: S105 (a public marker, not a secret)
TOKEN_LENGTH = len(TOKEN_PREFIX) + 43
DEVICE_ID_PREFIX = "dev_"
DEVICE_ID_LENGTH = len(DEVICE_ID_PREFIX) + 22


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_device_id() -> str:
    return DEVICE_ID_PREFIX + secrets.token_urlsafe(16)


def looks_like_token(value: str) -> bool:
    """Cheap shape check, so garbage never reaches the hash or the database."""
    return len(value) == TOKEN_LENGTH and value.startswith(TOKEN_PREFIX)


def looks_like_device_id(value: str) -> bool:
    return len(value) == DEVICE_ID_LENGTH and value.startswith(DEVICE_ID_PREFIX)


@lru_cache(maxsize=4)
def _pepper(explicit: str, secret_key: str) -> bytes:
    if explicit:
        return explicit.encode()
    return hmac.new(secret_key.encode(), b"hanzo-token-pepper", hashlib.sha256).digest()


def token_hash(token: str) -> str:
    """Hex HMAC-SHA256 of the token: what the database stores and looks up."""
    pepper = _pepper(settings.TOKEN_PEPPER, settings.SECRET_KEY)
    return hmac.new(pepper, token.encode(), hashlib.sha256).hexdigest()


@lru_cache(maxsize=4)
def _end_user_key(pepper: bytes) -> bytes:
    return hmac.new(pepper, b"hanzo-end-user-id", hashlib.sha256).digest()


@lru_cache(maxsize=16384)  # a miss costs one HMAC; the hot path asks once per request
def _end_user_id(key: bytes, device_id: str) -> str:
    return hmac.new(key, device_id.encode(), hashlib.sha256).hexdigest()[:32]


def end_user_id(device_id: str) -> str:
    """The opaque end-user id providers get for this device's requests.

    Providers attribute abuse to it (OpenAI's ``user``, Anthropic's
    ``metadata.user_id``), so a client must not choose it: a keyed hash of
    the device id (128 bits, under a key derived from the pepper), stable
    per device on every worker, and naming nothing outside the gateway.
    """
    pepper = _pepper(settings.TOKEN_PEPPER, settings.SECRET_KEY)
    return _end_user_id(_end_user_key(pepper), device_id)


def token_prefix(token: str) -> str:
    """What the admin shows to tell tokens apart: 48 of the 256 bits, harmless."""
    return token[: len(TOKEN_PREFIX) + 8]
