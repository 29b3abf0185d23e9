"""A separate process for the cross-process breaker test: one gateway process's breakers.

``python -m tests.usage.breaker_worker DIR FAILURES CLAIMS`` sets Django up
from the environment and prints ``ready``. Each step waits for a file the
test creates in DIR: on ``report`` it reports FAILURES failures of one route
and syncs (prints ``synced``); on ``probe`` it waits out the cool-down and
asks ``allow`` CLAIMS times at once (prints ``claimed``); on ``settle`` the
process that won the probe reports ``ok`` for it and creates ``closed``, the
other waits for that file; each then syncs. Last it prints
one JSON line: the transitions it was told of and how many calls were allowed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

ROUTE = "route:llama3-8b-instruct"


async def _when(path: Path) -> None:
    while not path.exists():
        await asyncio.sleep(0.005)


async def run(directory: Path, failures: int, claims: int) -> dict[str, object]:
    from django.conf import settings

    from gateway.core import lifecycle
    from usage import breakers

    told: list[str] = []
    breakers.on_transition(lambda target, transition: told.append(transition))
    print("ready", flush=True)
    await _when(directory / "report")
    for _ in range(failures):
        breakers.report(ROUTE, "failure")
    await breakers.sync()
    print("synced", flush=True)
    await _when(directory / "probe")
    await asyncio.sleep(settings.BREAKER_COOLDOWN_SECONDS + 0.1)
    await breakers.sync()
    allowed = await asyncio.gather(*(breakers.allow(ROUTE) for _ in range(claims)))
    print("claimed", flush=True)
    await _when(directory / "settle")
    if any(allowed):
        breakers.report(ROUTE, "ok")
        await lifecycle._drain_background()
        (directory / "closed").touch()
    else:
        await _when(directory / "closed")  # the other process's probe result is in
    await breakers.sync()
    return {"told": told, "allowed": sum(allowed), "state": breakers.state(ROUTE)}


def main() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    django.setup()
    directory, failures, claims = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(run(directory, failures, claims))), flush=True)


if __name__ == "__main__":
    main()
