"""Security headers on pages Django renders (admin, dashboard).

The policy allows only the gateway's own scripts, styles and images: no
inline script, no CDN, no framing (X-Frame-Options DENY comes from Django's
clickjacking middleware as well, for old browsers). HSTS and secure cookies
are Django settings on the production profile only, since the embedded
profile serves plain HTTP on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponseBase

from gateway.core.middleware import HybridMiddleware

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
    )
)


class ContentSecurityPolicyMiddleware(HybridMiddleware):
    def after(
        self, request: HttpRequest, response: HttpResponseBase, state: Any
    ) -> HttpResponseBase:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
