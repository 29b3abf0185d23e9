"""Provider API keys: a pool per provider, read from the configured backend,
cached, used in turn, never printable.

* ``env``: ``OPENAI_API_KEY`` and ``OPENAI_API_KEYS`` (comma-separated), and
  the same for ``ANTHROPIC_`` and ``DIGITALOCEAN_`` (through settings): the
  pool is the single key, then the list, stripped, duplicates and empty
  entries dropped. Changing one means a restart.
* ``aws``: Secrets Manager, secret ``hanzo-gateway/<provider>/api-key``
  (``gateway.core.secrets_aws``): one plain key, or a JSON list of keys.
  ``rotate_key`` writes a list only when the pool has several keys, so older
  gateways keep reading a pool of one.

Each process caches a pool for ``SECRET_CACHE_SECONDS`` and drops it as soon
as the global epoch moves (``rotate_key`` bumps it), so every process uses
the new keys on its next request. One fetch per provider runs at a time; the
others wait for its result. If the store is briefly unreachable, the last
good pool keeps serving and the store is asked again after a short pause.

For one request the caller takes ``pool()``, then ``in_turn()``: the keys to
try, starting one step further round the pool than the previous request, the
benched ones left out. When the provider answers 429 the caller ``bench()``-es
the key for its Retry-After; when it answers 401/403 the caller awaits
``rejected()``, which fetches the pool again once and benches the key until
the pool is next refreshed if the store still holds it. Benches live in this
process only: another process learns the same from its own first refusal.

Keys travel as ``ProviderKey``: ``repr``, ``str`` and f-strings show a mask;
only ``reveal()`` gives the value, for the one header that needs it, and
``key_id`` a fingerprint safe to log. Every loaded value is also registered
with the log redactor.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.conf import settings

from gateway.core import clock, secrets_aws
from gateway.core.errors import GatewayError
from gateway.core.logs import register_secret
from gateway.core.loops import PerLoop

logger = logging.getLogger(__name__)

PROVIDERS = ("openai", "anthropic", "digitalocean")
# After a failed fetch with a last good pool in hand, ask the store again this
# much later rather than on every request.
RETRY_AFTER_FAILURE_SECONDS = 10.0
# A provider's Retry-After is trusted up to this long: a wrong or hostile
# value must not bench a key for days.
MAX_BENCH_SECONDS = 3600.0
KEY_ID_LENGTH = 12


class ProviderKey:
    """A provider API key that does not print itself."""

    __slots__ = ("_key_id", "_value", "provider")

    def __init__(self, provider: str, value: str) -> None:
        self.provider = provider
        self._value = value
        self._key_id: str | None = None

    def reveal(self) -> str:
        return self._value

    @property
    def key_id(self) -> str:
        """A short fingerprint of the key, safe in logs, store key names and alerts.

        Keyed with ``SECRET_KEY``, so every process of one deployment gives the
        same id, and without that secret the id tells nothing of the key (a plain
        hash of a key could be checked against a guess or a leaked key list).
        """
        if self._key_id is None:
            message = b"hanzo-provider-key:" + self._value.encode()
            digest = hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256)
            self._key_id = digest.hexdigest()[:KEY_ID_LENGTH]
        return self._key_id

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


class UnusableSecret(secrets_aws.SecretNotFound):
    """The stored secret is JSON but not a non-empty list of non-empty strings."""


@dataclass(frozen=True, slots=True)
class _Entry:
    keys: tuple[ProviderKey, ...]
    epoch: int
    expires_at: float


_cache: dict[str, _Entry] = {}
# provider -> the epoch at which the secrets backend had no key for it
# (rotate_key bumps the epoch, so a key stored since counts at once).
_missing: dict[str, int] = {}
# provider -> how many requests have taken their turn (round robin).
_turns: dict[str, int] = {}
# key -> the clock time it may be used again (a 429's Retry-After).
_benched: dict[ProviderKey, float] = {}
# provider -> keys it refused (401/403) that a fetch since still gave:
# skipped until the pool is next refreshed (cache expiry or epoch move).
_refused: dict[str, set[ProviderKey]] = {}


# --- reading the pool ---------------------------------------------------------------


def env_pool(provider: str) -> tuple[str, ...]:
    """The ``env`` backend's keys for ``provider``: the single key, then the list."""
    single = str(settings.PROVIDER_ENV_KEYS.get(provider) or "")
    return _unique([single, *settings.PROVIDER_ENV_KEY_LISTS.get(provider, ())])


def decode_pool(text: str) -> tuple[str, ...]:
    """The keys a stored secret holds: one plain key, or a JSON list of keys.

    UnusableSecret when it is JSON (it starts as a list, object or string does)
    but not a non-empty list of non-empty strings. No key starts that way, and
    the message never holds the text.
    """
    text = text.strip()
    if not text or text[0] not in '[{"':
        return (text,) if text else ()
    try:
        values = json.loads(text)
    except ValueError:
        raise UnusableSecret() from None
    if not isinstance(values, list) or not values:
        raise UnusableSecret()
    if not all(isinstance(value, str) and value.strip() for value in values):
        raise UnusableSecret()
    return _unique(values)


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    stripped = (value.strip() for value in values)
    return tuple(dict.fromkeys(value for value in stripped if value))


def is_configured(provider: str, *, epoch: int) -> bool:
    """Whether ``provider`` has a key: any in the environment (``env``), or no
    "not found" from the secrets backend at this epoch (``aws``; it is asked
    by the first request)."""
    if settings.SECRETS_BACKEND == "aws":
        return _missing.get(provider) != epoch
    # On every request: no pool built, just "is any entry non-blank".
    if str(settings.PROVIDER_ENV_KEYS.get(provider) or "").strip():
        return True
    return any(value.strip() for value in settings.PROVIDER_ENV_KEY_LISTS.get(provider, ()))


async def pool(provider: str, *, epoch: int) -> tuple[ProviderKey, ...]:
    """The provider's keys (at least one); ``epoch`` is the global epoch read for this
    request. ProviderKeyUnavailable when there is none."""
    entry = _cache.get(provider)
    if entry is not None and entry.epoch == epoch and clock.now() < entry.expires_at:
        return entry.keys
    return (await _load(provider, epoch=epoch, stale=entry)).keys


# --- using the pool (the hot path: no I/O) --------------------------------------------


def in_turn(provider: str, keys: Sequence[ProviderKey]) -> list[ProviderKey]:
    """The keys to try for one request, in order: each call starts one key further
    round the pool than the last; keys benched or refused are left out (so the
    list may be empty: see ``soonest_free``)."""
    count = len(keys)
    turn = _turns.get(provider, 0)
    _turns[provider] = turn + 1
    refused = _refused.get(provider)
    if not _benched and not refused:
        return [keys[(turn + step) % count] for step in range(count)]
    now = clock.now()
    return [
        key for step in range(count) if _is_free(key := keys[(turn + step) % count], now, refused)
    ]


def _is_free(key: ProviderKey, now: float, refused: set[ProviderKey] | None) -> bool:
    if refused and key in refused:
        return False
    until = _benched.get(key)
    if until is None:
        return True
    if until > now:
        return False
    del _benched[key]
    return True


def bench(key: ProviderKey, seconds: float) -> None:
    """The provider rate-limited ``key`` (429 with Retry-After ``seconds``): this process
    leaves it out of ``in_turn`` that long (at most MAX_BENCH_SECONDS)."""
    if not seconds > 0:  # also refuses NaN
        return
    until = clock.now() + min(seconds, MAX_BENCH_SECONDS)
    if until > _benched.get(key, 0.0):
        _benched[key] = until


def soonest_free(provider: str) -> float | None:
    """Seconds until the first benched or refused key of the cached pool may be used
    again (a refused one: when the pool is next refreshed); None when none is."""
    entry = _cache.get(provider)
    if entry is None:
        return None
    now = clock.now()
    refused = _refused.get(provider, set())
    frees = []
    for key in entry.keys:
        free_at = _benched.get(key, 0.0)
        if key in refused:
            free_at = max(free_at, entry.expires_at)
        if free_at > now:
            frees.append(free_at)
    return min(frees) - now if frees else None


async def rejected(key: ProviderKey, *, epoch: int) -> None:
    """The provider refused ``key`` (401/403). Fetch the pool again, once for every
    caller refused meanwhile; if the store still gives ``key``, leave it out of
    ``in_turn`` until the pool is next refreshed (cache expiry or epoch move).
    The caller then takes ``pool()`` and ``in_turn()`` again, skipping the keys
    it already tried."""
    provider = key.provider
    _check_provider(provider)
    async with _lock(provider):
        entry = _cache.get(provider)
        # A fetch since this key was handed out has settled it already.
        settled = key in _refused.get(provider, ()) or (entry is not None and key not in entry.keys)
        if entry is not None and entry.epoch == epoch and settled:
            return
        entry = await _fetch_entry(provider, epoch=epoch, last=entry)
        if key in entry.keys:
            _refused.setdefault(provider, set()).add(key)


# --- the single-key API (callers that try one key, then one refreshed key) --------------


async def get_key(provider: str, *, epoch: int) -> ProviderKey:
    """The first key in turn (every key benched: the pool's first, for a caller that
    has no other answer than trying)."""
    keys = await pool(provider, epoch=epoch)
    turn = in_turn(provider, keys)
    return turn[0] if turn else keys[0]


async def refresh(
    provider: str, *, rejected: ProviderKey | None = None, epoch: int | None = None
) -> ProviderKey:
    """Fetch the pool again (the provider refused ``rejected``, handled as ``rejected()``
    does); one fetch serves all waiters. Returns the first key in turn."""
    entry = _cache.get(provider)
    if epoch is None:
        epoch = entry.epoch if entry is not None else 0
    if rejected is not None:
        await _reject(rejected, epoch=epoch)
    else:
        await _load(provider, epoch=epoch, stale=entry)
    return await get_key(provider, epoch=epoch)


_reject = rejected  # ``refresh`` names its argument ``rejected``


def clear_cache() -> None:
    """Forget pools, benches and turns (tests)."""
    _cache.clear()
    _missing.clear()
    _turns.clear()
    _benched.clear()
    _refused.clear()


# --- fetching -----------------------------------------------------------------------

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


async def _load(provider: str, *, epoch: int, stale: _Entry | None) -> _Entry:
    _check_provider(provider)
    async with _lock(provider):
        entry = _cache.get(provider)
        # Someone fetched while we waited: use their result.
        if entry is not None and entry is not stale and entry.epoch == epoch:
            return entry
        return await _fetch_entry(provider, epoch=epoch, last=entry)


async def _fetch_entry(provider: str, *, epoch: int, last: _Entry | None) -> _Entry:
    """Fetch and cache the pool (the caller holds the provider's lock)."""
    try:
        values = await _fetch(provider)
    except (secrets_aws.SecretsStoreUnavailable, secrets_aws.SecretNotFound) as exc:
        if isinstance(exc, secrets_aws.SecretNotFound) and last is None:
            _missing[provider] = epoch
        return _keep_last_good(provider, last, epoch, reason=type(exc).__name__)
    _missing.pop(provider, None)
    for value in values:
        register_secret(value)
    keys = tuple(ProviderKey(provider, value) for value in values)
    # A fetch that replaces a current entry is a rejection's: keys refused
    # since the last refresh stay refused. Otherwise this is the refresh.
    is_refresh = last is None or last.epoch != epoch or clock.now() >= last.expires_at
    refused = _refused.pop(provider, set())
    if not is_refresh and refused & set(keys):
        _refused[provider] = refused & set(keys)
    # A bench ends with its Retry-After, when its key is rotated out (nothing would
    # clear it otherwise), or when the epoch moves on: keys or routes were changed
    # by an operator, who should see the provider tried again at once. (Epochs only
    # grow; 0 is a process's first request, which may not have read it yet.)
    is_new_epoch = last is not None and 0 < last.epoch < epoch
    for key in [
        key for key in _benched if key.provider == provider and (is_new_epoch or key not in keys)
    ]:
        del _benched[key]
    lifetime = float(settings.SECRET_CACHE_SECONDS)
    entry = _cache[provider] = _Entry(keys=keys, epoch=epoch, expires_at=clock.now() + lifetime)
    return entry


def _keep_last_good(provider: str, entry: _Entry | None, epoch: int, *, reason: str) -> _Entry:
    if entry is None:
        logger.error("no %s key: the secrets backend gave none (%s)", provider, reason)
        raise ProviderKeyUnavailable()
    logger.warning(
        "keeping the last good %s keys: the secrets backend failed (%s)",
        provider,
        reason,
    )
    retry_at = clock.now() + RETRY_AFTER_FAILURE_SECONDS
    kept = _cache[provider] = _Entry(keys=entry.keys, epoch=epoch, expires_at=retry_at)
    return kept


async def _fetch(provider: str) -> tuple[str, ...]:
    if settings.SECRETS_BACKEND == "aws":
        name = secrets_aws.secret_name(provider)
        text = await asyncio.to_thread(secrets_aws.get_secret, name)
        try:
            values = decode_pool(text)
        except UnusableSecret:
            logger.error(
                "the %s secret %s is JSON but not a non-empty list of non-empty strings: "
                "no usable key in it",
                provider,
                name,
            )
            raise
    else:
        values = env_pool(provider)
    if not values:
        raise secrets_aws.SecretNotFound(provider)
    return values


# --- storing (rotate_key) -----------------------------------------------------------


def stored_pool(provider: str) -> tuple[ProviderKey, ...]:
    """The pool the ``aws`` backend holds now (empty when the secret is missing).
    SecretsStoreUnavailable or UnusableSecret otherwise. Blocking."""
    _check_provider(provider)
    try:
        text = secrets_aws.get_secret(secrets_aws.secret_name(provider))
    except secrets_aws.SecretNotFound:
        return ()
    return tuple(ProviderKey(provider, value) for value in decode_pool(text))


def store_pool(provider: str, values: Sequence[str]) -> None:
    """Write a pool to the ``aws`` backend (``rotate_key``); the caller bumps the epoch.

    One key is stored as a plain string, so gateways that predate pools keep
    reading it; several as a JSON list."""
    _check_provider(provider)
    unique = _unique(values)
    if not unique:
        raise ValueError("a pool holds at least one key")
    text = unique[0] if len(unique) == 1 else json.dumps(list(unique))
    secrets_aws.put_secret(secrets_aws.secret_name(provider), text)
