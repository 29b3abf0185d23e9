"""Helpers shared by the device tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

from devices.models import Device

P = ParamSpec("P")
R = TypeVar("R")

REGISTRATION = {"deviceName": "Ada's laptop", "platform": "macos", "version": "1.4.2"}


@dataclass
class Registered:
    device: Device
    token: str

    @property
    def id(self) -> str:
        return self.device.pk

    def bearer(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def pair(self) -> dict[str, str]:
        return {"x-device-id": self.id, "x-session-token": self.token}


class Answer(Protocol):
    """What assert_error reads of a response: Django's test client's or httpx's."""

    @property
    def status_code(self) -> int: ...

    @property
    def content(self) -> bytes: ...

    def json(self) -> Any: ...


def assert_error(response: Answer, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    return error


def in_thread(function: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``sync_to_async`` that gives the thread's connection back (see gateway.core.db.run_sync)."""
    from gateway.core.db import run_sync

    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return await run_sync(function, *args, **kwargs)

    return call
