from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django_otp.plugins.otp_totp.models import TOTPDevice

from gateway.core.admin_secrets import SecretFieldsAdmin
from gateway.core.store import bump_epoch
from gateway.models import ModelRoute


class FallbacksField(forms.Field):
    """A route's fallbacks as the admin types them: public model names, in order,
    separated by commas (the model checks they exist and form no cycle)."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return ", ".join(str(name) for name in value)
        return value

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list):
            return [str(name) for name in value]
        return [name.strip() for name in str(value or "").split(",") if name.strip()]


class ModelRouteForm(forms.ModelForm):
    fallbacks = FallbacksField(
        required=False,
        help_text=(
            "Public model names, in order, separated by commas: tried when this model's "
            "provider fails before any output. Their own fallbacks follow them."
        ),
    )

    class Meta:
        model = ModelRoute
        exclude: tuple[str, ...] = ()


@admin.register(ModelRoute)
class ModelRouteAdmin(admin.ModelAdmin):
    form = ModelRouteForm
    list_display = (
        "public_name",
        "provider",
        "provider_model",
        "kind",
        "input_price_usd",
        "output_price_usd",
        "has_hidden_reasoning",
        "accepts_images",
        "max_tokens_per_image",
        "fallback_chain",
        "is_free_tier",
        "is_paid_tier",
        "is_enabled",
    )
    list_editable = (
        "kind",
        "input_price_usd",
        "output_price_usd",
        "has_hidden_reasoning",
        "accepts_images",
        "max_tokens_per_image",
        "is_enabled",
    )
    list_filter = (
        "provider",
        "kind",
        "is_enabled",
        "is_free_tier",
        "is_paid_tier",
        "has_hidden_reasoning",
        "accepts_images",
    )
    search_fields = ("public_name", "provider_model")
    readonly_fields = ("created_at", "updated_at")
    actions = ("enable_routes", "disable_routes")

    # Bulk deletes skip Model.delete(); bump the epoch here so every process
    # reloads its route table.
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        super().delete_queryset(request, queryset)
        transaction.on_commit(bump_epoch)

    @admin.display(description="fallbacks")
    def fallback_chain(self, route: ModelRoute) -> str:
        return " → ".join(route.fallbacks) if route.fallbacks else "—"

    @admin.action(description="Enable selected routes")
    def enable_routes(self, request: HttpRequest, queryset: QuerySet[ModelRoute]) -> None:
        self._set_enabled(queryset, is_enabled=True)

    @admin.action(description="Disable selected routes")
    def disable_routes(self, request: HttpRequest, queryset: QuerySet[ModelRoute]) -> None:
        self._set_enabled(queryset, is_enabled=False)

    @staticmethod
    def _set_enabled(queryset: QuerySet[ModelRoute], *, is_enabled: bool) -> None:
        with transaction.atomic():
            for route in queryset:
                route.is_enabled = is_enabled
                route.save(update_fields=["is_enabled", "updated_at"])


class TOTPDeviceAdmin(SecretFieldsAdmin):
    """Staff authenticators, without their seeds (SPEC: TOTP secrets are never shown back).

    Replaces django-otp's admin, which shows the seed as hex and a QR code
    page; neither exists here. Devices are enrolled (and replaced) only with
    ``manage.py enroll_totp``, which shows the seed once; here they can be
    renamed, disabled or deleted.
    """

    secret_fields = ("key",)
    list_display = ("user", "name", "confirmed", "created_at", "last_used_at")
    list_filter = ("confirmed",)
    search_fields = ("user__username", "name")
    fields = (
        "user",
        "name",
        "confirmed",
        "created_at",
        "last_used_at",
        "digits",
        "step",
        "tolerance",
        "drift",
        "throttling_failure_timestamp",
        "throttling_failure_count",
    )
    # Staff may rename or disable an authenticator; nothing else.
    readonly_fields = tuple(field for field in fields if field not in ("name", "confirmed"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a seed made here would have to be shown: enroll_totp instead


# django-otp registers its own admin when its app's admin module is imported,
# before or after this one depending on INSTALLED_APPS: ours replaces it either
# way (django-otp ignores AlreadyRegistered).
if admin.site.is_registered(TOTPDevice):
    admin.site.unregister(TOTPDevice)
admin.site.register(TOTPDevice, TOTPDeviceAdmin)
