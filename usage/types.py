"""The admission layer's vocabulary as types: tiers, layers, refusals, outcomes."""

from __future__ import annotations

from typing import Literal, TypeVar, get_args

L = TypeVar("L", bound=str)

Tier = Literal["free", "paid"]
TIERS: tuple[Tier, ...] = get_args(Tier)

# The rate layers, in the order admission checks them (SPEC section 2).
LayerName = Literal["device", "ip", "user", "burst", "global"]
LAYERS: tuple[LayerName, ...] = get_args(LayerName)

# What refused an admission: the pause, a rate layer, the device's requests
# in flight, the device's daily cap or the global budget.
Refusal = Literal[LayerName, "paused", "concurrency", "device_budget", "budget"]

# A backend's answer: "peek" reads the layers only; "not_live" asks for a
# rebuild; "stale" says the caller's cached view no longer holds.
AdmitStatus = Literal["admitted", "refused", "peek", "not_live", "stale"]
ADMIT_STATUSES: tuple[AdmitStatus, ...] = get_args(AdmitStatus)
REFUSALS: tuple[Refusal, ...] = (*LAYERS, "paused", "concurrency", "device_budget", "budget")


def as_tier(value: str) -> Tier:
    """``value`` as a ``Tier``; a stored value outside the choices is a bug, not input."""
    return one_of(value, TIERS)


def one_of(value: str, choices: tuple[L, ...]) -> L:
    """``value`` as the member of ``choices`` it equals (a store's reply, a stored field)."""
    for choice in choices:
        if choice == value:
            return choice
    raise ValueError(f"{value!r} is not one of {choices}")


# What one upstream attempt came to, as the retry loop reports it to the
# circuit breakers (usage.breakers): "failure" and "timeout" count toward
# opening one; "rejected" is the client's own 4xx, an attempt but no failure.
AttemptOutcome = Literal["ok", "failure", "timeout", "rejected"]
ATTEMPT_OUTCOMES: tuple[AttemptOutcome, ...] = get_args(AttemptOutcome)
BreakerState = Literal["closed", "open", "half_open"]
Transition = Literal["opened", "closed"]
