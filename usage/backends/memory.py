"""The in-process backend (embedded profile): the same rules under one lock.

Everything lives in this process, so it is exact only with a single worker
(system check ``hanzo.W001`` warns otherwise). The lock is a
``threading.Lock`` held only around pure computation, never across an
``await``: the event loop and Django's sync threads (admin, commands) share
it safely. Memory is bounded: idle windows and old budget days are swept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.core.store import read_versions
from usage.backends import base
from usage.backends.memory_breakers import BreakerTable
from usage.types import AdmitStatus, LayerName, Refusal
from usage.windows import BucketWindow, SlidingLog, WindowSpec

AUTOMATIC_PAUSE_REASON = "daily budget exhausted"
SWEEP_EVERY_SECONDS = 600
DAYS_KEPT = 3


@dataclass
class _Money:
    spent: int = 0
    reserved: int = 0


@dataclass
class _Day:
    total: _Money = field(default_factory=_Money)
    devices: dict[str, _Money] = field(default_factory=dict)
    open: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # amount, device, process
    expired: dict[str, int] = field(default_factory=dict)  # request id -> amount counted
    orphans: set[str] = field(default_factory=set)
    is_floor_paused: bool = False  # the automatic pause fired for this day

    def device(self, device_id: str) -> _Money:
        return self.devices.setdefault(device_id, _Money())

    def spend(self, device_id: str, amount: int) -> None:
        self.total.spent += amount
        self.device(device_id).spent += amount


class MemoryBackend(base.Backend):
    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._incarnation = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything, as a restarted process would (tests)."""
        with self._lock:
            self._windows: dict[str, tuple[WindowSpec, BucketWindow]] = {}
            self._logs: dict[str, SlidingLog] = {}
            self._days: dict[str, _Day] = {}
            self._heartbeats: dict[str, float] = {}  # process id -> time.monotonic() of its beat
            self._in_flight: dict[str, dict[str, str]] = {}  # device -> request id -> process
            self._pause: base.Pause | None = None
            self._generation: str | None = None
            self._rebuild_lock: tuple[str, float] | None = None
            self._blocks: dict[str, float] = {}
            self._sets: dict[str, tuple[set[str], float]] = {}  # key -> (members, expires at)
            self._breakers = BreakerTable()
            self._last_sweep = 0.0
            self._incarnation += 1

    # --- helpers (called with the lock held) ---------------------------------

    def _window(self, window_key: str, spec: WindowSpec) -> BucketWindow:
        entry = self._windows.get(window_key)
        if entry is None:
            entry = self._windows[window_key] = (spec, BucketWindow())
        return entry[1]

    def _log(self, log_key: str) -> SlidingLog:
        log = self._logs.get(log_key)
        if log is None:
            log = self._logs[log_key] = SlidingLog()
        return log

    def _day(self, day: str) -> _Day:
        entry = self._days.get(day)
        if entry is None:
            entry = self._days[day] = _Day()
            for stale in sorted(self._days)[:-DAYS_KEPT]:
                del self._days[stale]
        return entry

    # Liveness is real time, as redis' heartbeat keys (PX): see usage.liveness.
    def _is_alive(self, process_id: str, liveness: float) -> bool:
        beat = self._heartbeats.get(process_id)
        return beat is not None and beat + liveness > time.monotonic()

    def _purge_dead(self, liveness: float) -> bool:
        """Reservations of dead processes count as spent at their amount (see redis' purge)."""
        now = time.monotonic()
        dead = {
            process_id for process_id, beat in self._heartbeats.items() if beat + liveness <= now
        }
        if not dead:
            return False  # every admission writes its process's heartbeat first: none is unknown
        for process_id in dead:
            del self._heartbeats[process_id]
        for day in self._days.values():
            for request_id, (amount, device_id, process_id) in list(day.open.items()):
                if process_id not in dead:
                    continue
                del day.open[request_id]
                day.total.reserved -= amount
                day.device(device_id).reserved -= amount
                day.spend(device_id, amount)
                day.expired[request_id] = amount
                self._in_flight.get(device_id, {}).pop(request_id, None)
        return True

    def _pause_if_spent(
        self, day: _Day, budget: int, floor: int, now: float, next_day_at: float
    ) -> bool:
        """Less than the floor left, once a day (see redis' pause_if_spent): pause till tomorrow."""
        if budget - day.total.spent >= floor or day.is_floor_paused:
            return False
        day.is_floor_paused = True
        if self._current_pause(now) is not None:
            return False
        self._pause = base.Pause(AUTOMATIC_PAUSE_REASON, True, now, next_day_at)
        return True

    def _current_pause(self, now: float) -> base.Pause | None:
        pause = self._pause
        if pause is not None and pause.until is not None and now >= pause.until:
            self._pause = pause = None
        return pause

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < SWEEP_EVERY_SECONDS:
            return
        self._last_sweep = now
        for window_key, (spec, window) in list(self._windows.items()):
            if window.is_idle(spec, now):
                del self._windows[window_key]
        for log_key, log in list(self._logs.items()):
            if log.prune(60, now) == 0:
                del self._logs[log_key]
        for ip, until in list(self._blocks.items()):
            if until <= now:
                del self._blocks[ip]
        for device_id, in_flight in list(self._in_flight.items()):
            if not in_flight:
                del self._in_flight[device_id]
        for set_key, (_, expires_at) in list(self._sets.items()):
            if expires_at <= now:
                del self._sets[set_key]

    # --- admission ----------------------------------------------------------

    async def admit(self, plan: base.AdmitPlan) -> base.Outcome:
        if plan.expect is not None:
            return base.STALE  # no cached view to confirm here: the caller takes the usual path
        with self._lock:
            return self._admit(plan)

    def _admit(self, plan: base.AdmitPlan) -> base.Outcome:
        if self._generation is None:
            return base.NOT_LIVE
        now = plan.now
        self._sweep(now)
        bucket = plan.day_spec.bucket_of(now)
        counts: dict[LayerName, int] = {}
        for layer, layer_key in plan.keys.items():
            if layer == "burst":
                counts[layer] = self._log(layer_key).prune(plan.burst_seconds, now)
            else:
                counts[layer] = self._window(layer_key, plan.day_spec).prune(plan.day_spec, bucket)

        def reply(
            status: AdmitStatus, refused: Refusal | None = None, **fields: Any
        ) -> base.Outcome:
            return base.Outcome(
                status,
                refused,
                generation=self._generation or "",
                counts=self._layer_state(plan, counts, refused),
                **fields,
            )

        if plan.is_peek:
            return reply("peek")
        day = self._day(plan.budget_day)
        if plan.request_id in day.open:
            raise ValueError(f"request id {plan.request_id!r} already holds a reservation")
        self._heartbeats[plan.process_id] = time.monotonic()
        auto_paused = self._purge_dead(plan.liveness_seconds) and self._pause_if_spent(
            day, plan.budget_micro_usd, plan.pause_below_micro_usd, now, plan.next_day_at
        )
        pause = self._current_pause(now)
        if pause is not None:
            return reply("refused", "paused", pause=pause, auto_paused=auto_paused)
        for layer in base.RATE_LAYERS:
            if layer in counts and counts[layer] >= plan.limits[layer]:
                return reply("refused", layer)
        in_flight = self._in_flight.setdefault(plan.device_id, {})
        if len(in_flight) >= plan.concurrency_limit:
            for request_id, process_id in list(in_flight.items()):
                if not self._is_alive(process_id, plan.liveness_seconds):
                    del in_flight[request_id]
            if len(in_flight) >= plan.concurrency_limit:
                return reply("refused", "concurrency")
        refusal = self._check_budgets(plan, day)
        if refusal is not None:
            return reply("refused", **refusal)

        for layer, layer_key in plan.keys.items():
            if layer == "burst":
                self._log(layer_key).add(now)
            else:
                self._window(layer_key, plan.day_spec).add(bucket)
            counts[layer] += 1
        day.total.reserved += plan.reserve_micro_usd
        day.device(plan.device_id).reserved += plan.reserve_micro_usd
        day.open[plan.request_id] = (plan.reserve_micro_usd, plan.device_id, plan.process_id)
        in_flight[plan.request_id] = plan.process_id
        return reply("admitted")

    def _layer_state(
        self, plan: base.AdmitPlan, counts: dict[LayerName, int], refused: Refusal | None
    ) -> dict[LayerName, tuple[int, float]]:
        """Each layer's count and when enough of it frees for one more request."""
        result = {}
        for layer, count in counts.items():
            need = count - plan.limits[layer] + 1 if layer == refused else 1
            if layer == "burst":
                reset = self._log(plan.keys[layer]).reset_at(plan.burst_seconds, need, plan.now)
            else:
                window = self._window(plan.keys[layer], plan.day_spec)
                reset = window.reset_at(plan.day_spec, need, plan.now)
            result[layer] = (count, reset)
        return result

    def _check_budgets(self, plan: base.AdmitPlan, day: _Day) -> dict[str, Any] | None:
        """The device's cap, then the global budget; a refusal's fields, or None.

        A worst case that does not fit is refused and pauses nothing (SPEC section 2).
        """
        device = day.device(plan.device_id)
        reserve = plan.reserve_micro_usd
        cap = plan.device_cap_micro_usd
        if cap > 0 and device.spent + device.reserved + reserve > cap:
            return {"refused": "device_budget", "is_hard": device.spent + reserve > cap}
        budget = plan.budget_micro_usd
        if day.total.spent + day.total.reserved + reserve > budget:
            return {"refused": "budget", "is_hard": day.total.spent + reserve > budget}
        return None

    async def settle(
        self, reservation: base.Reservation, actual_micro_usd: int, terms: base.SettleTerms
    ) -> base.Settled | None:
        with self._lock:
            if self._generation is None:
                return None
            self._in_flight.get(reservation.device_id, {}).pop(reservation.request_id, None)
            day = self._day(reservation.budget_day)
            charged = actual_micro_usd
            entry = day.open.pop(reservation.request_id, None)
            if entry is not None:
                amount, device_id, _ = entry
                day.total.reserved -= amount
                day.device(device_id).reserved -= amount
            elif reservation.request_id in day.expired:
                charged -= day.expired.pop(reservation.request_id)
            else:
                # Unknown here: settled already, or admitted by a previous
                # incarnation of the store (restart) whose counters were rebuilt.
                if reservation.generation == self._generation:
                    return base.Settled(is_first=False)
                if reservation.request_id in day.orphans:
                    return base.Settled(is_first=False)
                day.orphans.add(reservation.request_id)
            day.spend(reservation.device_id, charged)
            paused = terms.next_day_at is not None and self._pause_if_spent(
                day,
                terms.budget_micro_usd,
                terms.pause_below_micro_usd,
                terms.now,
                terms.next_day_at,
            )
            return base.Settled(is_first=True, auto_paused=paused)

    async def heartbeat(self, process_id: str, liveness: float) -> None:
        with self._lock:
            self._heartbeats[process_id] = time.monotonic()

    # --- budget and pause ---------------------------------------------------

    def budget_sync(self, day: str, now: float, liveness: float) -> base.BudgetFigures | None:
        with self._lock:
            if self._generation is None:
                return None
            self._purge_dead(liveness)
            figures = self._days.get(day)
            if figures is None:
                return base.BudgetFigures(0, 0, self._current_pause(now))
            return base.BudgetFigures(
                figures.total.spent, max(0, figures.total.reserved), self._current_pause(now)
            )

    async def budget(self, day: str, now: float, liveness: float) -> base.BudgetFigures | None:
        return self.budget_sync(day, now, liveness)

    def set_pause(self, pause: base.Pause | None) -> None:
        with self._lock:
            self._pause = pause

    # --- rebuild ------------------------------------------------------------

    def is_live_sync(self) -> bool:
        return self._generation is not None

    async def is_live(self) -> bool:
        return self.is_live_sync()

    def take_rebuild_lock_sync(self, token: str, seconds: float) -> bool:
        with self._lock:
            held = self._rebuild_lock
            if held is not None and held[1] > time.monotonic() and held[0] != token:
                return False
            self._rebuild_lock = (token, time.monotonic() + seconds)
            return True

    async def take_rebuild_lock(self, token: str, seconds: float) -> bool:
        return self.take_rebuild_lock_sync(token, seconds)

    def load_sync(self, snapshot: base.Snapshot, token: str, generation: str) -> bool:
        with self._lock:
            held = self._rebuild_lock
            if self._generation is not None or held is None or held[0] != token:
                return False
            for window_key, buckets in snapshot.windows.items():
                window = BucketWindow()
                for bucket, count in buckets.items():
                    window.add(bucket, count)
                self._windows[window_key] = (snapshot.day_spec, window)
            for log_key, entries in snapshot.logs.items():
                log = self._logs[log_key] = SlidingLog()
                for at, _ in entries:
                    log.add(at)
            day = self._day(snapshot.budget_day)
            day.total.spent = snapshot.spent_micro_usd
            for device_id, spent in snapshot.device_spent_micro_usd.items():
                day.device(device_id).spent = spent
            if snapshot.pause is not None:
                self._pause = snapshot.pause
            self._generation = generation
            self._rebuild_lock = None
            return True

    async def load(self, snapshot: base.Snapshot, token: str, generation: str) -> bool:
        return self.load_sync(snapshot, token, generation)

    # --- guard --------------------------------------------------------------

    async def window_hit(
        self, window_key: str, spec: WindowSpec, limit: int, now: float
    ) -> base.WindowResult:
        with self._lock:
            window = self._window(window_key, spec)
            bucket = spec.bucket_of(now)
            count = window.prune(spec, bucket)
            if count >= limit:
                return base.WindowResult(
                    False, count, window.reset_at(spec, count - limit + 1, now)
                )
            window.add(bucket)
            return base.WindowResult(True, count + 1, window.reset_at(spec, 1, now))

    async def auth_failure(
        self, ip: str, spec: WindowSpec, limit: int, now: float, block_seconds: float
    ) -> float | None:
        with self._lock:
            self._sweep(now)
            window = self._window(base.auth_failure_key(ip), spec)
            bucket = spec.bucket_of(now)
            window.prune(spec, bucket)
            window.add(bucket)
            if window.total < limit:
                return None
            until = now + block_seconds
            self._blocks[ip] = until
            return until

    async def ip_lookup(self, ip: str) -> tuple[object, float | None]:
        _, epoch = await read_versions("-")
        with self._lock:
            return (epoch, self._incarnation), self._blocks.get(ip)

    def list_ip_blocks_sync(self, now: float) -> list[base.IpBlock]:
        with self._lock:
            return sorted(
                (base.IpBlock(ip, until) for ip, until in self._blocks.items() if until > now),
                key=lambda block: block.until,
            )

    def lift_ip_block_sync(self, ip: str) -> bool:
        with self._lock:
            self._windows.pop(base.auth_failure_key(ip), None)
            return self._blocks.pop(ip, None) is not None

    # --- distinct sets ------------------------------------------------------

    async def distinct_add(
        self, set_key: str, member: str, *, cap: int, now: float, ttl_seconds: float
    ) -> int:
        with self._lock:
            self._sweep(now)
            members, expires_at = self._sets.get(set_key, (set(), 0.0))
            if expires_at <= now:
                members = set()
            if member in members or len(members) > cap:
                return 0
            members.add(member)
            self._sets[set_key] = (members, now + ttl_seconds)
            return len(members)

    async def distinct_remove(self, set_key: str, member: str) -> None:
        with self._lock:
            members, _ = self._sets.get(set_key, (set(), 0.0))
            members.discard(member)

    # --- circuit breakers ---------------------------------------------------

    async def breaker_sync(
        self, counts: Sequence[base.BreakerCounts], rules: base.BreakerRules, now: float
    ) -> base.BreakerSync:
        with self._lock:
            return self._breakers.sync(counts, rules, now)

    async def breaker_claim_probe(
        self, target: str, rules: base.BreakerRules, now: float
    ) -> base.ProbeClaim:
        with self._lock:
            return self._breakers.claim_probe(target, rules, now)

    async def breaker_probe_result(
        self, target: str, is_ok: bool, rules: base.BreakerRules, now: float
    ) -> base.ProbeResult:
        with self._lock:
            return self._breakers.probe_result(target, is_ok, rules, now)

    async def breaker_release_probe(
        self, target: str, probe_until: float
    ) -> base.BreakerView | None:
        with self._lock:
            return self._breakers.release_probe(target, probe_until)

    def breaker_figures_sync(
        self, targets: Sequence[str], rules: base.BreakerRules, now: float, minutes: int
    ) -> list[base.BreakerFigures]:
        with self._lock:
            return self._breakers.figures(targets, rules, now, minutes)
