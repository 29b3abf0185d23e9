"""Provider API keys: read from the configured backend, cached, never printable.

* ``env``: ``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``DIGITALOCEAN_API_KEY``
  (through settings); changing one means a restart.
* ``aws``: Secrets Manager, secret ``hanzo-gateway/<provider>/api-key``, the
  key as a plain ``SecretString`` (``gateway.core.secrets_aws``).

Each process caches a key for ``SECRET_CACHE_SECONDS`` and drops it as soon
as the global epoch moves (``rotate_key`` bumps it), so every process sends
the new key on its next request. One refresh per provider runs at a time; the
others wait for its result. If the store is briefly unreachable, the last
good key keeps serving and the store is asked again after a short pause.

Keys travel as ``ProviderKey``: ``repr``, ``str`` and f-strings show a mask;
only ``reveal()`` gives the value, for the one header that needs it. Every
loaded value is also registered with the log redactor.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from django.conf import settings

from gateway.core import clock, secrets_aws
from gateway.core.errors import GatewayError
from gateway.core.logs import register_secret
from gateway.core.loops import PerLoop

logger = logging.getLogger(__name__)

PROVIDERS = ("openai", "anthropic", "digitalocean")
# After a failed fetch with a last good key in hand, ask the store again this
# much later rather than on every request.
RETRY_AFTER_FAILURE_SECONDS = 10.0


class ProviderKey:
    """A provider API key that does not print itself."""

    __slots__ = ("_value", "provider")

    def __init__(self, provider: str, value: str) -> None:
        self.provider = provider
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"ProviderKey({self.provider!r}, '****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ProviderKey)
            and other.provider == self.provider
            and other._value == self._value
        )

    def __hash__(self) -> int:
        return hash((self.provider, self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("ProviderKey cannot be pickled")


class ProviderNotConfigured(GatewayError):
    """The route's provider has no key on this gateway: not the client's problem, and
    refused before admission (no quota, no record)."""

    status = 503
    code = "provider_not_configured"

    # SPEC: every 503 says when to retry. A key arrives with an operator's
    # restart or rotate_key, which no client can hurry.
    RETRY_AFTER_SECONDS = 300

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model[:100]}' is not available: its provider is not "
            "configured on this gateway",
            retry_after=self.RETRY_AFTER_SECONDS,
        )


class ProviderKeyUnavailable(GatewayError):
    """No key for this provider (not configured, or the store never answered)."""

    status = 502
    code = "upstream_error"
    message = "The model provider is not available"


@dataclass(frozen=True, slots=True)
class _Entry:
    key: ProviderKey
    epoch: int
    expires_at: float


_cache: dict[str, _Entry] = {}
# provider -> the epoch at which the secrets backend had no key for it
# (rotate_key bumps the epoch, so a key stored since counts at once).
_missing: dict[str, int] = {}


def is_configured(provider: str, *, epoch: int) -> bool:
    """Whether ``provider`` has a key: one in the environment (``env``), or no
    "not found" from the secrets backend at this epoch (``aws``; it is asked
    by the first request)."""
    if settings.SECRETS_BACKEND == "aws":
        return _missing.get(provider) != epoch
    return bool(str(settings.PROVIDER_ENV_KEYS.get(provider) or "").strip())


_locks: PerLoop[dict[str, asyncio.Lock]] = PerLoop(dict)


def _lock(provider: str) -> asyncio.Lock:
    locks = _locks.get()
    lock = locks.get(provider)
    if lock is None:
        lock = locks[provider] = asyncio.Lock()
    return lock


def _check_provider(provider: str) -> None:
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")


async def get_key(provider: str, *, epoch: int) -> ProviderKey:
    """The key to send to ``provider``; ``epoch`` is the global epoch read for this request."""
    entry = _cache.get(provider)
    if entry is not None and entry.epoch == epoch and clock.now() < entry.expires_at:
        return entry.key
    return await _refresh(provider, epoch=epoch, stale=entry)


async def refresh(
    provider: str, *, rejected: ProviderKey | None = None, epoch: int | None = None
) -> ProviderKey:
    """Fetch the key again (the provider refused ``rejected``); one fetch serves all waiters."""
    entry = _cache.get(provider)
    if epoch is None:
        epoch = entry.epoch if entry is not None else 0
    return await _refresh(provider, epoch=epoch, stale=entry, rejected=rejected)


def clear_cache() -> None:
    _cache.clear()
    _missing.clear()


async def _refresh(
    provider: str,
    *,
    epoch: int,
    stale: _Entry | None,
    rejected: ProviderKey | None = None,
) -> ProviderKey:
    _check_provider(provider)
    async with _lock(provider):
        entry = _cache.get(provider)
        # Someone refreshed while we waited: use their result.
        fresh = entry is not None and entry is not stale and entry.epoch == epoch
        if entry is not None and fresh and (rejected is None or entry.key != rejected):
            return entry.key
        try:
            value = await _fetch(provider)
        except (secrets_aws.SecretsStoreUnavailable, secrets_aws.SecretNotFound) as exc:
            if isinstance(exc, secrets_aws.SecretNotFound) and entry is None:
                _missing[provider] = epoch
            return _keep_last_good(provider, entry, epoch, reason=type(exc).__name__)
        _missing.pop(provider, None)
        key = ProviderKey(provider, value)
        register_secret(value)
        lifetime = float(settings.SECRET_CACHE_SECONDS)
        _cache[provider] = _Entry(key=key, epoch=epoch, expires_at=clock.now() + lifetime)
        return key


def _keep_last_good(provider: str, entry: _Entry | None, epoch: int, *, reason: str) -> ProviderKey:
    if entry is None:
        logger.error("no %s key: the secrets backend gave none (%s)", provider, reason)
        raise ProviderKeyUnavailable()
    logger.warning(
        "keeping the last good %s key: the secrets backend failed (%s)",
        provider,
        reason,
    )
    retry_at = clock.now() + RETRY_AFTER_FAILURE_SECONDS
    _cache[provider] = _Entry(key=entry.key, epoch=epoch, expires_at=retry_at)
    return entry.key


async def _fetch(provider: str) -> str:
    if settings.SECRETS_BACKEND == "aws":
        name = secrets_aws.secret_name(provider)
        value = await asyncio.to_thread(secrets_aws.get_secret, name)
    else:
        value = str(settings.PROVIDER_ENV_KEYS.get(provider) or "")
    value = value.strip()
    if not value:
        raise secrets_aws.SecretNotFound(provider)
    return value


def store_key(provider: str, value: str) -> None:
    """Write a new key to the ``aws`` backend (``rotate_key``); the caller bumps the epoch."""
    _check_provider(provider)
    secrets_aws.put_secret(secrets_aws.secret_name(provider), value)
