"""The circuit breakers in process: the rules of ``lua/breaker_*.lua``, once more.

``MemoryBackend`` holds one ``BreakerTable`` and calls it under its lock, so
each operation is atomic as a script is in Redis. Memory is bounded: idle
failure windows and attempts older than ``BREAKER_ATTEMPTS_KEPT_SECONDS``
are swept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from usage.backends.base import (
    BREAKER_ATTEMPTS_KEPT_SECONDS,
    BreakerCounts,
    BreakerFigures,
    BreakerRules,
    BreakerSync,
    BreakerView,
    ProbeClaim,
    ProbeResult,
)
from usage.types import AttemptOutcome
from usage.windows import BucketWindow, WindowSpec

SWEEP_EVERY_SECONDS = 60


class BreakerTable:
    def __init__(self) -> None:
        self.views: dict[str, BreakerView] = {}  # every breaker not closed
        self.failures: dict[str, tuple[WindowSpec, BucketWindow]] = {}  # closed ones'
        self.attempts: dict[tuple[str, int], Counter[AttemptOutcome]] = {}  # (target, minute)
        self.counted: dict[str, float] = {}  # target -> when its attempts were last counted
        self.last_sweep = 0.0

    def sync(self, counts: Sequence[BreakerCounts], rules: BreakerRules, now: float) -> BreakerSync:
        self._sweep(now)
        minute = int(now // 60)
        opened = []
        for entry in counts:
            attempts = {outcome: n for outcome, n in entry.attempts.items() if n > 0}
            if attempts:
                self.attempts.setdefault((entry.target, minute), Counter()).update(attempts)
                self.counted[entry.target] = now
            # An open breaker counts nothing: its probe decides.
            if entry.failures <= 0 or entry.target in self.views:
                continue
            window = self._window(entry.target, rules.window)
            bucket = rules.window.bucket_of(now)
            if window.prune(rules.window, bucket) + entry.failures >= rules.failures:
                del self.failures[entry.target]
                self.views[entry.target] = BreakerView(now + rules.cooldown_seconds)
                opened.append(entry.target)
            else:
                window.add(bucket, entry.failures)
        return BreakerSync(opened=tuple(opened), views=dict(self.views))

    def claim_probe(self, target: str, rules: BreakerRules, now: float) -> ProbeClaim:
        view = self.views.get(target)
        if view is None or now < view.open_until or now < view.probe_until:
            return ProbeClaim(is_won=False, view=view)
        view = self.views[target] = BreakerView(view.open_until, now + rules.probe_seconds)
        return ProbeClaim(is_won=True, view=view)

    def probe_result(
        self, target: str, is_ok: bool, rules: BreakerRules, now: float
    ) -> ProbeResult:
        if target not in self.views:
            return ProbeResult(is_closed_by_this=False, view=None)
        if is_ok:
            del self.views[target]
            self.failures.pop(target, None)
            return ProbeResult(is_closed_by_this=True, view=None)
        view = self.views[target] = BreakerView(now + rules.cooldown_seconds)
        return ProbeResult(is_closed_by_this=False, view=view)

    def release_probe(self, target: str, probe_until: float) -> BreakerView | None:
        view = self.views.get(target)
        if view is not None and view.probe_until == probe_until:
            view = self.views[target] = BreakerView(view.open_until)
        return view

    def figures(
        self, targets: Sequence[str], rules: BreakerRules, now: float, minutes: int
    ) -> list[BreakerFigures]:
        since = now - BREAKER_ATTEMPTS_KEPT_SECONDS
        shown = [target for target, at in self.counted.items() if at >= since]
        shown += [target for target in dict.fromkeys(targets) if target not in shown]
        minute = int(now // 60)
        result = []
        for target in shown:
            attempts: Counter[AttemptOutcome] = Counter()
            for past in range(minute - minutes + 1, minute + 1):
                attempts.update(self.attempts.get((target, past), {}))
            view = self.views.get(target)
            failures = 0
            if view is None and target in self.failures:
                failures = self.failures[target][1].prune(rules.window, rules.window.bucket_of(now))
            result.append(BreakerFigures(target, view, failures, dict(attempts)))
        return result

    def _window(self, target: str, spec: WindowSpec) -> BucketWindow:
        entry = self.failures.get(target)
        if entry is None or entry[0] != spec:
            entry = self.failures[target] = (spec, BucketWindow())
        return entry[1]

    def _sweep(self, now: float) -> None:
        if now - self.last_sweep < SWEEP_EVERY_SECONDS:
            return
        self.last_sweep = now
        for target, (spec, window) in list(self.failures.items()):
            if window.is_idle(spec, now):
                del self.failures[target]
        oldest_minute = int((now - BREAKER_ATTEMPTS_KEPT_SECONDS) // 60)
        for target, minute in list(self.attempts):
            if minute < oldest_minute:
                del self.attempts[(target, minute)]
        for target, at in list(self.counted.items()):
            if at < now - BREAKER_ATTEMPTS_KEPT_SECONDS:
                del self.counted[target]
