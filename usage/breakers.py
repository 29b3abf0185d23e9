"""Circuit breakers per route and per provider key, shared by every process.

The retry loop asks ``await allow(target)`` before an attempt and calls
``report(target, outcome)`` after it (or ``release(target)`` when the attempt
was not made after all); targets are ``route_target(model)`` and
``key_target(provider, key_id)``.

* **closed**: ``allow`` is True at the cost of one dictionary lookup (this
  process's view holds only the breakers that are not closed). Failures and
  timeouts are counted; ``BREAKER_FAILURES`` of them within
  ``BREAKER_WINDOW_SECONDS`` open it until ``BREAKER_COOLDOWN_SECONDS`` later.
* **open**: ``allow`` is False, without I/O, until then; afterwards one
  caller across every process claims the probe in the store (True only for
  it; the claim lapses after ``BREAKER_PROBE_SECONDS`` so a lost probe does
  not keep the breaker open).
* **half-open**: a probe is out. Its success closes the breaker, its failure
  opens it for another cool-down.

``report`` does no I/O: counts wait in this process and a background task
sends them every ``BREAKER_SYNC_SECONDS``, reading every breaker's state back
in the same round trip, so each process learns within about that long that
a breaker opened elsewhere. A probe's outcome is sent at once (spawned, off
the request's path) so the breaker closes or re-opens without waiting.

The store says which single caller opened or closed a breaker: that process
logs a warning, counts ``hanzo_breaker_transitions_total`` and calls the
hooks registered with ``on_transition`` (billing's Slack alert), once per
transition across every process. A breaker never makes the gateway fail
closed: with the store unreachable ``allow`` answers True once the cool-down
it knows of is over.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from django.conf import settings
from prometheus_client.core import GaugeMetricFamily

from gateway.core import clock, lifecycle, metrics
from gateway.core.loops import BackgroundTask
from gateway.core.store import StoreUnavailable
from usage.backends import get_backend
from usage.backends.base import BreakerCounts, BreakerRules, BreakerView
from usage.types import ATTEMPT_OUTCOMES, AttemptOutcome, BreakerState, Transition

logger = logging.getLogger(__name__)

ROUTE_PREFIX = "route:"
KEY_PREFIX = "key:"
FAILURES: frozenset[AttemptOutcome] = frozenset({"failure", "timeout"})
STATS_MINUTES = 15  # the dashboard's error rate
STATE_VALUES: dict[BreakerState, int] = {"closed": 0, "open": 1, "half_open": 2}
# A fingerprint, never a key: short, and nothing a provider key could pass for.
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def route_target(public_name: str) -> str:
    return ROUTE_PREFIX + public_name


def key_target(provider: str, key_id: str) -> str:
    """``key_id`` is a short non-reversible fingerprint of the key (it is logged and alerted)."""
    if not _KEY_ID.fullmatch(key_id) or ":" in provider:
        raise ValueError("a key breaker needs a provider and a short fingerprint of the key")
    return f"{KEY_PREFIX}{provider}:{key_id}"


@dataclass(frozen=True)
class Target:
    """A target's parts, as hooks and logs name it."""

    kind: Literal["route", "key"]
    name: str  # the public model name, or the key's provider
    key_id: str = ""

    @classmethod
    def parse(cls, target: str) -> Target:
        if target.startswith(KEY_PREFIX):
            provider, _, key_id = target.removeprefix(KEY_PREFIX).partition(":")
            return cls("key", provider, key_id)
        return cls("route", target.removeprefix(ROUTE_PREFIX))

    def describe(self) -> str:
        return f"route {self.name}" if self.kind == "route" else f"{self.name} key {self.key_id}"


TransitionHook = Callable[[Target, Transition], object]
_hooks: list[TransitionHook] = []


def on_transition(hook: TransitionHook) -> TransitionHook:
    """Call ``hook(target, "opened" | "closed")`` once per transition (billing alerts)."""
    if hook not in _hooks:
        _hooks.append(hook)
    return hook


def rules() -> BreakerRules:
    return BreakerRules(
        failures=settings.BREAKER_FAILURES,
        window_seconds=settings.BREAKER_WINDOW_SECONDS,
        cooldown_seconds=settings.BREAKER_COOLDOWN_SECONDS,
        probe_seconds=settings.BREAKER_PROBE_SECONDS,
    )


def _announce(target: str, transition: Transition) -> None:
    subject = Target.parse(target)
    if transition == "opened":
        logger.warning(
            "circuit breaker opened: %s, skipped for %g s, then one probe",
            subject.describe(),
            settings.BREAKER_COOLDOWN_SECONDS,
        )
    else:
        logger.warning("circuit breaker closed: %s, its probe succeeded", subject.describe())
    metrics.BREAKER_TRANSITIONS.labels(subject.kind, subject.name, transition).inc()
    for hook in list(_hooks):
        try:
            hook(subject, transition)
        except Exception:  # an alert's failure must not stop the sync
            logger.exception("circuit-breaker hook failed")


class Breakers:
    """One process's side: its view of the breakers not closed, what it counted
    since its last sync, and the probes it holds."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.views: dict[str, BreakerView] = {}
        self.failures: Counter[str] = Counter()
        self.attempts: dict[str, Counter[AttemptOutcome]] = {}
        self.probes: dict[str, float] = {}  # target -> the claim's end
        self.routes: set[str] = set()  # routes this process reported on (the state gauge)

    async def allow(self, target: str) -> bool:
        view = self.views.get(target)
        if view is None:
            return True
        now = clock.now()
        if now < view.open_until or now < view.probe_until:
            return False
        try:
            claim = await get_backend().breaker_claim_probe(target, rules(), now)
        except StoreUnavailable:
            return True
        self._set_view(target, claim.view)
        if claim.is_won and claim.view is not None:
            self.probes[target] = claim.view.probe_until
        return claim.is_won or claim.view is None

    def report(self, target: str, outcome: AttemptOutcome) -> None:
        if outcome not in ATTEMPT_OUTCOMES:
            raise ValueError(f"unknown attempt outcome {outcome!r}")
        if target.startswith(ROUTE_PREFIX):
            self.attempts.setdefault(target, Counter())[outcome] += 1
            route = target.removeprefix(ROUTE_PREFIX)
            self.routes.add(route)
            metrics.count_attempt(route, outcome)
        if self.probes.pop(target, None) is not None:
            # The first outcome after this process won the probe is the probe's.
            lifecycle.spawn(self._probe_result(target, is_ok=outcome not in FAILURES))
        elif outcome in FAILURES:
            self.failures[target] += 1

    def release(self, target: str) -> None:
        probe_until = self.probes.pop(target, None)
        if probe_until is None:
            return
        view = self.views.get(target)
        if view is not None:
            self.views[target] = BreakerView(view.open_until)  # this process may claim again
        lifecycle.spawn(self._release(target, probe_until))

    async def _release(self, target: str, probe_until: float) -> None:
        try:
            self._set_view(target, await get_backend().breaker_release_probe(target, probe_until))
        except StoreUnavailable:
            logger.warning("circuit breaker probe not given back: store unavailable")

    async def _probe_result(self, target: str, *, is_ok: bool) -> None:
        try:
            result = await get_backend().breaker_probe_result(target, is_ok, rules(), clock.now())
        except StoreUnavailable:
            # The claim lapses after BREAKER_PROBE_SECONDS and another probe follows.
            logger.warning("circuit breaker probe result not recorded: store unavailable")
            return
        self._set_view(target, result.view)
        if result.is_closed_by_this:
            _announce(target, "closed")

    def _set_view(self, target: str, view: BreakerView | None) -> None:
        if view is None:
            self.views.pop(target, None)
        else:
            self.views[target] = view

    def take_counts(self) -> list[BreakerCounts]:
        failures, self.failures = self.failures, Counter()
        attempts, self.attempts = self.attempts, {}
        return [
            BreakerCounts(target, failures[target], dict(attempts.get(target, {})))
            for target in failures.keys() | attempts.keys()
        ]

    async def sync(self) -> None:
        """Send the counts, then take every breaker's state as the store has it.

        Raises StoreUnavailable (the counts are dropped: a breaker is an
        estimate, and a store outage already refuses every request).
        """
        now = clock.now()
        result = await get_backend().breaker_sync(self.take_counts(), rules(), now)
        self.views = result.views
        self.probes = {
            target: probe_until
            for target, probe_until in self.probes.items()
            if target in result.views and result.views[target].probe_until > now
        }
        for target in result.opened:
            _announce(target, "opened")

    def state(self, target: str) -> BreakerState:
        view = self.views.get(target)
        return "closed" if view is None else view.state(clock.now())


_process = Breakers()


async def allow(target: str) -> bool:
    """May an attempt go to ``target``? Closed: True, with no I/O."""
    return await _process.allow(target)


def report(target: str, outcome: AttemptOutcome) -> None:
    """The outcome of an attempt ``allow`` let through (no I/O)."""
    _process.report(target, outcome)


def release(target: str) -> None:
    """``allow`` let an attempt through that was not made after all (say, every key
    of the route's provider is refused): give back the probe it may have won,
    so another request may probe now rather than after ``BREAKER_PROBE_SECONDS``."""
    _process.release(target)


def skipped_for(target: str) -> float:
    """Seconds ``allow`` will go on refusing ``target`` without asking the store (an open
    breaker's cool-down, or another request's probe); 0 when it may let one through."""
    view = _process.views.get(target)
    if view is None:
        return 0.0
    return max(0.0, max(view.open_until, view.probe_until) - clock.now())


def state(target: str) -> BreakerState:
    """This process's view of ``target`` (at most ``BREAKER_SYNC_SECONDS`` old)."""
    return _process.state(target)


async def sync() -> None:
    """Sync this process's breakers now (the background task does it periodically)."""
    await _process.sync()


def reset() -> None:
    """Forget this process's view, counts and probes, as a restart would (tests)."""
    _process.clear()


# --- The dashboard and /metrics ----------------------------------------------


@dataclass(frozen=True)
class RouteBreaker:
    route: str  # public model name
    state: BreakerState
    open_until: float | None  # gateway clock; None when closed
    failures_in_window: int  # toward opening (a closed breaker's)
    attempts: int  # over the last STATS_MINUTES
    failed: int  # failures and timeouts among them

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.attempts if self.attempts else None


def states_sync(routes: Iterable[str] = ()) -> list[RouteBreaker]:
    """Each of ``routes`` and each route with attempts in the last hour, by name,
    as the store has them. Raises StoreUnavailable."""
    now = clock.now()
    targets = [route_target(route) for route in routes]
    figures = get_backend().breaker_figures_sync(targets, rules(), now, STATS_MINUTES)
    breakers = [
        RouteBreaker(
            route=figure.target.removeprefix(ROUTE_PREFIX),
            state="closed" if figure.view is None else figure.view.state(now),
            open_until=None if figure.view is None else figure.view.open_until,
            failures_in_window=figure.failures_in_window,
            attempts=sum(figure.attempts.values()),
            failed=sum(figure.attempts.get(outcome, 0) for outcome in FAILURES),
        )
        for figure in figures
        if figure.target.startswith(ROUTE_PREFIX)
    ]
    return sorted(breakers, key=lambda breaker: breaker.route)


async def state_gauges() -> list[GaugeMetricFamily]:
    """``hanzo_breaker_state{route}``: this process's view, for the routes it knows."""
    family = GaugeMetricFamily(
        "hanzo_breaker_state",
        "Circuit breaker of a route as this process sees it: 0 closed, 1 open, 2 half-open.",
        labels=["route"],
    )
    routes = _process.routes | {
        target.removeprefix(ROUTE_PREFIX)
        for target in _process.views
        if target.startswith(ROUTE_PREFIX)
    }
    for route in sorted(routes):
        family.add_metric([route], STATE_VALUES[_process.state(route_target(route))])
    return [family]


# --- The background sync ------------------------------------------------------

_task = BackgroundTask("circuit-breaker-sync")


async def _loop() -> None:
    is_down = False
    while True:
        await asyncio.sleep(settings.BREAKER_SYNC_SECONDS)
        try:
            await _process.sync()
        except StoreUnavailable:
            if not is_down:
                logger.warning("circuit breakers: store unavailable, counts dropped meanwhile")
            is_down = True
            continue
        except Exception:  # a bug here must not stop every later sync
            logger.exception("circuit-breaker sync failed")
            continue
        is_down = False


async def start() -> None:
    _task.start(_loop)


async def stop() -> None:
    """Shutdown hook: stop syncing, and send what this process counted last."""
    await _task.stop()
    try:
        await _process.sync()
    except StoreUnavailable:
        logger.warning("circuit breakers: last counts not sent at shutdown, store unavailable")
