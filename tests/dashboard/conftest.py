"""Browser fixtures: Debian's Chromium driven by Playwright (no browser download).

``browser_page`` is a fresh Playwright page; console errors (CSP violations
among them) and failed loads are collected in ``page.console_errors``.
Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from tests.support.processes import ARTIFACTS
from tests.support.staff import (  # noqa: F401  (fixtures)
    STAFF_PASSWORD,
    fast_password_hashing,
    plain_user,
    staff_user,
    totp_code,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Chromium page; the test may use the ORM meanwhile (data it commits is served).

    Playwright's sync API keeps an asyncio loop marked running in this thread
    while it is open, which trips Django's async-safety check although no
    coroutine runs during the test's own ORM calls (the loop is parked in a
    greenlet). So the check is lifted for this test only, and Playwright
    starts and stops per test: a session-wide instance would keep the loop
    "running" under every later test. ``transactional_db`` is requested first
    so that its flush runs after Playwright has stopped.
    """
    if not CHROMIUM.exists():
        pytest.skip(
            "browser tests need Debian's chromium at /usr/bin/chromium "
            "(apt-get install chromium chromium-driver; .ci/run does it)"
        )
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        # A Page that also carries the console errors it saw (console_errors, set below).
        page: Any = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        page.console_errors = []
        page.on("console", lambda message: _note_console(page, message))
        page.on("pageerror", lambda error: page.console_errors.append(str(error)))
        page.on("response", lambda response: _note_response(page, response))
        try:
            yield page
        finally:
            browser.close()
            # Django keys connections by asyncio context too: the ones this
            # test opened under Playwright's loop are not the test's usual one.
            connections.close_all()


def _note_console(page: Any, message: Any) -> None:
    # Failed loads are noted with their URL by _note_response.
    if message.type == "error" and not message.text.startswith("Failed to load resource"):
        page.console_errors.append(message.text)


def _note_response(page: Any, response: Any) -> None:
    # The browser asks for /favicon.ico on its own; no page links it.
    if response.status >= 400 and not response.url.endswith("/favicon.ico"):
        page.console_errors.append(f"{response.status} {response.url}")


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path


def log_in(page: Any, url: str, device: Any) -> None:
    """Open the staff page ``url``, be sent to the login, log in as "ops" with
    ``device``'s current code, and be sent back to ``url``."""
    page.goto(url)
    assert "/admin/login/" in page.url
    page.fill("#id_username", "ops")
    page.fill("#id_password", STAFF_PASSWORD)
    page.fill("#id_otp_token", totp_code(device))
    page.click("input[type=submit]")
    page.wait_for_url(url)
