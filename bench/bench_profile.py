"""The gateway under pyinstrument, for ``make bench BENCH_PROFILE=1``: where
the event loop's time goes while the gateway is under load.

Runs ``gateway.asgi:application`` under uvicorn as the benchmark does, plus
two paths of its own: ``POST /_bench/profile/start`` starts a statistical
profiler on the event loop's thread (every 0.2 ms, whatever task is running:
CPU attribution, not per-request await timelines), and ``POST
/_bench/profile/stop`` stops it and answers ``{"flat": ..., "tree": ...}``:
functions by their own time, and the call tree, as text. Work the gateway
sends to threads (``sync_to_async``) is not in it; time the loop waits for
those threads or for sockets shows as the loop's own polling.

This process is only used for profiling; the timed runs use the plain gateway.
Run: ``python -m bench.bench_profile --port 8200`` with the gateway's env.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer

_profiler: Profiler | None = None


def _render(session: Any) -> dict[str, str]:
    flat = ConsoleRenderer(flat=True, time="percent_of_total", show_all=False)
    tree = ConsoleRenderer(time="percent_of_total", show_all=False, unicode=True)
    return {"flat": flat.render(session), "tree": tree.render(session)}


def profiled(application: Callable[..., Any]) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        global _profiler
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path not in ("/_bench/profile/start", "/_bench/profile/stop"):
            await application(scope, receive, send)
            return
        body = b"{}"
        if path.endswith("/start"):
            _profiler = Profiler(interval=0.0002, async_mode="disabled")
            _profiler.start()
        elif _profiler is not None:
            session = _profiler.stop()
            _profiler = None
            body = json.dumps(_render(session)).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    from bench.bench_gateway import serve_wrapped_main

    serve_wrapped_main(__doc__ or "", profiled)


if __name__ == "__main__":
    main()
