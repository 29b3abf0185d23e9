"""Admin pages over models holding a secret column (a token hash, a TOTP seed).

Not showing a secret is not enough: Django's admin accepts any lookup on a
model's own fields from the change list's query string, so
``?token_hash__startswith=a`` answers yes or no about the secret, and a
prefix at a time gives all of it away. ``SecretFieldsAdmin`` leaves its
``secret_fields`` out of every form, refuses every lookup that touches one
(Django answers 400), and its system check (``hanzo.E071``) refuses a
configuration that would show, filter, search or sort by one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin
from django.core import checks
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest


def _field_names(entries: Iterable[Any]) -> set[str]:
    """The model fields that admin options name: ``"-token_hash"``, ``"^key"``, ``("key", ...)``."""
    names = set()
    for entry in entries:
        if isinstance(entry, list | tuple):
            names |= _field_names(entry)
        elif isinstance(entry, str):
            names.add(entry.lstrip("-^=@").split(LOOKUP_SEP)[0])
    return names


class SecretFieldsAdmin(admin.ModelAdmin):
    secret_fields: tuple[str, ...] = ()

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # Also when ``fields`` is left to Django (every editable field).
        return (*(super().get_exclude(request, obj) or ()), *self.secret_fields)

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        if lookup.split(LOOKUP_SEP)[0] in self.secret_fields:
            return False
        return super().lookup_allowed(lookup, value, request)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        named: set[str] = set()
        for option in (
            "list_display",
            "list_display_links",
            "list_filter",
            "search_fields",
            "ordering",
            "sortable_by",
            "fields",
            "readonly_fields",
            "list_editable",
        ):
            named |= _field_names(getattr(self, option, None) or ())
        for _title, options in self.fieldsets or ():
            named |= _field_names(options.get("fields", ()))
        shown = sorted(named & set(self.secret_fields))
        errors = [
            checks.Error(
                f"{type(self).__name__} names the secret field(s) {', '.join(shown)}.",
                hint="A secret is never shown, filtered, searched or sorted on in the admin.",
                obj=type(self),
                id="hanzo.E071",
            )
        ]
        return [*super().check(**kwargs), *(errors if shown else [])]
