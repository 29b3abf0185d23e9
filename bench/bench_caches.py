"""Benchmark (not a test): a lookup in the hand-written bounded caches vs cachetools.

    /tmp/libs-venv/bin/python bench/bench_caches.py [--rounds R]

The caches measured, each as the gateway uses it:

* ``devices/suspicious.py``: an ``OrderedDict`` LRU of (device, address, day)
  sightings under a ``threading.Lock``; a hit is ``key in d`` +
  ``move_to_end``, a miss inserts and evicts with ``popitem(last=False)``.
* ``devices/auth.py``: a plain ``dict`` of token hash -> entry, emptied
  whole when it reaches its bound (no lock: the event loop's thread only);
  freshness is decided by versions and ``loaded_at``, not by the cache.

against ``cachetools.LRUCache`` and ``cachetools.TTLCache`` doing the same
(under the same lock where the original takes one: cachetools' caches are
not thread-safe). Figures: nanoseconds per operation, median of ``--rounds``
timeit runs, and the ratio to the hand-written code.

Needs ``cachetools`` (not in requirements*.txt); without it the script says
so and exits with status 0 having measured nothing.
"""

from __future__ import annotations

import random
import sys
import threading
import timeit
from collections import OrderedDict
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

# Run as a script (``python bench/bench_caches.py``): the project's root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.libraries import medians, parser, skipped

try:
    import cachetools
except ImportError:
    cachetools = None

SIZE = 50_000  # REMEMBERED_SIGHTINGS
LOOKUPS = 100_000


def sightings_keys(count: int) -> list[tuple[str, str, date]]:
    day = date(2026, 12, 6)
    return [(f"dev_{n:024x}", f"203.0.{n // 256 % 256}.{n % 256}", day) for n in range(count)]


def build(rounds: int) -> dict[str, dict[str, float]]:
    rng = random.Random(7)
    keys = sightings_keys(SIZE)
    hits = [rng.choice(keys) for _ in range(LOOKUPS)]
    fresh = sightings_keys(SIZE + LOOKUPS)[SIZE:]  # misses: new pairs, each evicts one
    lock = threading.Lock()

    ordered: OrderedDict[tuple[str, str, date], None] = OrderedDict.fromkeys(keys)
    lru = cachetools.LRUCache(maxsize=SIZE)
    ttl = cachetools.TTLCache(maxsize=SIZE, ttl=86_400)
    for key in keys:
        lru[key] = None
        ttl[key] = None

    def ordered_hit() -> None:  # devices/suspicious.py: _seen_before
        for key in hits:
            with lock:
                if key in ordered:
                    ordered.move_to_end(key)

    def lru_hit() -> None:
        for key in hits:
            with lock:
                lru.get(key, True)  # a get (not ``in``) is what marks it recently used

    def ttl_hit() -> None:
        for key in hits:
            with lock:
                ttl.get(key, True)

    def ordered_insert() -> None:  # devices/suspicious.py: _remember
        for key in fresh:
            with lock:
                ordered[key] = None
                while len(ordered) > SIZE:
                    ordered.popitem(last=False)

    def lru_insert() -> None:
        for key in fresh:
            with lock:
                lru[key] = None

    def ttl_insert() -> None:
        for key in fresh:
            with lock:
                ttl[key] = None

    tokens = [f"{n:064x}" for n in range(SIZE)]
    token_hits = [rng.choice(tokens) for _ in range(LOOKUPS)]
    plain = dict.fromkeys(tokens, "entry")
    token_lru = cachetools.LRUCache(maxsize=100_000)
    for token in tokens:
        token_lru[token] = "entry"

    def dict_get() -> None:  # devices/auth.py: _entries.get(digest)
        for token in token_hits:
            plain.get(token)

    def lru_get_unlocked() -> None:
        for token in token_hits:
            token_lru.get(token)

    cases = {
        "sighting hit": {
            "OrderedDict + move_to_end": ordered_hit,
            "cachetools LRUCache.get": lru_hit,
            "cachetools TTLCache.get": ttl_hit,
        },
        "sighting insert + evict": {
            "OrderedDict + popitem": ordered_insert,
            "cachetools LRUCache set": lru_insert,
            "cachetools TTLCache set": ttl_insert,
        },
        "token lookup (no lock)": {
            "dict.get": dict_get,
            "cachetools LRUCache.get": lru_get_unlocked,
        },
    }

    def measure(case: str, function: Callable[[], None]) -> Callable[[], float]:
        def ns_per_operation() -> float:
            seconds = timeit.timeit(function, number=1)
            # The insert cases mutate their cache: each run is one pass over
            # ``fresh``, the next run's keys are already present (a set),
            # so only the first run measures evictions; rebuild instead.
            if case.startswith("sighting insert"):
                reset_inserted(ordered, lru, ttl, keys)
            return seconds * 1e9 / LOOKUPS

        return ns_per_operation

    results = medians(
        rounds,
        {
            (case, name): measure(case, function)
            for case, variants in cases.items()
            for name, function in variants.items()
        },
    )
    return {
        case: {name: results[case, name] for name in variants} for case, variants in cases.items()
    }


def reset_inserted(ordered: OrderedDict[Any, Any], lru: Any, ttl: Any, keys: Any) -> None:
    ordered.clear()
    ordered.update(OrderedDict.fromkeys(keys))
    lru.clear()
    ttl.clear()
    for key in keys:
        lru[key] = None
        ttl[key] = None


def main() -> int:
    arguments = parser(__doc__, rounds=7).parse_args()
    if cachetools is None:
        return skipped("bench_caches", "cachetools")
    print(
        f"cachetools {cachetools.__version__}, Python {sys.version.split()[0]}; "
        f"{SIZE:,} entries, {LOOKUPS:,} operations per run, median of {arguments.rounds} runs"
    )
    for case, variants in build(arguments.rounds).items():
        print(f"{case}:")
        base = next(iter(variants.values()))
        for name, ns in variants.items():
            print(f"  {name:<28}{ns:>8.0f} ns/op{ns / base:>7.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
