"""Helpers shared by billing's management commands."""

from __future__ import annotations

import getpass


def operator_actor() -> str:
    """Who ran the command, for the audit trail (the OS user, as far as it is known)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"manage.py ({user})"
