"""The circuit breakers in Redis: ``lua/breaker_*.lua``, one script per operation.

A breaker that is not closed is a hash (``until``, and ``probe`` while one is
claimed) named in one sorted set, which every process reads back at each
sync: the work of a sync grows with the breakers not closed, not with all
of them. A closed breaker is at most its failure window (one-second
buckets); a target's attempts are one hash per minute, by outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from usage.backends.base import (
    BREAKER_ATTEMPTS_KEPT_SECONDS,
    BREAKER_ATTEMPTS_PREFIX,
    BREAKER_FAILURES_PREFIX,
    BREAKER_STATE_PREFIX,
    BREAKERS_COUNTED_KEY,
    BREAKERS_OPEN_KEY,
    BreakerCounts,
    BreakerFigures,
    BreakerRules,
    BreakerStore,
    BreakerSync,
    BreakerView,
    ProbeClaim,
    ProbeResult,
    breaker_attempts_key,
    breaker_failures_key,
    breaker_state_key,
)
from usage.backends.scripts import DAY_MS, run, run_sync, text, window_ttl_ms
from usage.types import ATTEMPT_OUTCOMES, AttemptOutcome, one_of

# A breaker not closed is refreshed by every transition and probe; should one
# go a day without either it expires, closed (failures would open it again).
STATE_TTL_MS = DAY_MS
ATTEMPTS_TTL_MS = (BREAKER_ATTEMPTS_KEPT_SECONDS + 300) * 1000


def _view(open_until: Any, probe_until: Any) -> BreakerView | None:
    """A breaker's view from the scripts' ``until`` and ``probe`` ('' = none)."""
    until = text(open_until or "")
    if not until:
        return None
    probe = text(probe_until or "")
    return BreakerView(float(until), float(probe) if probe else 0.0)


def _attempts_text(attempts: Mapping[AttemptOutcome, int]) -> str:
    return " ".join(f"{outcome} {count}" for outcome, count in attempts.items() if count > 0)


def _attempts_from(value: Any) -> dict[AttemptOutcome, int]:
    words = text(value or "").split()
    return {
        one_of(outcome, ATTEMPT_OUTCOMES): int(count)
        for outcome, count in zip(words[::2], words[1::2], strict=True)
    }


class RedisBreakers(BreakerStore):
    async def breaker_sync(
        self, counts: Sequence[BreakerCounts], rules: BreakerRules, now: float
    ) -> BreakerSync:
        minute = int(now // 60)
        keys = [BREAKERS_OPEN_KEY, BREAKERS_COUNTED_KEY]
        args: list[Any] = [
            repr(now),
            rules.failures,
            rules.window.buckets,
            repr(rules.cooldown_seconds),
            STATE_TTL_MS,
            window_ttl_ms(rules.window),
            ATTEMPTS_TTL_MS,
            BREAKER_ATTEMPTS_KEPT_SECONDS,
            BREAKER_STATE_PREFIX,
        ]
        for entry in counts:
            keys += [
                breaker_state_key(entry.target),
                breaker_failures_key(entry.target),
                breaker_attempts_key(entry.target, minute),
            ]
            args += [entry.target, entry.failures, _attempts_text(entry.attempts)]
        opened, flat = await run("breaker_sync", keys, args)
        views = {}
        for i in range(0, len(flat), 3):
            view = _view(flat[i + 1], flat[i + 2])
            if view is not None:
                views[text(flat[i])] = view
        return BreakerSync(opened=tuple(text(target) for target in opened), views=views)

    async def breaker_claim_probe(self, target: str, rules: BreakerRules, now: float) -> ProbeClaim:
        args = [repr(now), repr(rules.probe_seconds), STATE_TTL_MS]
        won, until, probe = await run("breaker_claim", [breaker_state_key(target)], args)
        return ProbeClaim(is_won=bool(int(won)), view=_view(until, probe))

    async def breaker_probe_result(
        self, target: str, is_ok: bool, rules: BreakerRules, now: float
    ) -> ProbeResult:
        keys = [breaker_state_key(target), breaker_failures_key(target), BREAKERS_OPEN_KEY]
        args = [repr(now), "1" if is_ok else "0", repr(rules.cooldown_seconds), STATE_TTL_MS]
        closed, until = await run("breaker_probe", keys, [*args, target])
        return ProbeResult(is_closed_by_this=bool(int(closed)), view=_view(until, ""))

    async def breaker_release_probe(self, target: str, probe_until: float) -> BreakerView | None:
        until, probe = await run(
            "breaker_release", [breaker_state_key(target)], [repr(probe_until)]
        )
        return _view(until, probe)

    def breaker_figures_sync(
        self, targets: Sequence[str], rules: BreakerRules, now: float, minutes: int
    ) -> list[BreakerFigures]:
        args: list[Any] = [
            repr(now),
            rules.window.buckets,
            minutes,
            BREAKER_ATTEMPTS_KEPT_SECONDS,
            BREAKER_STATE_PREFIX,
            BREAKER_FAILURES_PREFIX,
            BREAKER_ATTEMPTS_PREFIX,
            *targets,
        ]
        flat = run_sync("breaker_figures", [BREAKERS_COUNTED_KEY], args)
        return [
            BreakerFigures(
                target=text(flat[i]),
                view=_view(flat[i + 1], flat[i + 2]),
                failures_in_window=int(flat[i + 3]),
                attempts=_attempts_from(flat[i + 4]),
            )
            for i in range(0, len(flat), 5)
        ]
