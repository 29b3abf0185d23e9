"""Rolling windows: the counting rules both limiter backends implement.

Two mechanisms, chosen by the size of the limit (docs/rate-limits.md):

* **Sub-bucket window** (daily layers, registrations and auth failures per
  hour). Time is cut into fixed buckets of ``bucket_seconds``; a request is
  counted in the bucket it arrived in, and a bucket stays counted while it is
  one of the last ``buckets = seconds / bucket_seconds + 1`` buckets. A
  request at ``t`` in bucket ``[s, s + bucket_seconds)`` therefore stops
  counting at ``s + seconds + bucket_seconds``: no earlier than ``t +
  seconds`` (so the window never admits more than its limit inside any
  ``seconds``) and at most one bucket later. Memory is at most ``buckets``
  counters per key, whatever the traffic.
* **Sliding log** (the per-minute burst): the exact timestamps of at most
  ``limit`` requests; a slot frees exactly ``seconds`` after its request, so
  there is no double burst at a minute boundary.

A token bucket or GCRA would refill during the window and admit more than
"100 a day" inside a rolling day; that is why neither is used.

The Redis backend implements the same rules in Lua (``backends/lua``); the
classes below are the in-process implementation and the reference.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WindowSpec:
    seconds: int
    bucket_seconds: int

    @property
    def buckets(self) -> int:
        """Buckets that are counted at any moment (the current one included)."""
        return self.seconds // self.bucket_seconds + 1

    def bucket_of(self, now: float) -> int:
        return math.floor(now / self.bucket_seconds)

    def frees_at(self, bucket: int) -> float:
        """When a request counted in ``bucket`` stops counting."""
        return float((bucket + self.buckets) * self.bucket_seconds)


# 120 buckets of 12 minutes: a daily slot frees between 24 h and 24 h 12 min
# after its request. 121 live buckets plus two bookkeeping fields stay under
# Redis's default hash-max-listpack-entries (128), so a busy device's window
# keeps Redis's compact encoding (a few hundred bytes, not ~10 KB).
DAY = WindowSpec(seconds=86400, bucket_seconds=720)
# Registrations and authentication failures per hour: one-minute buckets.
HOUR = WindowSpec(seconds=3600, bucket_seconds=60)
BURST_SECONDS = 60


class BucketWindow:
    """Counts per bucket, their total, and the oldest bucket that may be non-empty."""

    __slots__ = ("counts", "oldest", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.oldest = 0

    def prune(self, spec: WindowSpec, bucket: int) -> int:
        """Forget buckets that left the window; returns the count inside it."""
        if self.total <= 0:
            self.counts.clear()
            self.total = 0
            self.oldest = bucket
            return 0
        lowest = bucket - spec.buckets + 1
        if self.oldest < lowest:
            for stale in [b for b in self.counts if b < lowest]:
                self.total -= self.counts.pop(stale)
            self.oldest = min(self.counts, default=bucket)
        return self.total

    def add(self, bucket: int, count: int = 1) -> None:
        if self.total <= 0 or bucket < self.oldest:
            self.oldest = bucket
        self.counts[bucket] = self.counts.get(bucket, 0) + count
        self.total += count

    def reset_at(self, spec: WindowSpec, need: int, now: float) -> float:
        """When ``need`` counted requests will have left the window (``now`` if none)."""
        if self.total <= 0 or need <= 0:
            return now
        freed = 0
        for bucket in sorted(self.counts):
            freed += self.counts[bucket]
            if freed >= need:
                return spec.frees_at(bucket)
        return spec.frees_at(max(self.counts))

    def is_idle(self, spec: WindowSpec, now: float) -> bool:
        return self.prune(spec, spec.bucket_of(now)) == 0


class SlidingLog:
    """The exact times of the requests of the last ``seconds`` (at most the limit)."""

    __slots__ = ("times",)

    def __init__(self) -> None:
        self.times: list[float] = []

    def prune(self, seconds: float, now: float) -> int:
        # A request at t stops counting at t + seconds exactly.
        cut = bisect.bisect_right(self.times, now - seconds)
        if cut:
            del self.times[:cut]
        return len(self.times)

    def add(self, now: float) -> None:
        bisect.insort(self.times, now)  # sorted even if the clock stepped back

    def reset_at(self, seconds: float, need: int, now: float) -> float:
        if not self.times or need <= 0:
            return now
        return self.times[min(need, len(self.times)) - 1] + seconds
