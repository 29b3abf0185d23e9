"""The benchmark's report: medians of the repeated runs, as Markdown tables,
ratios to the floor measured in the same run, and the issue's targets."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from bench.bench_gateway import PHASES, PhaseCount
from bench.bench_load import Sample

SCENARIOS: dict[str, tuple[int, bool]] = {  # name -> (concurrency, streamed)
    "c1": (1, False),
    "c16": (16, False),
    "c64": (64, False),
    "stream16": (16, True),
}


@dataclass
class TargetResult:
    key: str  # "fake", "floor", "gateway"
    label: str
    reason: str = ""  # why it is not available, when it is not
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    other_cpu: list[float] = field(default_factory=list)
    core_share: list[float] = field(default_factory=list)
    drain_cpu: list[float] = field(default_factory=list)
    peak_rss_mib: float | None = None

    @property
    def available(self) -> bool:
        return not self.reason

    def median(self, scenario: str, attribute: str) -> float | None:
        values = [getattr(sample, attribute) for sample in self.samples.get(scenario, [])]
        values = [value for value in values if value is not None]
        return statistics.median(values) if values else None

    def cpu_ms_per_request(self) -> float | None:
        """CPU time the target spent per request at c=16: unlike its RPS, this
        barely depends on how much of its core other work took."""
        share, rps = self.core_share, self.median("c16", "rps")
        if not share or not rps:
            return None
        return statistics.median(share) / rps * 1000

    def errors(self) -> int:
        return sum(sample.errors for samples in self.samples.values() for sample in samples)


def _ms(microseconds: float | None) -> str:
    return "–" if microseconds is None else f"{microseconds / 1000:.2f}"


def _rps(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def added_p50_us(target: TargetResult, fake: TargetResult | None) -> float | None:
    own, direct = target.median("c1", "p50_us"), fake.median("c1", "p50_us") if fake else None
    if own is None or direct is None:
        return None
    return own - direct


def results_table(results: list[TargetResult]) -> str:
    fake = next((result for result in results if result.key == "fake"), None)
    lines = [
        "| target | c=1 RPS | c=1 p50 / p99 ms | added p50 at c=1 ms | c=16 RPS "
        "| c=16 p50 / p99 ms | c=64 RPS | c=64 p50 / p99 ms | stream c=16 RPS "
        "| stream TTFB p50 ms | peak RSS MiB | CPU s after load | own CPU at c=16 "
        "| CPU ms per request at c=16 | others on its core | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        if not result.available:
            lines.append(f"| {result.label} | not available: {result.reason} |" + " |" * 14)
            continue
        cells = [result.label]
        for scenario in ("c1", "c16", "c64"):
            cells.append(_rps(result.median(scenario, "rps")))
            p50, p99 = result.median(scenario, "p50_us"), result.median(scenario, "p99_us")
            cells.append(f"{_ms(p50)} / {_ms(p99)}")
            if scenario == "c1":
                cells.append("–" if result.key == "fake" else _ms(added_p50_us(result, fake)))
        cells.append(_rps(result.median("stream16", "rps")))
        cells.append(_ms(result.median("stream16", "ttfb_p50_us")))
        cells.append("–" if result.peak_rss_mib is None else f"{result.peak_rss_mib:.0f}")
        drain = max(result.drain_cpu) if result.drain_cpu else None
        cells.append("–" if drain is None else f"{drain:.2f}")
        share = statistics.median(result.core_share) if result.core_share else None
        cells.append("–" if share is None else f"{share:.2f}")
        per_request = None if result.key == "fake" else result.cpu_ms_per_request()
        cells.append("–" if per_request is None else f"{per_request:.2f}")
        other = statistics.median(result.other_cpu) if result.other_cpu else None
        cells.append("–" if other is None else f"{other:.2f}")
        cells.append(str(result.errors()))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_table(results: list[TargetResult]) -> str:
    floor = next((r for r in results if r.key == "floor" and r.available), None)
    fake = next((r for r in results if r.key == "fake" and r.available), None)
    if floor is None:
        return "(no floor measured in this run: no ratios)"
    lines = [
        "| target | c=1 RPS × floor | c=16 RPS × floor | c=64 RPS × floor "
        "| stream c=16 RPS × floor | added p50 at c=1 − floor's, ms "
        "| floor's CPU per request ÷ target's |",
        "|---|---|---|---|---|---|---|",
    ]
    floor_added = added_p50_us(floor, fake)
    for result in results:
        if not result.available or result.key in ("floor", "fake"):
            continue
        cells = [result.label]
        for scenario in SCENARIOS:
            own, base = result.median(scenario, "rps"), floor.median(scenario, "rps")
            cells.append("–" if not own or not base else f"{own / base:.2f}")
        added = added_p50_us(result, fake)
        cells.append(
            "–" if added is None or floor_added is None else f"{(added - floor_added) / 1000:+.2f}"
        )
        own_cpu, floor_cpu = result.cpu_ms_per_request(), floor.cpu_ms_per_request()
        cells.append("–" if not own_cpu or not floor_cpu else f"{floor_cpu / own_cpu:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    if len(lines) == 2:
        lines.append("| (no other target measured) | | | | | | |")
    return "\n".join(lines)


def headroom(results: list[TargetResult]) -> str:
    """Whether the load generator (and the fake, on the same core) could have
    been the bottleneck: their direct rates against the best proxied ones."""
    fake = next((r for r in results if r.key == "fake" and r.available), None)
    proxied = [r for r in results if r.available and r.key != "fake"]
    if fake is None or not proxied:
        return "Load generator check: not possible in this run (no fake-direct or proxied row)."
    parts = []
    for scenario, label in (("c16", "non-streamed c=16"), ("stream16", "streamed c=16")):
        direct = fake.median(scenario, "rps") or 0
        best = max((r.median(scenario, "rps") or 0) for r in proxied)
        factor = f"{direct / best:.0f}×" if best else "n/a"
        parts.append(f"{label}: {direct:,.0f} req/s direct vs {best:,.0f} proxied ({factor})")
    return (
        "Load generator check (load generator and fake upstream share the load core, as they "
        "do in every proxied run): " + "; ".join(parts) + "."
    )


def _commands(counter: Counter[str] | dict[str, int], requests: int) -> str:
    if not counter:
        return "none"
    ordered = sorted(counter.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} ×{count / max(requests, 1):.2g}" for name, count in ordered)


def counts_table(label: str, count: PhaseCount) -> str:
    n = count.requests

    def row(kind: str) -> str:
        return " | ".join(f"{count.per_request(kind, phase):.2f}" for phase in PHASES)

    def names(counters: dict[str, Counter[str]]) -> str:
        return " | ".join(_commands(counters[phase], n) for phase in PHASES)

    lines = [
        f"Round trips per admitted request, {label} (warm cache, {n} requests one at a time; "
        f"upstream calls seen: {count.upstream_calls}; their usage records found in the "
        f"database: {'unknown' if count.usage_records is None else count.usage_records}):",
        "",
        "| | before the upstream call | after it | background (no request), per request |",
        "|---|---|---|---|",
        f"| Redis round trips | {row('redis')} |",
        f"| Redis commands | {names(count.redis)} |",
        f"| database statements | {row('db')} |",
        f"| statements | {names(count.db)} |",
    ]
    seen = count.monitor.get("commands")
    if seen is not None:
        scripts: Counter[str] | dict[str, int] = count.monitor.get("in_scripts") or {}
        lines += [
            "",
            f"Cross-check, Redis MONITOR on the benchmark db over the same requests: "
            f"{sum(seen.values()) / max(n, 1):.2f} commands per request "
            f"({_commands(seen, n)}), plus {sum(scripts.values()) / max(n, 1):.2f} run inside "
            f"Lua scripts ({_commands(scripts, n)}); the probe saw "
            f"{count.probe_commands() / max(n, 1):.2f} commands per request.",
        ]
    return "\n".join(lines)


def targets_check(results: list[TargetResult], count: PhaseCount | None) -> str:
    gateway = next((r for r in results if r.key == "gateway" and r.available), None)
    floor = next((r for r in results if r.key == "floor" and r.available), None)
    fake = next((r for r in results if r.key == "fake" and r.available), None)
    if gateway is None or floor is None:
        return "Issue #9 targets: not checked (no gateway or no floor row in this run)."

    def ratio(scenario: str) -> float:
        return (gateway.median(scenario, "rps") or 0) / (floor.median(scenario, "rps") or 1)

    added = added_p50_us(gateway, fake)
    checks = [
        ("non-streamed c=16 RPS ≥ 0.35 × floor", ratio("c16") >= 0.35, f"{ratio('c16'):.2f}"),
        ("streamed c=16 RPS ≥ 0.25 × floor", ratio("stream16") >= 0.25, f"{ratio('stream16'):.2f}"),
        (
            "added p50 at c=1 ≤ 1.0 ms",
            added is not None and added <= 1000,
            _ms(added) + " ms",
        ),
        (
            "peak RSS < 200 MiB",
            gateway.peak_rss_mib is not None and gateway.peak_rss_mib < 200,
            f"{gateway.peak_rss_mib or 0:.0f} MiB",
        ),
    ]
    if count is not None:
        redis_before, db_before = (
            count.per_request("redis", "before"),
            count.per_request("db", "before"),
        )
        checks.append(
            ("≤ 2 Redis round trips before upstream", redis_before <= 2, f"{redis_before:.2f}")
        )
        checks.append(("no database statement before upstream", db_before == 0, f"{db_before:.2f}"))
    lines = ["| issue #9 target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'yes' if met else 'NO'} |" for name, met, value in checks]
    return "\n".join(lines)
