"""The refusals admission produces (SPEC section 2's table), as GatewayErrors."""

from __future__ import annotations

from gateway.core.errors import PermissionDenied, RateLimited, ServiceUnavailable


class IpBlocked(PermissionDenied):
    code = "ip_blocked"
    message = "Requests from your IP address are blocked"


class DeviceRateLimited(RateLimited):
    code = "device_rate_limit_exceeded"
    message = "Device rate limit exceeded"


class IpRateLimited(RateLimited):
    code = "ip_rate_limit_exceeded"
    message = "IP rate limit exceeded"


class UserRateLimited(RateLimited):
    code = "user_rate_limit_exceeded"
    message = "User rate limit exceeded"


class BurstRateLimited(RateLimited):
    code = "burst_rate_limit_exceeded"
    message = "Too many requests per minute from this device"


class GlobalRateLimited(RateLimited):
    code = "global_rate_limit_exceeded"
    message = "The gateway's daily request limit is reached"


class ConcurrencyLimited(RateLimited):
    code = "concurrency_limit_exceeded"
    message = "This device already has its limit of requests in flight"


class DeviceBudgetExceeded(RateLimited):
    code = "device_budget_exceeded"
    message = "This device's daily spending cap would be exceeded"


class RegistrationRateLimited(RateLimited):
    code = "registration_rate_limit_exceeded"
    message = "Too many registrations from this IP address"


class ServicePaused(ServiceUnavailable):
    code = "service_paused"
    message = "The service is paused"


class BudgetExceeded(ServiceUnavailable):
    code = "budget_exceeded"
    message = "The daily budget would be exceeded"


LAYER_ERRORS: dict[str, type[RateLimited]] = {
    "device": DeviceRateLimited,
    "ip": IpRateLimited,
    "user": UserRateLimited,
    "burst": BurstRateLimited,
    "global": GlobalRateLimited,
}
