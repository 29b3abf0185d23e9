"""Admission backends: Redis (production) and in-process (embedded), one interface."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from usage.backends.base import Backend

_instances: dict[str, Backend] = {}


def get_backend() -> Backend:
    """The backend named by ``settings.GATEWAY_STORE`` (read at call time)."""
    name = settings.GATEWAY_STORE
    backend = _instances.get(name)
    if backend is None:
        if name == "redis":
            from usage.backends.redis import RedisBackend

            backend = RedisBackend()
        elif name == "memory":
            from usage.backends.memory import MemoryBackend

            backend = MemoryBackend()
        else:
            raise ImproperlyConfigured(f"GATEWAY_STORE must be 'redis' or 'memory', got {name!r}")
        _instances[name] = backend
    return backend


def reset_memory_backend() -> None:
    """Forget the in-process store's state, as a process restart would (tests)."""
    from usage.backends.memory import MemoryBackend

    backend = _instances.get("memory")
    if isinstance(backend, MemoryBackend):
        backend.reset()
