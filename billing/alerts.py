"""Slack alerts (SPEC section 5), sent off the request path.

Callers only ``enqueue``: it never blocks and never raises. One daemon
worker thread per process, held by reference here, posts through
slack-sdk's WebClient (``SLACK_API_URL`` honoured); a full queue drops the
alert with a log line, so a slow or dead Slack can neither slow nor fail a
request. Without ``SLACK_BOT_TOKEN`` alerts are only logged.

Budget alerts go out at most once per budget day across every process: the
worker inserts an AlertLog row first and sends only if its insert won the
unique constraint. If Slack then fails, the row is deleted again so the
next ``check_budget`` (cron, every minute) retries.

Messages are built from fixed text and escaped values, then passed through
gateway.core.logs.redact as a last guard: no key, token or token hash leaves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from dataclasses import dataclass
from datetime import date
from urllib.parse import quote

from django.conf import settings
from django.db import IntegrityError, connections, transaction

from billing.models import AlertLog
from billing.pricing import micro_to_usd
from gateway.core import clock, metrics
from gateway.core.logs import redact
from usage.breakers import Target
from usage.types import Transition

logger = logging.getLogger(__name__)

QUEUE_SIZE = 100
SEND_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Alert:
    kind: str
    text: str
    once_per_day: date | None = None  # budget alerts: the budget day they belong to


def _escape(value: object) -> str:
    """Slack mrkdwn control characters, so a device name cannot forge a link."""
    text = str(value)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def device_admin_path(device_id: str) -> str:
    return f"/admin/devices/device/{quote(str(device_id), safe='')}/change/"


# --- Delivery ------------------------------------------------------------------


def _claim(kind: str, day: date) -> bool:
    try:
        with transaction.atomic():
            AlertLog.objects.create(kind=kind, budget_day=day, created_at=clock.utcnow())
    except IntegrityError:
        return False
    return True


def _post(text: str) -> bool:
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackClientError

    client = WebClient(
        token=settings.SLACK_BOT_TOKEN,
        base_url=settings.SLACK_API_URL,
        timeout=SEND_TIMEOUT_SECONDS,
    )
    try:
        client.chat_postMessage(channel=settings.SLACK_CHANNEL, text=text)
    except SlackClientError as exc:
        response = getattr(exc, "response", None)
        error = response.get("error") if response is not None else None
        logger.error("slack alert failed: %s %s", type(exc).__name__, error or "")
        return False
    except OSError as exc:  # connection refused, reset, timeout
        logger.error("slack alert failed: %s", type(exc).__name__)
        return False
    return True


def deliver(alert: Alert) -> str:
    """Send one alert now: "sent", "logged" (no token), "duplicate" or "failed".

    Each outcome is counted in ``hanzo_alerts_total{kind, outcome}``.
    """
    outcome = _deliver(alert)
    metrics.ALERTS.labels(alert.kind, outcome).inc()
    return outcome


def _deliver(alert: Alert) -> str:
    if alert.once_per_day is not None and not _claim(alert.kind, alert.once_per_day):
        return "duplicate"
    text = redact(alert.text)
    if not settings.SLACK_BOT_TOKEN:
        logger.warning("alert (Slack not configured) %s: %s", alert.kind, text)
        return "logged"
    if _post(text):
        logger.info("alert sent: %s", alert.kind)
        return "sent"
    if alert.once_per_day is not None:
        AlertLog.objects.filter(kind=alert.kind, budget_day=alert.once_per_day).delete()
    return "failed"


# --- The worker ------------------------------------------------------------------


class _Worker:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.queue: queue.Queue[Alert | threading.Event] = queue.Queue(maxsize=QUEUE_SIZE)
        self.thread = threading.Thread(target=self._run, name="slack-alerts", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if isinstance(item, threading.Event):
                    item.set()
                else:
                    deliver(item)
            except Exception:
                kind = getattr(item, "kind", "?")
                logger.exception("alert %s could not be delivered", kind)
                metrics.ALERTS.labels(kind, "failed").inc()
            finally:
                connections.close_all()
                self.queue.task_done()


_worker: _Worker | None = None
_worker_lock = threading.Lock()


def _running_worker() -> _Worker:
    global _worker
    with _worker_lock:
        if _worker is None or _worker.pid != os.getpid():
            _worker = _Worker()
        return _worker


def enqueue(alert: Alert) -> bool:
    """Queue an alert for the worker; never blocks. False if it was dropped."""
    try:
        _running_worker().queue.put_nowait(alert)
    except queue.Full:
        logger.warning("alert dropped, queue full: %s", alert.kind)
        metrics.ALERTS.labels(alert.kind, "dropped").inc()
        return False
    return True


def drain(timeout: float = 10.0) -> bool:
    """Wait until every alert queued so far was handled; False on timeout."""
    worker = _worker
    if worker is None or worker.pid != os.getpid():
        return True
    marker = threading.Event()
    try:
        worker.queue.put(marker, timeout=timeout)
    except queue.Full:
        return False
    return marker.wait(timeout)


async def shutdown() -> None:
    """Shutdown hook: deliver what is queued (bounded by the send timeout)."""
    if not await asyncio.to_thread(drain, SEND_TIMEOUT_SECONDS):
        logger.warning("alerts still queued at shutdown were dropped")


# --- The alerts ------------------------------------------------------------------


def _usd(micro: int) -> str:
    return f"${micro_to_usd(micro)}"


def _percent(spent_micro: int, budget_micro: int) -> str:
    if budget_micro <= 0:
        return "n/a"
    return f"{spent_micro * 100 / budget_micro:.1f}%"


def alert_new_device(*, device_id: str, name: str, platform: str, ip: str) -> bool:
    text = (
        f":new: New device registration: *{_escape(name)}* ({_escape(platform)}) from "
        f"{_escape(ip)}, pending approval. Device `{_escape(device_id)}`. "
        f"Approve: {device_admin_path(device_id)}"
    )
    return enqueue(Alert(kind="new_device", text=text))


def alert_suspicious_device(*, device_id: str, name: str, reason: str) -> bool:
    text = (
        f":rotating_light: Suspicious device auto-suspended: *{_escape(name)}* "
        f"(`{_escape(device_id)}`): {_escape(reason)}. Review: {device_admin_path(device_id)}"
    )
    return enqueue(Alert(kind="suspicious_device", text=text))


def alert_breaker(target: Target, transition: Transition) -> bool:
    """A circuit breaker opened or closed (``usage.breakers`` calls it once per transition)."""
    if target.kind == "route":
        subject = f"route *{_escape(target.name)}*"
    else:
        subject = f"{_escape(target.name)} key `{_escape(target.key_id)}`"
    if transition == "opened":
        text = (
            f":red_circle: Circuit breaker opened for {subject}: {settings.BREAKER_FAILURES} "
            f"failures within {settings.BREAKER_WINDOW_SECONDS} s. Requests skip it for "
            f"{settings.BREAKER_COOLDOWN_SECONDS:g} s, then one request probes it."
        )
    else:
        text = f":white_check_mark: Circuit breaker closed for {subject}: its probe succeeded."
    return enqueue(Alert(kind=f"breaker_{transition}", text=text))


def alert_budget_warning(*, day: date, spent_micro: int, budget_micro: int) -> bool:
    percent = _percent(spent_micro, budget_micro)
    return _budget_alert(
        AlertLog.Kind.BUDGET_WARNING,
        f":warning: Budget warning for {day.isoformat()}",
        f" ({percent}); the warning threshold is {settings.BUDGET_WARNING_PERCENT}%.",
        day=day,
        spent_micro=spent_micro,
        budget_micro=budget_micro,
    )


def alert_budget_exhausted(*, day: date, spent_micro: int, budget_micro: int) -> bool:
    return _budget_alert(
        AlertLog.Kind.BUDGET_EXHAUSTED,
        f":no_entry: Budget exhausted for {day.isoformat()}",
        ". The service is paused until the next budget day (or `manage.py resume_service`).",
        day=day,
        spent_micro=spent_micro,
        budget_micro=budget_micro,
    )


def _budget_alert(
    kind: AlertLog.Kind,
    headline: str,
    tail: str,
    *,
    day: date,
    spent_micro: int,
    budget_micro: int,
) -> bool:
    """Once a budget day: "<headline>: spent $x of $y<tail>"."""
    text = f"{headline}: spent {_usd(spent_micro)} of {_usd(budget_micro)}{tail}"
    return enqueue(Alert(kind=kind.value, text=text, once_per_day=day))


def budget_alerts_due(
    *, spent_micro: int, budget_micro: int, is_auto_paused: bool = False
) -> list[str]:
    """Which budget alerts are due (the exhausted one supersedes the warning).

    The budget is exhausted when the spend reached it, or when the gateway
    paused itself that day: a request's worst case no longer fitted, which
    usually happens with the spend still short of the budget (spend never
    passes it). Without the second case, an exhausted alert the gateway could
    not deliver (Slack down) would never be retried by ``check_budget``.
    """
    if is_auto_paused:
        return [AlertLog.Kind.BUDGET_EXHAUSTED.value]
    if budget_micro <= 0:
        return []
    if spent_micro >= budget_micro:
        return [AlertLog.Kind.BUDGET_EXHAUSTED.value]
    if spent_micro * 100 >= budget_micro * settings.BUDGET_WARNING_PERCENT:
        return [AlertLog.Kind.BUDGET_WARNING.value]
    return []


def alert_sent_today(kind: str, day: date) -> bool:
    return AlertLog.objects.filter(kind=kind, budget_day=day).exists()
