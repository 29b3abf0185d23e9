"""The interface both limiter backends implement, and the data they exchange.

``usage.limits`` turns a caller's request into an ``AdmitPlan`` (every key,
limit and time the atomic step needs, computed once in Python) and hands it
to the backend, which checks and takes everything in one atomic step: one
Lua script in Redis, one lock in this process. Backends never read settings
or the clock themselves: the plan carries ``now``, so tests can move time and
every process agrees on what "now" was for a decision.

Keys are built here, from ``gateway.core.store.key``, for both backends (the
in-process one uses them as dictionary keys), so a key's name is defined once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.core.store import key
from usage.types import LAYERS, AdmitStatus, AttemptOutcome, BreakerState, LayerName, Refusal
from usage.windows import WindowSpec

RATE_LAYERS = LAYERS  # checked in this order, after the pause and before the budgets


# --- Keys --------------------------------------------------------------------

LIVE_KEY = key("live")  # "the counters are live": absent after Redis lost its data
REBUILD_LOCK_KEY = key("rebuild", "lock")
PAUSE_KEY = key("pause")


def layer_keys(device_id: str, ip: str, user_id: str | None) -> dict[LayerName, str]:
    """The window key of each layer, in the order the layers are checked."""
    keys: dict[LayerName, str] = {
        "device": key("rl", "device", device_id, "day"),
        "ip": key("rl", "ip", ip, "day"),
        "user": key("rl", "user", user_id, "day"),
        "burst": key("rl", "device", device_id, "min"),
        "global": key("rl", "global", "day"),
    }
    if user_id is None:
        del keys["user"]
    return keys


def budget_key(day: str) -> str:
    return key("budget", day)


def device_budget_prefix(day: str) -> str:
    return key("budget", day, "device", "")


def device_budget_key(day: str, device_id: str) -> str:
    return device_budget_prefix(day) + device_id


def reservation_keys(day: str) -> dict[str, str]:
    """A day's open reservations (amount, device, process), the expired ones (counted as
    spent at their worst case, remembered for a late settle) and the orphans."""
    return {
        "open": key("budget", day, "resv"),
        "expired": key("budget", day, "resv", "expired"),
        "orphans": key("budget", day, "resv", "orphans"),
    }


# Every open reservation of every day, scored by when to check on its process:
# members are "<day> <request id>". One set for all days, so a reservation a
# dead process left open yesterday is still found and counted.
DUE_KEY = key("resv", "due")
BUDGET_PREFIX = key("budget", "")


def process_key(process_id: str) -> str:
    """Exists while the process is alive (see ``Reservation``)."""
    return key("proc", process_id)


def in_flight_key(device_id: str) -> str:
    """A device's requests in flight: request id -> process id."""
    return key("inflight", device_id)


def registration_key(ip: str) -> str:
    return key("rl", "register", ip)


def auth_failure_key(ip: str) -> str:
    return key("abuse", "authfail", ip)


def ip_block_key(ip: str) -> str:
    return key("abuse", "block", ip)


IP_BLOCK_INDEX_KEY = key("abuse", "blocks")


def device_ips_key(device_id: str, day: str) -> str:
    """The distinct client addresses a device was used from in a budget day."""
    return key("susp", device_id, day)


# Circuit breakers (usage.breakers), by target ("route:<model>", "key:<provider>:<id>").
BREAKERS_OPEN_KEY = key("brk", "open")  # every breaker not closed: target -> open until
BREAKERS_COUNTED_KEY = key("brk", "counted")  # targets with attempts counted: target -> last count
BREAKER_STATE_PREFIX = key("brk", "s", "")
BREAKER_FAILURES_PREFIX = key("brk", "f", "")
BREAKER_ATTEMPTS_PREFIX = key("brk", "n", "")
# Attempts are counted per minute of the gateway clock and kept this long.
BREAKER_ATTEMPTS_KEPT_SECONDS = 3600


def breaker_state_key(target: str) -> str:
    """A breaker that is not closed: its ``until`` and, while claimed, its ``probe``."""
    return BREAKER_STATE_PREFIX + target


def breaker_failures_key(target: str) -> str:
    """A closed breaker's failures, in a window of one-second buckets."""
    return BREAKER_FAILURES_PREFIX + target


def breaker_attempts_key(target: str, minute: int) -> str:
    """A target's attempts of one minute (``now // 60``), by outcome."""
    return f"{BREAKER_ATTEMPTS_PREFIX}{minute}:{target}"


# --- Data exchanged with the backends ----------------------------------------


@dataclass(frozen=True)
class Pause:
    """The service is paused: automatically (budget spent) or by an operator.

    The store's mirror of billing's record (``billing.models.PauseState``, the
    one that survives a store restart), which every admission reads.
    """

    reason: str
    is_automatic: bool
    since: float
    until: float | None  # epoch seconds; None = until resumed


@dataclass(frozen=True)
class Reservation:
    """A budget reservation held by an admitted request, to be settled once.

    It lives as long as its process does: the process's heartbeat (one store
    write every few seconds for all its requests, ``usage.liveness``) keeps
    it, whatever its client or provider do. Once the process has been silent
    for ``liveness_seconds`` of real time the reservation expires: it counts
    as spent at its full amount, and a late settle corrects that to the real
    cost.
    """

    request_id: str
    device_id: str
    budget_day: str  # YYYY-MM-DD in BUDGET_TIMEZONE, the day the request was admitted in
    amount_micro_usd: int
    process_id: str  # the process that holds it
    generation: str  # which incarnation of the store admitted it (see settle)
    # The auto-pause terms of its day, as admission read them (see SettleTerms).
    day_ends_at: float = 0.0
    budget_micro_usd: int = 0
    pause_below_micro_usd: int = 0


@dataclass(frozen=True)
class AdmitPlan:
    now: float
    request_id: str
    device_id: str
    keys: dict[LayerName, str]  # window key (no "user" for a device without owner)
    limits: dict[LayerName, int]
    day_spec: WindowSpec
    burst_seconds: int
    budget_day: str
    budget_micro_usd: int
    device_cap_micro_usd: int  # 0 = no cap
    reserve_micro_usd: int
    pause_below_micro_usd: int  # pause when less than this is left after settled spend
    concurrency_limit: int  # the device's requests in flight
    process_id: str  # the admitting process (its heartbeat keeps the reservation)
    liveness_seconds: float  # a process silent this long (real time) is dead
    next_day_at: float  # start of the next budget day (end of an automatic pause)
    is_peek: bool = False  # read the layers only, take nothing
    expect: Expectation | None = None  # take nothing unless the store still says this


# (store key, the value it must still hold; "" = absent)
Expected = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Expectation:
    """The store values a caller's cached view was built from: (key, value) pairs,
    ``""`` for a key that must be absent.

    The hot path may admit from its caches without reading the store first:
    the admission then takes nothing (status ``"stale"``) unless every key
    still holds its value, and the caller reads the store and decides the
    slow way. Which keys vouch for a cache is the cache's own business
    (``devices.auth``, ``usage.guard``): the admission only compares.
    """

    values: Expected


@dataclass(frozen=True)
class Outcome:
    status: AdmitStatus
    refused_by: Refusal | None = None
    is_hard: bool = False  # a budget refusal that waiting for in-flight requests won't cure
    auto_paused: bool = False  # this call paused the service (settled spend reached the floor)
    generation: str = ""
    counts: dict[LayerName, tuple[int, float]] = field(default_factory=dict)  # (count, reset)
    pause: Pause | None = None


NOT_LIVE = Outcome(status="not_live")
STALE = Outcome(status="stale")


@dataclass(frozen=True)
class SettleTerms:
    """What a settle needs besides the reservation: the auto-pause rule of today."""

    now: float
    budget_micro_usd: int
    pause_below_micro_usd: int
    next_day_at: float | None  # end of the reservation's day if that is today, else None


@dataclass(frozen=True)
class Settled:
    is_first: bool  # False: settled already (a second or concurrent call)
    auto_paused: bool = False  # this settlement paused the service

    def __bool__(self) -> bool:
        """True when this call settled the reservation."""
        return self.is_first


@dataclass(frozen=True)
class BudgetFigures:
    spent_micro_usd: int
    reserved_micro_usd: int
    pause: Pause | None


@dataclass(frozen=True)
class WindowResult:
    admitted: bool
    count: int
    reset_at: float


@dataclass(frozen=True)
class Snapshot:
    """Counters rebuilt from the ledger, loaded in one atomic step."""

    day_spec: WindowSpec
    windows: dict[str, dict[int, int]]  # day window key -> bucket -> count
    logs: dict[str, list[tuple[float, str]]]  # burst key -> (time, request id)
    budget_day: str
    spent_micro_usd: int
    device_spent_micro_usd: dict[str, int]
    pause: Pause | None  # the operator's copy (billing's), mirrored when set


@dataclass(frozen=True)
class IpBlock:
    ip: str
    until: float


class AdmissionStore(ABC):
    """Rate windows, the in-flight count and budget reservations, taken atomically."""

    @abstractmethod
    async def admit(self, plan: AdmitPlan) -> Outcome: ...

    @abstractmethod
    async def settle(
        self, reservation: Reservation, actual_micro_usd: int, terms: SettleTerms
    ) -> Settled | None:
        """None when the counters are not live."""

    @abstractmethod
    async def heartbeat(self, process_id: str, liveness: float) -> None:
        """The process is alive for another ``liveness`` seconds of real time."""


class BudgetStore(ABC):
    """The day's figures and the pause (the mirror of billing's record)."""

    # Async for the hot path and /metrics, sync for commands and the dashboard.
    @abstractmethod
    async def budget(self, day: str, now: float, liveness: float) -> BudgetFigures | None: ...

    @abstractmethod
    def budget_sync(self, day: str, now: float, liveness: float) -> BudgetFigures | None: ...

    @abstractmethod
    def set_pause(self, pause: Pause | None) -> None:
        """Operators' writes only (commands, the admin); admissions pause atomically."""


class RebuildStore(ABC):
    """The live marker and the load of counters rebuilt from the ledger."""

    # Each has a sync twin for ``until_live_sync`` (commands, the dashboard):
    # an async form there would need an event loop of its own per call.
    @abstractmethod
    async def is_live(self) -> bool: ...

    @abstractmethod
    def is_live_sync(self) -> bool: ...

    @abstractmethod
    async def take_rebuild_lock(self, token: str, seconds: float) -> bool: ...

    @abstractmethod
    def take_rebuild_lock_sync(self, token: str, seconds: float) -> bool: ...

    @abstractmethod
    async def load(self, snapshot: Snapshot, token: str, generation: str) -> bool:
        """Write the snapshot and mark the counters live, unless they already are."""

    @abstractmethod
    def load_sync(self, snapshot: Snapshot, token: str, generation: str) -> bool: ...


class GuardStore(ABC):
    """The IP guard's counters and blocks, and the registration windows."""

    @abstractmethod
    async def window_hit(
        self, window_key: str, spec: WindowSpec, limit: int, now: float
    ) -> WindowResult:
        """Count one event if the window has room (registrations)."""

    @abstractmethod
    async def auth_failure(
        self, ip: str, spec: WindowSpec, limit: int, now: float, block_seconds: float
    ) -> float | None:
        """Count a failure; returns the block's end when this failure blocked the IP."""

    def ip_lookup_keys(self, ip: str) -> list[str]:
        """Store keys ``ip_lookup`` reads, for a request's prefetch (none in-process)."""
        return []

    @abstractmethod
    async def ip_lookup(self, ip: str) -> tuple[object, float | None]:
        """(stamp of the shared configuration, end of the IP's block or None), one round trip."""

    @abstractmethod
    def list_ip_blocks_sync(self, now: float) -> list[IpBlock]: ...

    @abstractmethod
    def lift_ip_block_sync(self, ip: str) -> bool: ...


class DistinctSets(ABC):
    """Bounded sets of distinct values (a device's client addresses of a day)."""

    @abstractmethod
    async def distinct_add(
        self, set_key: str, member: str, *, cap: int, now: float, ttl_seconds: float
    ) -> int:
        """Add ``member`` unless it is in the set or the set holds more than ``cap``.

        Returns the set's size after adding, or 0 when nothing was added, so
        the call that takes the set past ``cap`` is the only one to see
        ``cap + 1``. The set is forgotten ``ttl_seconds`` after its last add.
        """

    @abstractmethod
    async def distinct_remove(self, set_key: str, member: str) -> None:
        """Take ``member`` out of the set (undo an add whose follow-up failed)."""


@dataclass(frozen=True)
class BreakerRules:
    """The breaker settings, as ``usage.breakers`` passes them (backends read no settings)."""

    failures: int  # failures within the window that open a breaker
    window_seconds: int
    cooldown_seconds: float
    probe_seconds: float

    @property
    def window(self) -> WindowSpec:
        """One-second buckets: a failure counts for the window's length, and up to a second more."""
        return WindowSpec(seconds=self.window_seconds, bucket_seconds=1)


@dataclass(frozen=True)
class BreakerView:
    """A breaker that is not closed (gateway clock). A closed one has no view."""

    open_until: float  # skipped until then; then one caller may claim the probe
    probe_until: float = 0.0  # a probe is claimed until then (0: none)

    def state(self, now: float) -> BreakerState:
        return "half_open" if self.probe_until > now else "open"


@dataclass(frozen=True)
class BreakerCounts:
    """What one process saw of one target since its last sync."""

    target: str
    failures: int = 0  # failures and timeouts: toward opening
    attempts: Mapping[AttemptOutcome, int] = field(default_factory=dict)  # for the error rate


@dataclass(frozen=True)
class BreakerSync:
    opened: tuple[str, ...]  # the breakers this call opened (no other caller is told)
    views: dict[str, BreakerView]  # every breaker not closed, after this call


@dataclass(frozen=True)
class ProbeClaim:
    is_won: bool  # this caller holds the probe
    view: BreakerView | None  # the breaker after the call (None: closed)


@dataclass(frozen=True)
class ProbeResult:
    is_closed_by_this: bool  # this call closed the breaker (no other caller is told)
    view: BreakerView | None  # the breaker after the call (None: closed)


@dataclass(frozen=True)
class BreakerFigures:
    target: str
    view: BreakerView | None
    failures_in_window: int
    attempts: dict[AttemptOutcome, int]  # over the minutes asked for


class BreakerStore(ABC):
    """Circuit breakers shared by every process; decisions against the ``now`` passed in."""

    @abstractmethod
    async def breaker_sync(
        self, counts: Sequence[BreakerCounts], rules: BreakerRules, now: float
    ) -> BreakerSync:
        """Count what a process saw, open each closed breaker whose failures within
        the window reach ``rules.failures``, and return every breaker not closed.

        Failures reported while a breaker is open are not counted: the probe decides.
        """

    @abstractmethod
    async def breaker_claim_probe(self, target: str, rules: BreakerRules, now: float) -> ProbeClaim:
        """Won by one caller once the cool-down is over and no probe is claimed."""

    @abstractmethod
    async def breaker_probe_result(
        self, target: str, is_ok: bool, rules: BreakerRules, now: float
    ) -> ProbeResult:
        """Success closes the breaker; failure opens it for another cool-down."""

    @abstractmethod
    async def breaker_release_probe(self, target: str, probe_until: float) -> BreakerView | None:
        """Give back the probe claimed until ``probe_until``, unused; the breaker after."""

    @abstractmethod
    def breaker_figures_sync(
        self, targets: Sequence[str], rules: BreakerRules, now: float, minutes: int
    ) -> list[BreakerFigures]:
        """``targets`` and every target whose attempts were counted within
        ``BREAKER_ATTEMPTS_KEPT_SECONDS``, with their attempts of the last ``minutes``."""


class Backend(AdmissionStore, BudgetStore, RebuildStore, GuardStore, DistinctSets, BreakerStore):
    """One store implements every concern: they share its keys, its live
    marker and (in Redis) its atomic scripts."""

    name: str
