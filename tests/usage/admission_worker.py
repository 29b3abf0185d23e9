"""A separate process for the cross-process tests: concurrent admissions for one device.

``python -m tests.usage.admission_worker GO_FILE COUNT PREFIX`` sets Django
up from the environment, prints ``ready``, waits for GO_FILE to exist (so
several workers start together), runs COUNT admissions at once and prints
one JSON line: how many were admitted, the refusal layers, and whether this
process rebuilt the counters.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    django.setup()
    from usage import limits, rebuild

    go, count, prefix = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.005)

    async def run() -> list[limits.Admission]:
        requests = [
            limits.AdmissionRequest(
                f"{prefix}-{n}", "shared-device", "203.0.113.7", None, "free", 0
            )
            for n in range(count)
        ]
        return await asyncio.gather(*(limits.admit(request) for request in requests))

    results = asyncio.run(run())
    summary = {
        "admitted": sum(a.admitted for a in results),
        "refused_by": sorted({a.refused_by for a in results if not a.admitted}, key=str),
        "rebuilt": rebuild.performed,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
