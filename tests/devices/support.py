"""Helpers shared by the device tests."""

from __future__ import annotations

from dataclasses import dataclass

from devices.models import Device

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


def assert_error(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    return error


def in_thread(function):  # type: ignore[no-untyped-def]
    """``sync_to_async`` that gives the thread's connection back (see gateway.core.db.run_sync)."""
    from gateway.core.db import run_sync

    async def call(*args, **kwargs):  # type: ignore[no-untyped-def]
        return await run_sync(function, *args, **kwargs)

    return call
