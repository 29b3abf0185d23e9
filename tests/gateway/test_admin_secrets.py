"""SecretFieldsAdmin: a secret column is never shown, filtered, searched or sorted on."""

from __future__ import annotations

from django.contrib import admin
from django.test import RequestFactory

from devices.models import Device
from gateway.core.admin_secrets import SecretFieldsAdmin


def errors_of(**options: object) -> list[str]:
    admin_class = type("ProbeAdmin", (SecretFieldsAdmin,), {"secret_fields": ("token_hash",)})
    for name, value in options.items():
        setattr(admin_class, name, value)
    return [error.id for error in admin_class(Device, admin.site).check()]


def test_naming_the_secret_anywhere_in_the_admin_options_fails_the_check() -> None:
    for options in (
        {"list_display": ("id", "token_hash")},
        {"list_filter": (("token_hash", admin.EmptyFieldListFilter),)},
        {"search_fields": ("^token_hash",)},
        {"ordering": ("-token_hash",)},
        {"readonly_fields": ("token_hash",)},
        {"fieldsets": ((None, {"fields": (("name", "token_hash"),)}),)},
    ):
        assert "hanzo.E071" in errors_of(**options), options


def test_an_admin_that_leaves_the_secret_alone_passes_and_never_puts_it_in_a_form(
    rf: RequestFactory,
) -> None:
    assert "hanzo.E071" not in errors_of(search_fields=("name", "=id"), ordering=("-created_at",))
    admin_class = type("ProbeAdmin", (SecretFieldsAdmin,), {"secret_fields": ("token_hash",)})
    assert "token_hash" in admin_class(Device, admin.site).get_exclude(rf.get("/"))
