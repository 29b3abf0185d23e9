"""The Redis backend: one Lua script per operation, run with EVALSHA.

Each script is the shared helpers (``lua/common.lua``) plus the operation
(``usage.backends.scripts`` runs them). Async code runs them on the
pipelined client (``gateway.core.store.async_redis``); the few operator
operations (budget figures for a command, pause and resume, IP blocks in
the admin) use django-redis's synchronous connection.

Every key shares the ``{hz}`` hash tag, so a script may touch any of them on
any deployment; the few keys a script computes itself (the budgets of
devices whose reservations expired, the keys named in a rebuilt snapshot,
the circuit breakers it reports on) are under the same tag. Every key has a
TTL (real time, only a garbage collector: all decisions compare with the
gateway clock passed in).

Any Redis failure is ``StoreUnavailable`` (503 ``service_unavailable``):
never a 500, never an unlimited admission. The clients connect again on
the next command, so service resumes as soon as Redis answers again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.core.store import EPOCH_KEY, async_redis, sync_redis
from gateway.core.store import mget as store_mget
from usage.backends.base import (
    BUDGET_PREFIX,
    DUE_KEY,
    IP_BLOCK_INDEX_KEY,
    LIVE_KEY,
    NOT_LIVE,
    PAUSE_KEY,
    REBUILD_LOCK_KEY,
    STALE,
    AdmitPlan,
    Backend,
    BudgetFigures,
    IpBlock,
    Outcome,
    Pause,
    Reservation,
    Settled,
    SettleTerms,
    Snapshot,
    WindowResult,
    auth_failure_key,
    budget_key,
    device_budget_key,
    in_flight_key,
    ip_block_key,
    process_key,
    reservation_keys,
)
from usage.backends.redis_breakers import RedisBreakers
from usage.backends.scripts import (
    DAY_MS,
    milliseconds,
    run,
    run_sync,
    text,
    unavailable_on_error,
    window_ttl_ms,
)
from usage.types import ADMIT_STATUSES, REFUSALS, one_of
from usage.windows import BURST_SECONDS, WindowSpec

# Garbage-collection lifetimes (real milliseconds). A budget day is read and
# settled after it ends (late settles, yesterday's report): keep three days.
BUDGET_TTL_MS = 3 * DAY_MS
# The live marker is refreshed by every admission. It must outlive every
# reservation and window it vouches for; when it does expire (two idle days)
# a rebuild from the ledger is exact anyway.
LIVE_TTL_MS = 2 * DAY_MS
# An operator pause is refreshed by every refused request; the rebuild
# restores it from billing's database copy should it ever expire.
PAUSE_TTL_MS = 30 * DAY_MS
BURST_TTL_MS = 2 * BURST_SECONDS * 1000
PROCESS_PREFIX = process_key("")
IN_FLIGHT_PREFIX = in_flight_key("")


def _pause_from(fields: Sequence[Any]) -> Pause | None:
    """``[has_pause, reason, automatic, since, until]`` as the scripts return them."""
    if not int(fields[0]):
        return None
    until = text(fields[4] or "")
    return Pause(
        reason=text(fields[1] or ""),
        is_automatic=text(fields[2] or "0") == "1",
        since=float(text(fields[3] or "0") or 0),
        until=float(until) if until else None,
    )


def _pause_fields(pause: Pause) -> list[str]:
    until = "" if pause.until is None else repr(pause.until)
    return [pause.reason, "1" if pause.is_automatic else "0", repr(pause.since), until]


class RedisBackend(RedisBreakers, Backend):
    name = "redis"

    # --- admission ----------------------------------------------------------

    async def admit(self, plan: AdmitPlan) -> Outcome:
        layers = list(plan.keys)
        keys = [
            LIVE_KEY,
            PAUSE_KEY,
            budget_key(plan.budget_day),
            device_budget_key(plan.budget_day, plan.device_id),
            reservation_keys(plan.budget_day)["open"],
            DUE_KEY,
            in_flight_key(plan.device_id),
            process_key(plan.process_id),
            *(plan.keys[layer] for layer in layers),
        ]
        expected = () if plan.expect is None else plan.expect.values
        keys += [key for key, _ in expected]
        numbers = [
            repr(plan.now),
            plan.day_spec.bucket_seconds,
            plan.day_spec.buckets,
            plan.burst_seconds,
            plan.budget_micro_usd,
            plan.device_cap_micro_usd,
            plan.reserve_micro_usd,
            plan.pause_below_micro_usd,
            plan.concurrency_limit,
            repr(plan.liveness_seconds),
            repr(plan.next_day_at),
            window_ttl_ms(plan.day_spec),
            BURST_TTL_MS,
            BUDGET_TTL_MS,
            LIVE_TTL_MS,
            PAUSE_TTL_MS,
            milliseconds(plan.liveness_seconds),
            *(plan.limits[layer] for layer in layers),
        ]
        args = [
            " ".join(map(str, numbers)),
            plan.request_id,
            plan.device_id,
            "1" if plan.is_peek else "0",
            BUDGET_PREFIX,
            ",".join(layers),
            str(len(expected)),
            plan.budget_day,
            plan.process_id,
            PROCESS_PREFIX,
            IN_FLIGHT_PREFIX,
            *(value for _, value in expected),
        ]
        reply = await run("admit", keys, args)
        status = one_of(text(reply[0]), ADMIT_STATUSES)
        if status == "not_live":
            return NOT_LIVE
        if status == "stale":
            return STALE
        values = text(reply[10]).split()
        counts = {
            layer: (int(values[2 * i]), float(values[2 * i + 1])) for i, layer in enumerate(layers)
        }
        return Outcome(
            status=status,
            refused_by=one_of(text(reply[1]), REFUSALS) if reply[1] else None,
            is_hard=bool(int(reply[2])),
            auto_paused=bool(int(reply[3])),
            generation=text(reply[4]),
            counts=counts,
            pause=_pause_from(reply[5:10]),
        )

    async def settle(
        self, reservation: Reservation, actual_micro_usd: int, terms: SettleTerms
    ) -> Settled | None:
        day = reservation.budget_day
        reservations = reservation_keys(day)
        keys = [
            LIVE_KEY,
            reservations["open"],
            DUE_KEY,
            reservations["expired"],
            reservations["orphans"],
            budget_key(day),
            device_budget_key(day, reservation.device_id),
            in_flight_key(reservation.device_id),
            PAUSE_KEY,
        ]
        next_day = "-" if terms.next_day_at is None else repr(terms.next_day_at)
        numbers = [
            repr(terms.now),
            terms.budget_micro_usd,
            terms.pause_below_micro_usd,
            next_day,
            PAUSE_TTL_MS,
        ]
        args = [
            reservation.request_id,
            str(actual_micro_usd),
            reservation.generation,
            BUDGET_TTL_MS,
            day,
            " ".join(map(str, numbers)),
        ]
        result = int(await run("settle", keys, args))
        if result < 0:
            return None
        return Settled(is_first=result > 0, auto_paused=result == 2)

    async def heartbeat(self, process_id: str, liveness: float) -> None:
        with unavailable_on_error():
            await async_redis().execute(
                "SET", process_key(process_id), "1", "PX", milliseconds(liveness)
            )

    # --- budget and pause ---------------------------------------------------

    @staticmethod
    def _budget_call(day: str, now: float, liveness: float) -> tuple[list[str], list[Any]]:
        keys = [LIVE_KEY, PAUSE_KEY, budget_key(day), DUE_KEY]
        args = [repr(now), BUDGET_PREFIX, BUDGET_TTL_MS, repr(liveness)]
        return keys, [*args, PROCESS_PREFIX, IN_FLIGHT_PREFIX]

    @staticmethod
    def _budget_figures(reply: Sequence[Any]) -> BudgetFigures | None:
        if text(reply[0]) == "not_live":
            return None
        return BudgetFigures(
            spent_micro_usd=int(reply[1]),
            reserved_micro_usd=max(0, int(reply[2])),
            pause=_pause_from(reply[3:8]),
        )

    async def budget(self, day: str, now: float, liveness: float) -> BudgetFigures | None:
        call = self._budget_call(day, now, liveness)
        return self._budget_figures(await run("budget", *call))

    def budget_sync(self, day: str, now: float, liveness: float) -> BudgetFigures | None:
        call = self._budget_call(day, now, liveness)
        return self._budget_figures(run_sync("budget", *call))

    @staticmethod
    def _pause_args(pause: Pause | None) -> list[Any]:
        return [PAUSE_TTL_MS, *([] if pause is None else _pause_fields(pause))]

    def set_pause(self, pause: Pause | None) -> None:
        run_sync("set_pause", [PAUSE_KEY], self._pause_args(pause))

    # --- rebuild ------------------------------------------------------------

    async def is_live(self) -> bool:
        with unavailable_on_error():
            return bool(await async_redis().execute("EXISTS", LIVE_KEY))

    def is_live_sync(self) -> bool:
        with unavailable_on_error():
            return bool(sync_redis().exists(LIVE_KEY))

    async def take_rebuild_lock(self, token: str, seconds: float) -> bool:
        with unavailable_on_error():
            taken = await async_redis().execute(
                "SET", REBUILD_LOCK_KEY, token, "NX", "PX", int(seconds * 1000)
            )
            return taken is not None

    def take_rebuild_lock_sync(self, token: str, seconds: float) -> bool:
        with unavailable_on_error():
            return bool(sync_redis().set(REBUILD_LOCK_KEY, token, nx=True, px=int(seconds * 1000)))

    @staticmethod
    def _load_call(snapshot: Snapshot, token: str, generation: str) -> tuple[list[str], list[Any]]:
        day = snapshot.budget_day
        document: dict[str, Any] = {
            "windows": {
                key: {str(bucket): count for bucket, count in buckets.items()}
                for key, buckets in snapshot.windows.items()
            },
            "logs": {
                key: [[repr(at), member] for at, member in entries]
                for key, entries in snapshot.logs.items()
            },
            "budget_key": budget_key(day),
            "spent": str(snapshot.spent_micro_usd),
            "devices": {
                device_budget_key(day, device_id): str(spent)
                for device_id, spent in snapshot.device_spent_micro_usd.items()
            },
        }
        if snapshot.pause is not None:
            document["pause"] = _pause_fields(snapshot.pause)
        args = [
            token,
            generation,
            json.dumps(document),
            window_ttl_ms(snapshot.day_spec),
            BURST_TTL_MS,
            BUDGET_TTL_MS,
            LIVE_TTL_MS,
            PAUSE_TTL_MS,
        ]
        return [LIVE_KEY, REBUILD_LOCK_KEY, PAUSE_KEY], args

    async def load(self, snapshot: Snapshot, token: str, generation: str) -> bool:
        return int(await run("load", *self._load_call(snapshot, token, generation))) == 1

    def load_sync(self, snapshot: Snapshot, token: str, generation: str) -> bool:
        return int(run_sync("load", *self._load_call(snapshot, token, generation))) == 1

    # --- guard --------------------------------------------------------------

    async def window_hit(
        self, window_key: str, spec: WindowSpec, limit: int, now: float
    ) -> WindowResult:
        args = [repr(now), spec.bucket_seconds, spec.buckets, limit, window_ttl_ms(spec)]
        admitted, count, reset = await run("window_hit", [window_key], args)
        return WindowResult(bool(int(admitted)), int(count), float(text(reset)))

    async def auth_failure(
        self, ip: str, spec: WindowSpec, limit: int, now: float, block_seconds: float
    ) -> float | None:
        keys = [auth_failure_key(ip), ip_block_key(ip), IP_BLOCK_INDEX_KEY]
        block_ttl_ms = int(block_seconds * 1000) + 60_000
        args = [repr(now), spec.bucket_seconds, spec.buckets, limit, window_ttl_ms(spec)]
        args += [repr(float(block_seconds)), ip, block_ttl_ms]
        blocked_until = text(await run("auth_failure", keys, args))
        return float(blocked_until) if blocked_until else None

    def ip_lookup_keys(self, ip: str) -> list[str]:
        return [EPOCH_KEY, LIVE_KEY, ip_block_key(ip)]

    async def ip_lookup(self, ip: str) -> tuple[object, float | None]:
        with unavailable_on_error():
            epoch, live, block = await store_mget(*self.ip_lookup_keys(ip))
        # The live marker's generation changes when Redis lost its data, which
        # also resets the epoch counter: together they identify a configuration.
        stamp = (int(epoch or 0), text(live or b""))
        return stamp, float(text(block)) if block else None

    def list_ip_blocks_sync(self, now: float) -> list[IpBlock]:
        with unavailable_on_error():
            entries = sync_redis().zrangebyscore(
                IP_BLOCK_INDEX_KEY, f"({now!r}", "+inf", withscores=True
            )
        return [IpBlock(text(ip), float(until)) for ip, until in entries]

    def lift_ip_block_sync(self, ip: str) -> bool:
        with unavailable_on_error():
            pipe = sync_redis().pipeline(transaction=True)
            pipe.delete(ip_block_key(ip))
            pipe.delete(auth_failure_key(ip))
            pipe.zrem(IP_BLOCK_INDEX_KEY, ip)
            deleted, _, _ = pipe.execute()
        return bool(deleted)

    # --- distinct sets ------------------------------------------------------

    async def distinct_add(
        self, set_key: str, member: str, *, cap: int, now: float, ttl_seconds: float
    ) -> int:
        args = [member, cap, milliseconds(ttl_seconds)]
        return int(await run("distinct_add", [set_key], args))

    async def distinct_remove(self, set_key: str, member: str) -> None:
        with unavailable_on_error():
            await async_redis().execute("SREM", set_key, member)
