"""What the library comparisons share (docs/benchmarks.md, *Libraries considered*).

``bench_caches``, ``bench_csp``, ``bench_fakeredis`` and ``bench_sse`` each set
one of the project's own modules against a library it does not install: each
takes ``--rounds``, skips itself (status 0, nothing measured) when its library
is missing, and reports medians over rounds, every round measuring every
variant once so that a noisy moment of this shared machine lands on all of them.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)


def parser(doc: str, rounds: int) -> argparse.ArgumentParser:
    """The command line of a script with docstring ``doc``: ``--rounds`` (default ``rounds``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=rounds)
    return parser


def skipped(script: str, library: str) -> int:
    """Say that ``script`` measured nothing, ``library`` missing; its exit status (0)."""
    print(f"{script}: skipped, {library} is not installed", file=sys.stderr)
    return 0


def embedded_django(var_prefix: str, environ: Mapping[str, str] | None = None) -> None:
    """Django on the embedded profile (no DATABASE_URL, no REDIS_URL), with a
    private VAR_DIR named after ``var_prefix`` and ``environ`` on top."""
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ["SECRET_KEY"] = "bench-only"
    var_dir = tempfile.mkdtemp(prefix=f"{var_prefix}-")
    atexit.register(shutil.rmtree, var_dir, ignore_errors=True)
    os.environ["VAR_DIR"] = var_dir
    os.environ.update(environ or {})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    import django

    django.setup()


def per_item(run: Callable[[], object], items: int, unit: float = 1e6) -> float:
    """The wall time of one ``run()`` per item, in 1/``unit`` seconds (microseconds)."""
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * unit / items


def medians(rounds: int, measures: Mapping[Key, Callable[[], float]]) -> dict[Key, float]:
    """Each measure's median over ``rounds`` rounds, each round calling every measure once."""
    runs: dict[Key, list[float]] = {key: [] for key in measures}
    for _ in range(rounds):
        for key, measure in measures.items():
            runs[key].append(measure())
    return {key: statistics.median(values) for key, values in runs.items()}
