"""Django admin for devices. Every change goes through devices.services.

Device pages are read-only: status, tier and owner change only through the
actions, which call the services (so each change is audited and every
gateway process hears of it). The token hash is never shown anywhere, nor
filtered, searched or sorted on (``gateway.core.admin_secrets``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from devices import services
from devices.errors import iso_z
from devices.models import AuditEvent, Device, OwnerAccount
from devices.selectors import effective_status_q
from gateway.core import clock
from gateway.core.admin_secrets import SecretFieldsAdmin
from gateway.core.client_ip import client_ip_from_request
from gateway.core.errors import GatewayError

DEVICE_FIELDS = (
    "id",
    "name",
    "platform",
    "version",
    "status",
    "tier",
    "owner",
    "token_prefix",
    "registration_ip",
    "last_ip",
    "created_at",
    "approved_at",
    "approved_by",
    "last_seen_at",
    "suspended_until",
    "suspension_reason",
)


class EffectiveStatusFilter(admin.SimpleListFilter):
    """Filters by the status in force now: an expired suspension counts as approved."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(Device.Status.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Device]) -> QuerySet[Device]:
        if self.value() in Device.Status.values:
            return queryset.filter(effective_status_q(str(self.value()), clock.utcnow()))
        return queryset


class SuspendForm(forms.Form):
    hours = forms.DecimalField(
        min_value=0, max_digits=12, decimal_places=4, help_text="Fractions allowed."
    )
    reason = forms.CharField(max_length=services.MAX_REASON_LENGTH)


class SetTierForm(forms.Form):
    tier = forms.ChoiceField(choices=Device.Tier.choices)


class AssignOwnerForm(forms.Form):
    owner_name = forms.CharField(
        label="User",
        max_length=services.MAX_OWNER_NAME_LENGTH,
        required=False,
        help_text="The owning account, created if missing. Empty removes the owner.",
    )


class AuditEventInline(admin.TabularInline):
    model = AuditEvent
    fields = ("created_at", "actor", "action", "changes", "ip")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-created_at", "-id")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _plain_action(
    service: Callable[..., Device], description: str, done: str
) -> Callable[[DeviceAdmin, HttpRequest, QuerySet[Device]], None]:
    """An admin action that applies ``service`` to each selected device, no questions asked."""

    @admin.action(description=description, permissions=["change"])
    def action(model_admin: DeviceAdmin, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        model_admin._each(
            request,
            queryset,
            done,
            lambda device, actor, ip: service(device=device, actor=actor, ip=ip),
        )

    return action


@admin.register(Device)
class DeviceAdmin(SecretFieldsAdmin):
    secret_fields = ("token_hash",)
    list_display = (
        "id",
        "name",
        "platform",
        "current_status",
        "tier",
        "owner",
        "token_prefix",
        "ip",
        "last_seen_at",
        "created_at",
    )
    list_filter = (EffectiveStatusFilter, "tier")
    search_fields = ("name", "registration_ip", "last_ip", "=id")
    list_select_related = ("owner",)
    fields = DEVICE_FIELDS
    readonly_fields = DEVICE_FIELDS
    inlines = (AuditEventInline,)
    actions = (
        "approve",
        "reject",
        "suspend",
        "revoke",
        "set_tier",
        "assign_owner",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # devices register themselves through the API

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The change page is view-only; the list's actions need "change".
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the audit trail keeps its devices

    @admin.display(description="status", ordering="status")
    def current_status(self, device: Device) -> str:
        status = device.effective_status(clock.utcnow())
        if status == Device.Status.SUSPENDED and device.suspended_until:
            return f"suspended until {iso_z(device.suspended_until)}"
        return status

    @admin.display(description="IP")
    def ip(self, device: Device) -> str:
        return device.ip

    approve = _plain_action(services.device_approve, "Approve (lifts a suspension)", "Approved")
    reject = _plain_action(services.device_reject, "Reject", "Rejected")
    revoke = _plain_action(services.device_revoke, "Revoke", "Revoked")

    @admin.action(description="Suspend…", permissions=["change"])
    def suspend(self, request: HttpRequest, queryset: QuerySet[Device]) -> TemplateResponse | None:
        def apply(device: Device, actor: AbstractBaseUser, ip: str, data: dict[str, Any]) -> Any:
            return services.device_suspend(
                device=device, actor=actor, ip=ip, hours=data["hours"], reason=data["reason"]
            )

        return self._with_form(
            request, queryset, SuspendForm, "Suspend devices", "Suspended", apply
        )

    @admin.action(description="Set tier…", permissions=["change"])
    def set_tier(self, request: HttpRequest, queryset: QuerySet[Device]) -> TemplateResponse | None:
        def apply(device: Device, actor: AbstractBaseUser, ip: str, data: dict[str, Any]) -> Any:
            return services.device_set_tier(device=device, tier=data["tier"], actor=actor, ip=ip)

        return self._with_form(request, queryset, SetTierForm, "Set tier", "Updated", apply)

    @admin.action(description="Assign user…", permissions=["change"])
    def assign_owner(
        self, request: HttpRequest, queryset: QuerySet[Device]
    ) -> TemplateResponse | None:
        def apply(device: Device, actor: AbstractBaseUser, ip: str, data: dict[str, Any]) -> Any:
            owner_name = data["owner_name"].strip() or None
            return services.device_assign_owner(
                device=device, owner_name=owner_name, actor=actor, ip=ip
            )

        return self._with_form(request, queryset, AssignOwnerForm, "Assign user", "Updated", apply)

    def _with_form(
        self,
        request: HttpRequest,
        queryset: QuerySet[Device],
        form_class: type[forms.Form],
        title: str,
        done: str,
        apply: Callable[[Device, AbstractBaseUser, str, dict[str, Any]], Any],
    ) -> TemplateResponse | None:
        """An intermediate page asking for the action's values, then the action."""
        form = form_class(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            data = form.cleaned_data
            self._each(request, queryset, done, lambda d, actor, ip: apply(d, actor, ip, data))
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "form": form,
            "devices": queryset,
            "action": request.POST.get("action", ""),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/devices/device/action_form.html", context)

    def _each(
        self,
        request: HttpRequest,
        queryset: QuerySet[Device],
        done: str,
        change: Callable[[Device, AbstractBaseUser, str], Any],
    ) -> None:
        """Apply a service to each device; one message per refusal, one for the rest."""
        actor = request.user
        assert isinstance(actor, AbstractBaseUser)  # the admin requires a staff login
        ip = client_ip_from_request(request)
        changed = 0
        for device in queryset:
            try:
                change(device, actor, ip)
            except GatewayError as error:
                self.message_user(request, error.detail, messages.ERROR)
            else:
                changed += 1
        if changed:
            self.message_user(request, f"{done} {changed} device(s).", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "actor", "action", "device", "changes", "ip")
    list_filter = ("action",)
    search_fields = ("=device__id", "actor")
    list_select_related = ("device",)
    fields = ("created_at", "actor", "actor_user", "action", "device", "changes", "ip")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(OwnerAccount)
class OwnerAccountAdmin(admin.ModelAdmin):
    list_display = ("name", "device_count", "created_at")
    search_fields = ("name",)
    fields = ("name", "created_at")
    readonly_fields = ("created_at",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[OwnerAccount]:
        queryset: QuerySet[OwnerAccount] = super().get_queryset(request)
        return queryset.annotate(device_count=Count("devices"))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # Renaming would change every device's owner behind the services' back.
        return ("name", "created_at") if obj is not None else ("created_at",)

    @admin.display(description="devices", ordering="device_count")
    def device_count(self, owner: OwnerAccount) -> int:
        return int(getattr(owner, "device_count", 0))
