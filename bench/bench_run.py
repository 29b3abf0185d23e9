"""``make bench``: the gateway's hot path against a bare pass-through floor and
the fake upstream itself, on this machine, in one run. docs/benchmarks.md
explains the protocol and the figures.

Settings (environment): BENCH_SECONDS (per measurement, default 4),
BENCH_REPEAT (runs per measurement, medians reported; default 3),
BENCH_TARGETS (default ``fake,floor,gateway``; ``floor_httpx`` adds the floor
on httpx's default transport), BENCH_DATABASE_URL (default
``postgres://postgres@127.0.0.1:5432/hanzo_bench``, dropped and recreated),
BENCH_REDIS_URL (default ``redis://127.0.0.1:6379/8``, flushed),
BENCH_COUNT_REQUESTS (requests counted for round trips, default 20),
BENCH_NICE (e.g. -5: run ahead of other work on a shared machine; root only),
BENCH_PROFILE=1 (also profile the gateway under load with pyinstrument).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import platform
import sys
import time
from dataclasses import dataclass

import httpx

from bench import bench_gateway as gw
from bench.bench_load import LOAD_CORE, Sample, ensure_wrk, run_client, run_wrk
from bench.bench_processes import (
    ARTIFACTS,
    Process,
    busy_seconds,
    children_cpu_seconds,
    cpu_seconds,
    peak_rss_mib,
    pinning_available,
    start,
)
from bench.bench_report import (
    SCENARIOS,
    TargetResult,
    counts_table,
    headroom,
    ratio_table,
    results_table,
    targets_check,
)
from bench.bench_upstream import OPENAI_KEY
from tests.support.processes import free_port

TARGET_CORE = 1
MODEL = "openai-gpt-4o"
BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 32}
)
STREAM_BODY = json.dumps({**json.loads(BODY), "stream": True})


@dataclass(frozen=True)
class Config:
    seconds: float
    repeat: int
    targets: tuple[str, ...]
    database_url: str
    redis_url: str
    count_requests: int
    profile: bool

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            seconds=float(os.environ.get("BENCH_SECONDS") or 4),
            repeat=int(os.environ.get("BENCH_REPEAT") or 3),
            targets=tuple((os.environ.get("BENCH_TARGETS") or "fake,floor,gateway").split(",")),
            database_url=os.environ.get("BENCH_DATABASE_URL")
            or "postgres://postgres@127.0.0.1:5432/hanzo_bench",
            redis_url=os.environ.get("BENCH_REDIS_URL") or "redis://127.0.0.1:6379/8",
            count_requests=int(os.environ.get("BENCH_COUNT_REQUESTS") or 20),
            profile=os.environ.get("BENCH_PROFILE", "") not in ("", "0"),
        )


@dataclass
class Target:
    result: TargetResult
    url: str = ""  # the chat completions URL
    authorization: str = ""
    process: Process | None = None


class Bench:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.processes: list[Process] = []
        self.wrk = ensure_wrk()
        self.count: gw.PhaseCount | None = None
        self.stream_count: gw.PhaseCount | None = None
        self.count_error = ""
        self.profiles: dict[str, str] = {}  # scenario -> top of the flat profile, or why not
        self.gateway_env: dict[str, str] = {}
        self.token = ""

    def log(self, message: str) -> None:
        print(f"bench: {message}", flush=True)

    def spawn(self, name: str, command: list[str], env: dict[str, str], core: int) -> Process:
        process = start(name, command, env=env, core=core)
        self.processes.append(process)
        return process

    def start_upstream(self) -> Target:
        port = free_port()
        command = [sys.executable, "-m", "bench.bench_upstream", "--port", str(port)]
        process = self.spawn("upstream", command, dict(os.environ), LOAD_CORE)
        process.wait_http(f"http://127.0.0.1:{port}/_stats", timeout=20)
        self.upstream_url = f"http://127.0.0.1:{port}"
        return Target(
            TargetResult("fake", "fake upstream, direct"),
            url=f"{self.upstream_url}/openai/v1/chat/completions",
            authorization=f"Bearer {OPENAI_KEY}",
            process=process,
        )

    def start_floor(self, key: str = "floor") -> Target:
        port = free_port()
        command = [sys.executable, *gw.uvicorn_command(port, "bench.bench_floor:app")]
        env = {**os.environ, "BENCH_UPSTREAM_URL": f"{self.upstream_url}/openai/v1"}
        label = "floor: bare ASGI pass-through, httpx + aiohttp transport"
        if key == "floor_httpx":
            env["BENCH_FLOOR_TRANSPORT"] = "httpx"
            label = "bare ASGI pass-through, httpx's default transport"
        process = self.spawn(key, command, env, TARGET_CORE)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        process.wait_http(url.replace("/v1/chat/completions", "/"), timeout=30)
        return Target(TargetResult(key, label), url=url, process=process)

    def start_gateway(self) -> Target:
        label = "gateway (production profile, everything on)"
        env = gw.gateway_env(self.upstream_url, self.config.database_url, self.config.redis_url)
        self.gateway_env = env
        try:
            gw.recreate_database(env)
            port = free_port()
            process = gw.start_gateway("gateway", gw.uvicorn_command(port), env, TARGET_CORE)
            self.processes.append(process)
            url = f"http://127.0.0.1:{port}"
            self.token = gw.register_paid_device(url, env)
            gw.check_chat(url, self.token, BODY, STREAM_BODY)
        except (gw.GatewayUnavailable, TimeoutError, RuntimeError) as exc:
            self.log(f"gateway not available: {exc}")
            return Target(TargetResult("gateway", label, reason=str(exc).splitlines()[0][:160]))
        return Target(
            TargetResult("gateway", label),
            url=f"{url}{gw.CHAT_PATH}",
            authorization=f"Bearer {self.token}",
            process=process,
        )

    def measure(self, target: Target, scenario: str, seconds: float) -> Sample:
        concurrency, stream = SCENARIOS[scenario]
        if stream or self.wrk is None:
            body = STREAM_BODY if stream else BODY
            return run_client(
                target.url, body, target.authorization, concurrency, seconds, stream=stream
            )
        return run_wrk(self.wrk, target.url, BODY, target.authorization, concurrency, seconds)

    def measure_with_noise(self, target: Target, scenario: str) -> Sample:
        """One measurement, and how much of the target's core went to other
        work meanwhile (CPU time of that core minus our own processes' on it)."""
        assert target.process is not None
        target_process = target.process
        pinned = pinning_available()
        is_fake = target.result.key == "fake"
        core = (LOAD_CORE if is_fake else TARGET_CORE) if pinned else None

        def own() -> float:  # CPU time of what runs on that core (everything when unpinned)
            processes = self.processes if core is None else [target_process]
            spent = sum(cpu_seconds(process.tree()) for process in processes)
            return spent + (children_cpu_seconds() if core in (None, LOAD_CORE) else 0.0)

        def target_cpu() -> float:
            return cpu_seconds(target.process.tree()) if target.process else 0.0

        busy, mine, theirs = busy_seconds(core), own(), target_cpu()
        started = time.monotonic()
        sample = self.measure(target, scenario, self.config.seconds)
        elapsed = time.monotonic() - started
        other = (busy_seconds(core) - busy) - (own() - mine)
        target.result.other_cpu.append(max(other, 0) / elapsed)
        if scenario == "c16":
            target.result.core_share.append((target_cpu() - theirs) / elapsed)
        target.result.drain_cpu.append(self.wait_idle(target))
        return sample

    def wait_idle(self, target: Target) -> float:
        """CPU seconds the target spends after the load stopped: work it put
        off past its responses (queued writes, say), which a short run would
        otherwise not charge to it. Waiting also keeps that work out of the
        next measurement."""
        if target.process is None:
            return 0.0
        pids = target.process.tree()
        first = last = cpu_seconds(pids)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = cpu_seconds(pids)
            if now - last <= 0.02:  # under 8 % of a core: idle (the clock ticks in 10 ms)
                break
            last = now
        return last - first

    def run(self) -> str:
        targets = [self.start_upstream()]
        for key in ("floor", "floor_httpx"):
            if key in self.config.targets:
                targets.append(self.start_floor(key))
        if "gateway" in self.config.targets:
            targets.append(self.start_gateway())
        if "fake" not in self.config.targets:
            targets = targets[1:]
        live = [target for target in targets if target.result.available]
        for target in live:  # warm-up: connections, caches, allocator
            for scenario in SCENARIOS:
                self.measure(target, scenario, 1)
        for round_number in range(1, self.config.repeat + 1):
            self.log(f"round {round_number}/{self.config.repeat}")
            for target in live:  # interleaved, so noise spreads over every target
                for scenario in SCENARIOS:
                    sample = self.measure_with_noise(target, scenario)
                    target.result.samples.setdefault(scenario, []).append(sample)
                    self.log(
                        f"  {target.result.key:8} {scenario:9} {sample.rps:9,.0f} req/s "
                        f"p50 {sample.p50_us / 1000:.2f} ms errors {sample.errors}"
                    )
        for target in live:
            assert target.process is not None
            target.result.peak_rss_mib = peak_rss_mib(target.process.tree())
            if target.result.key == "gateway":
                target.process.stop()  # so it shares nothing with the counting run
                self.count_gateway()
                if self.config.profile:
                    self.profile_gateway()
        return self.report([target.result for target in targets])

    def count_gateway(self) -> None:
        n = self.config.count_requests
        self.log(f"counting round trips over {n} + {n} requests (probe gateway)")
        stores = (self.config.database_url, self.config.redis_url)
        try:
            port = free_port()
            command = ["-m", "bench.bench_probe", "--port", str(port)]
            process = gw.start_gateway("gateway-probe", command, self.gateway_env, TARGET_CORE)
            self.processes.append(process)
            url = f"http://127.0.0.1:{port}"
            self.count = gw.count_round_trips(
                url, self.token, BODY, *stores, requests=n, settle=0.15
            )
            self.stream_count = gw.count_round_trips(
                url, self.token, STREAM_BODY, *stores, requests=n, settle=0.15
            )
        except (httpx.HTTPError, TimeoutError, RuntimeError, OSError) as exc:
            self.count_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            self.log(f"counting failed: {self.count_error}")

    def profile_gateway(self) -> None:
        """A third gateway process under pyinstrument, profiled under load
        (c=16, non-streamed then streamed); the full reports go to artifacts."""
        if importlib.util.find_spec("pyinstrument") is None:
            self.profiles["c16"] = "pyinstrument is not installed (requirements-dev.txt)"
            return
        self.log("profiling the gateway at c=16 (pyinstrument)")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        try:
            command = ["-m", "bench.bench_profile", "--port", str(port)]
            process = gw.start_gateway("gateway-profile", command, self.gateway_env, TARGET_CORE)
            self.processes.append(process)
            result = TargetResult("gateway", "profiled gateway")
            target = Target(result, f"{url}{gw.CHAT_PATH}", f"Bearer {self.token}", process)
            for scenario in ("c16", "stream16"):
                self.measure(target, scenario, 1)
                httpx.post(f"{url}/_bench/profile/start", timeout=10).raise_for_status()
                self.measure(target, scenario, self.config.seconds)
                answer = httpx.post(f"{url}/_bench/profile/stop", timeout=120).json()
                path = ARTIFACTS / f"gateway-profile-{scenario}.txt"
                path.write_text(answer["flat"] + "\n\n" + answer["tree"])
                flat = [line for line in answer["flat"].splitlines() if line.strip()]
                self.profiles[scenario] = "\n".join(flat[:30])
            process.stop()
        except (httpx.HTTPError, TimeoutError, RuntimeError, OSError, KeyError) as exc:
            self.profiles["c16"] = f"profiling failed: {type(exc).__name__}: {exc}"[:300]

    def report(self, results: list[TargetResult]) -> str:
        pinning = (
            f"load generator and fake upstream on core {LOAD_CORE}, target on core {TARGET_CORE}"
            if pinning_available()
            else "NOT pinned (taskset missing or fewer than 2 cores)"
        )
        loadgen = "wrk (non-streamed), bench_client (streamed)" if self.wrk else "bench_client only"
        sections = [
            f"Machine: {os.cpu_count()} cores, {platform.python_implementation()} "
            f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f} at the end; "
            f"{pinning}; niceness {os.getpriority(os.PRIO_PROCESS, 0)}; load: {loadgen}; "
            f"medians of {self.config.repeat} × "
            f"{self.config.seconds:g} s per figure.",
            results_table(results),
            "Ratios to the floor measured in the same run:",
            ratio_table(results),
            headroom(results),
        ]
        for label, count in (("non-streamed", self.count), ("streamed", self.stream_count)):
            if count is not None:
                sections.append(counts_table(label, count))
        if self.count_error:
            sections.append(f"Round trips per request: counting failed ({self.count_error}).")
        sections.append(targets_check(results, self.count))
        for scenario, text in self.profiles.items():
            sections.append(
                f"Profile of the gateway's event loop thread at {scenario} (pyinstrument, "
                f"own time; full tree in tests/artifacts/bench/gateway-profile-{scenario}.txt):"
                f"\n\n```\n{text}\n```"
            )
        text = "\n\n".join(sections)
        self.save(text, results)
        return text

    def save(self, text: str, results: list[TargetResult]) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"bench-{stamp}.md").write_text(text + "\n")
        raw = {
            "config": dataclasses.asdict(self.config),
            "results": [dataclasses.asdict(result) for result in results],
            "counts": {
                "non_streamed": self.count.as_dict() if self.count else None,
                "streamed": self.stream_count.as_dict() if self.stream_count else None,
            },
        }
        (ARTIFACTS / f"bench-{stamp}.json").write_text(json.dumps(raw, indent=1, default=str))
        self.log(f"saved tests/artifacts/bench/bench-{stamp}.md and .json")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def raise_priority(niceness: int) -> str:
    """Run this process and its children at ``niceness`` (BENCH_NICE).

    Linux's autogroup scheduling shares the CPU between sessions first, so a
    plain ``nice`` only reorders our own processes; a session of our own
    whose autogroup is reniced competes with the other sessions. The session
    ends, and the priority with it, when the benchmark exits. Needs root.
    """
    os.setsid()  # a new session and autogroup, so the caller's shell keeps its priority
    os.setpriority(os.PRIO_PROCESS, 0, niceness)
    autogroup = "/proc/self/autogroup"
    if os.path.exists(autogroup):
        with open(autogroup, "w") as handle:
            handle.write(str(niceness))
    return f"niceness {niceness} (own session)"


def main() -> None:
    config = Config.from_env()
    niceness = int(os.environ.get("BENCH_NICE") or 0)
    if niceness:
        print(f"bench: running at {raise_priority(niceness)}", flush=True)
    bench = Bench(config)
    try:
        text = bench.run()
    finally:
        bench.stop()
    print("\n" + text, flush=True)


if __name__ == "__main__":
    main()
