"""Settings: the only module that reads the environment.

Zero environment runs the embedded profile (SQLite file, in-process store,
generated SECRET_KEY kept in var/). Setting both DATABASE_URL and REDIS_URL
selects the production profile (PostgreSQL, Redis), which refuses to start
without SECRET_KEY. Every name of SPEC section 1 is read here with its default.
"""

from __future__ import annotations

import ipaddress
import secrets
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from gateway import __version__
from gateway.core.files import create_private, private_directory

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

# Local state: the embedded profile's database and generated secret key, the
# usage spool, the store's epoch. Owner-only, like all it holds (gateway.core.files).
# A relative path is taken from the project directory.
VAR_DIR: Path = BASE_DIR / env.str("VAR_DIR", default="var")


def _decimal(name: str, default: str) -> Decimal:
    raw = env.str(name, default=default)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ImproperlyConfigured(f"{name} must be a non-negative number, got {raw!r}")
    return value


def _positive_int(name: str, default: int) -> int:
    value: int = env.int(name, default=default)
    if value < 0:
        raise ImproperlyConfigured(f"{name} must not be negative, got {value}")
    return value


def _at_least_one(name: str, default: int) -> int:
    value = _positive_int(name, default)
    if value < 1:
        raise ImproperlyConfigured(f"{name} must be at least 1, got {value}")
    return value


def _seconds(name: str, default: float) -> float:
    raw = env.str(name, default=str(default))
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ImproperlyConfigured(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _networks(name: str, default: list[str]) -> list[str]:
    values: list[str] = env.list(name, default=default)
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {value!r} is not an IP address or CIDR") from None
    return values


# --- Profile -----------------------------------------------------------------

DATABASE_URL = env.str("DATABASE_URL", default="")
REDIS_URL: str | None = env.str("REDIS_URL", default="") or None
GATEWAY_PROFILE = "production" if DATABASE_URL and REDIS_URL else "embedded"

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
# How many worker processes the server runs (gunicorn reads the same name);
# only used by the system check that warns about several workers sharing an
# in-process store.
WEB_CONCURRENCY = env.int("WEB_CONCURRENCY", default=1)


def _embedded_secret_key() -> str:
    path = VAR_DIR / "secret_key"
    if not path.exists():
        create_private(private_directory(VAR_DIR) / "secret_key", secrets.token_urlsafe(50))
    return path.read_text().strip()


if GATEWAY_PROFILE == "production":
    SECRET_KEY = env.str("SECRET_KEY", default="")
    if not SECRET_KEY:
        raise ImproperlyConfigured("SECRET_KEY must be set on the production profile")
else:
    SECRET_KEY = env.str("SECRET_KEY", default="") or _embedded_secret_key()

TOKEN_PEPPER = env.str("TOKEN_PEPPER", default="")
TOKEN_PEPPER_IS_EXPLICIT = bool(TOKEN_PEPPER)

# --- Applications ------------------------------------------------------------

INSTALLED_APPS = [
    # Django's admin with our site class (second factor, login throttling).
    "gateway.apps.GatewayAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "drf_spectacular",
    "gateway",
    "devices",
    "usage",
    "billing",
    "dashboard",
]

MIDDLEWARE = [
    "gateway.core.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "gateway.staff.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "gateway.core.middleware.ApiErrorMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a flagged login into its lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "gateway.urls"
WSGI_APPLICATION = "gateway.wsgi.application"
ASGI_APPLICATION = "gateway.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ----------------------------------------------------------------

if DATABASE_URL:
    DATABASES = {"default": env.db_url("DATABASE_URL")}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "gateway.sqlite3",
        }
    }

_default_db: dict[str, Any] = DATABASES["default"]
if _default_db["ENGINE"] == "django.db.backends.sqlite3":
    private_directory(VAR_DIR)
    # WAL lets readers and one writer work at once; IMMEDIATE transactions and
    # a busy timeout make concurrent writers wait instead of failing with
    # "database is locked". The test database is a file too, so gateway
    # server processes started by tests can open it.
    _default_db["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    _default_db["TEST"] = {"NAME": str(VAR_DIR / "test_gateway.sqlite3")}
elif _default_db["ENGINE"] == "django.db.backends.postgresql":
    # A pool rather than CONN_MAX_AGE: under ASGI, persistent connections are
    # per thread and leak; the pool is shared by the process. A short connect
    # timeout turns a database outage into a quick 503 instead of a hang.
    _default_db["CONN_MAX_AGE"] = 0
    _default_db.setdefault("OPTIONS", {})
    _default_db["OPTIONS"].update(
        {
            "connect_timeout": 3,
            "pool": {"min_size": 1, "max_size": env.int("DATABASE_POOL_SIZE", 10), "timeout": 5},
        }
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Shared store and caches -------------------------------------------------

# "redis" on the production profile; "memory" keeps limits, budget counters
# and caches inside the one process (embedded profile, single worker only).
GATEWAY_STORE = "redis" if REDIS_URL else "memory"

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "hz",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth and sessions -------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
ADMIN_REQUIRE_2FA = env.bool("ADMIN_REQUIRE_2FA", default=GATEWAY_PROFILE == "production")
OTP_TOTP_ISSUER = "Hanzo AI Gateway"
LOGIN_URL = "admin:login"
# Staff sessions last a working day, then the password and code are asked again.
SESSION_COOKIE_AGE = 12 * 3600

# Brute-force protection on the admin login (django-axes): after
# ADMIN_LOGIN_FAILURE_LIMIT failures (wrong password or wrong TOTP code)
# against one user name (from anywhere), or from one client network (an IPv4
# address, an IPv6 /64; any user names), logins of that user name or from that
# network are refused with 429 for ADMIN_LOGIN_COOLOFF_MINUTES
# (gateway/staff/login_guard.py). Attempts live in the database, so every worker
# sees them.
AUTHENTICATION_BACKENDS = [
    "gateway.staff.login_guard.LoginGuardBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = _positive_int("ADMIN_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = "gateway.staff.login_guard.cool_off"
ADMIN_LOGIN_COOLOFF_MINUTES = _positive_int("ADMIN_LOGIN_COOLOFF_MINUTES", 15)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "gateway.staff.login_guard.client_network"
AXES_RESET_ON_SUCCESS = False  # gateway.staff.login_guard.forget_own_failures instead
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False

# --- Internationalisation ----------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files (served by WhiteNoise, never a CDN) ------------------------

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the apps' static folders when collectstatic has not run
# (tests, a fresh checkout); production images collect at build time.
WHITENOISE_USE_FINDERS = True

# --- CORS --------------------------------------------------------------------

CORS_ALLOWED_ORIGINS = env.list(
    "CORS_ALLOWED_ORIGINS", default=["https://app.hanzo.ai", "tauri://localhost"]
)
CORS_URLS_REGEX = r"^/(v1|health)(/.*)?$"
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "user-agent",
    "x-device-id",
    "x-session-token",
    "x-stainless-arch",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-retry-count",
    "x-stainless-timeout",
)
CORS_EXPOSE_HEADERS = (
    "x-request-id",
    "retry-after",
    "x-request-cost-usd",
    "x-ratelimit-limit-device",
    "x-ratelimit-remaining-device",
    "x-ratelimit-reset-device",
    "x-ratelimit-limit-ip",
    "x-ratelimit-remaining-ip",
)
CORS_ALLOW_METHODS = ("DELETE", "GET", "OPTIONS", "PATCH", "POST", "PUT")
CORS_PREFLIGHT_MAX_AGE = 600

# --- Django REST framework (admin JSON API) ----------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    # Staff only, second factor included when ADMIN_REQUIRE_2FA is on.
    "DEFAULT_PERMISSION_CLASSES": ["gateway.core.permissions.IsVerifiedStaff"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["gateway.core.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "gateway.core.errors_drf.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# GET /openapi.json (gateway/proxy/openapi.py): the admin API generated from the DRF
# views, the client API merged in from gateway/proxy/openapi.yaml.
SPECTACULAR_SETTINGS = {
    "TITLE": "Hanzo AI Gateway",
    "DESCRIPTION": (
        "OpenAI-compatible LLM gateway: device registration, chat completions, usage, "
        "and the staff-only admin JSON API. Every error is OpenAI's error object."
    ),
    "VERSION": __version__,
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "gateway.proxy.openapi.merge_client_api",
    ],
}

# --- Providers and keys ------------------------------------------------------

SECRETS_BACKEND = env.str("SECRETS_BACKEND", default="env")
if SECRETS_BACKEND not in ("env", "aws"):
    raise ImproperlyConfigured(f"SECRETS_BACKEND must be 'env' or 'aws', got {SECRETS_BACKEND!r}")
AWS_REGION = env.str("AWS_REGION", default="us-east-1")
AWS_ENDPOINT_URL: str | None = env.str("AWS_ENDPOINT_URL", default="") or None
SECRET_CACHE_SECONDS = _positive_int("SECRET_CACHE_SECONDS", 300)
PROVIDER_ENV_KEYS = {
    "openai": env.str("OPENAI_API_KEY", default=""),
    "anthropic": env.str("ANTHROPIC_API_KEY", default=""),
    "digitalocean": env.str("DIGITALOCEAN_API_KEY", default=""),
}
# A pool per provider, used in turn: the single key above, then these
# (comma-separated). keys.env_pool strips them and drops blanks and repeats.
PROVIDER_ENV_KEY_LISTS: dict[str, list[str]] = {
    "openai": env.list("OPENAI_API_KEYS", default=[]),
    "anthropic": env.list("ANTHROPIC_API_KEYS", default=[]),
    "digitalocean": env.list("DIGITALOCEAN_API_KEYS", default=[]),
}
PROVIDER_BASE_URLS = {
    "openai": env.str("OPENAI_BASE_URL", default="https://api.openai.com/v1").rstrip("/"),
    "anthropic": env.str("ANTHROPIC_BASE_URL", default="https://api.anthropic.com").rstrip("/"),
    "digitalocean": env.str(
        "DIGITALOCEAN_BASE_URL", default="https://inference.do-ai.run/v1"
    ).rstrip("/"),
}
UPSTREAM_TIMEOUT_SECONDS = env.float("UPSTREAM_TIMEOUT_SECONDS", default=90.0)
UPSTREAM_CONNECT_TIMEOUT_SECONDS = env.float("UPSTREAM_CONNECT_TIMEOUT_SECONDS", default=5.0)
# Retries and fallbacks before any output (gateway.proxy.attempts): no attempt
# starts after this many seconds from the first, nor past this many attempts.
UPSTREAM_TOTAL_TIMEOUT_SECONDS = env.float("UPSTREAM_TOTAL_TIMEOUT_SECONDS", default=120.0)
UPSTREAM_MAX_ATTEMPTS = _positive_int("UPSTREAM_MAX_ATTEMPTS", 4)
# A stream whose client reads nothing for this long is ended and settled.
STREAM_IDLE_TIMEOUT_SECONDS = env.float("STREAM_IDLE_TIMEOUT_SECONDS", default=30.0)

# --- Circuit breakers (usage.breakers) ----------------------------------------

# A route or provider key that fails this often within the window is skipped
# for the cool-down; then one request (the probe) tests it and closes it again.
BREAKER_FAILURES = _at_least_one("BREAKER_FAILURES", 5)
BREAKER_WINDOW_SECONDS = _at_least_one("BREAKER_WINDOW_SECONDS", 30)
BREAKER_COOLDOWN_SECONDS = _seconds("BREAKER_COOLDOWN_SECONDS", 30.0)
# A probe not reported within this long is lost: another request may probe.
BREAKER_PROBE_SECONDS = _seconds("BREAKER_PROBE_SECONDS", 120.0)
# How often each process sends its counts to the store and reads every
# breaker's state back: how soon the other processes learn a breaker opened.
BREAKER_SYNC_SECONDS = _seconds("BREAKER_SYNC_SECONDS", 1.0)

# --- Budget ------------------------------------------------------------------

DAILY_BUDGET_USD = _decimal("DAILY_BUDGET_USD", "50")
BUDGET_TIMEZONE = env.str("BUDGET_TIMEZONE", default="UTC")
BUDGET_WARNING_PERCENT = _positive_int("BUDGET_WARNING_PERCENT", 80)
DEVICE_DAILY_BUDGET_USD = {
    "free": _decimal("DEVICE_DAILY_BUDGET_USD_FREE", "0.50"),
    "paid": _decimal("DEVICE_DAILY_BUDGET_USD_PAID", "10"),
}
# The service pauses itself when less than this is left after settled spend;
# unset: 1% of DAILY_BUDGET_USD (usage.limits.pause_below_micro_usd).
BUDGET_PAUSE_REMAINING_USD: Decimal | None = (
    _decimal("BUDGET_PAUSE_REMAINING_USD", "0")
    if env.str("BUDGET_PAUSE_REMAINING_USD", default="")
    else None
)
# A gateway process silent (no heartbeat) this long is dead: its budget
# reservations count as spent at their worst case (usage.liveness).
RESERVATION_LIVENESS_SECONDS = env.float("RESERVATION_LIVENESS_SECONDS", default=30.0)

# --- Rate limits -------------------------------------------------------------

RATE_LIMITS = {
    tier: {
        "device_per_day": _positive_int(f"RATE_LIMIT_{tier.upper()}_DEVICE_PER_DAY", day),
        "ip_per_day": _positive_int(f"RATE_LIMIT_{tier.upper()}_IP_PER_DAY", ip_day),
        "user_per_day": _positive_int(f"RATE_LIMIT_{tier.upper()}_USER_PER_DAY", user_day),
        "device_per_minute": _positive_int(f"RATE_LIMIT_{tier.upper()}_DEVICE_PER_MINUTE", burst),
    }
    for tier, day, ip_day, user_day, burst in (
        ("free", 100, 500, 1000, 5),
        ("paid", 10000, 50000, 100000, 100),
    )
}
RATE_LIMIT_GLOBAL_PER_DAY = _positive_int("RATE_LIMIT_GLOBAL_PER_DAY", 10000)
REGISTRATIONS_PER_IP_PER_HOUR = _positive_int("REGISTRATIONS_PER_IP_PER_HOUR", 10)
MAX_TOKENS = {
    "free": _positive_int("MAX_TOKENS_FREE", 1024),
    "paid": _positive_int("MAX_TOKENS_PAID", 8192),
}
MAX_REQUEST_BYTES = _positive_int("MAX_REQUEST_BYTES", 1048576)
# A chat request carrying images (image_url parts) from an authenticated
# device may be this large; every other body keeps MAX_REQUEST_BYTES.
MAX_IMAGE_REQUEST_BYTES = _positive_int("MAX_IMAGE_REQUEST_BYTES", 20 * 1024 * 1024)
# A body not fully arrived this long after its request began gets 408 (SPEC: 30 s).
REQUEST_BODY_TIMEOUT_SECONDS = env.float("REQUEST_BODY_TIMEOUT_SECONDS", default=30.0)
MAX_CONCURRENT_REQUESTS = {
    "free": _positive_int("MAX_CONCURRENT_REQUESTS_FREE", 2),
    "paid": _positive_int("MAX_CONCURRENT_REQUESTS_PAID", 10),
}
# Django's own cap on form bodies (admin, dashboard) follows the same limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES

# --- Abuse guard -------------------------------------------------------------

TRUSTED_PROXIES = _networks("TRUSTED_PROXIES", [])
# The one header believed from a trusted proxy (gateway.core.client_ip).
CLIENT_IP_HEADER = env.str("CLIENT_IP_HEADER", default="X-Forwarded-For")
_CLIENT_IP_HEADERS = {"x-forwarded-for": "X-Forwarded-For", "x-real-ip": "X-Real-IP"}
if CLIENT_IP_HEADER.lower() not in _CLIENT_IP_HEADERS:
    raise ImproperlyConfigured(
        f"CLIENT_IP_HEADER must be X-Forwarded-For or X-Real-IP, got {CLIENT_IP_HEADER!r}"
    )
CLIENT_IP_HEADER = _CLIENT_IP_HEADERS[CLIENT_IP_HEADER.lower()]
# Read by uvicorn and gunicorn (they trust it to rewrite client addresses),
# never by the gateway: check hanzo.W005 warns when it is set without TRUSTED_PROXIES.
SERVER_FORWARDED_ALLOW_IPS = env.str("FORWARDED_ALLOW_IPS", default="")
SUSPICIOUS_IPS_PER_DEVICE_PER_DAY = _positive_int("SUSPICIOUS_IPS_PER_DEVICE_PER_DAY", 20)
AUTH_FAILURES_PER_IP_PER_HOUR = _positive_int("AUTH_FAILURES_PER_IP_PER_HOUR", 100)
IP_BLOCK_MINUTES = _positive_int("IP_BLOCK_MINUTES", 15)

# --- Alerts ------------------------------------------------------------------

SLACK_BOT_TOKEN = env.str("SLACK_BOT_TOKEN", default="")
SLACK_CHANNEL = env.str("SLACK_CHANNEL", default="#hanzo-alerts")
SLACK_API_URL = env.str("SLACK_API_URL", default="https://slack.com/api/")

# --- Metrics -----------------------------------------------------------------

METRICS_ALLOWED_IPS = _networks("METRICS_ALLOWED_IPS", ["127.0.0.1", "::1"])
# Several worker processes on one host (gunicorn) share their counters
# through files in this directory (prometheus-client's multiprocess mode, which
# reads the variable itself); empty it when the server starts (gunicorn.conf.py
# does). Unset: each process reports only its own counters.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")

# --- Logging -----------------------------------------------------------------

LOG_FORMAT = env.str("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'text' or 'json', got {LOG_FORMAT!r}")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "gateway.core.logs.RequestIdFilter"}},
    "formatters": {
        "text": {
            "()": "gateway.core.logs.RedactingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        },
        "json": {"()": "gateway.core.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # 4xx are already in the access line; keep Django's own lines for 5xx.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "ERROR"},
        # Route the server's own loggers through our redacting handler.
        "uvicorn": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
    },
}

# --- Security ----------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if GATEWAY_PROFILE == "production":
    # TLS terminates at the proxy in front (nginx), which sets X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
    # nginx redirects HTTP to HTTPS (deploy/nginx.conf); the app's own port
    # speaks plain HTTP on the private network to nginx, container health
    # checks and Prometheus, so it does not redirect by default.
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
    SECURE_REDIRECT_EXEMPT = [r"^health(/ready)?$"]

# Deployment checks silenced, each for a reason (python manage.py check --deploy):
SILENCED_SYSTEM_CHECKS = [
    # SECURE_SSL_REDIRECT: the redirect to HTTPS is nginx's job (see above).
    "security.W008",
    # SECURE_HSTS_PRELOAD: joining browsers' preload list is a commitment for
    # the whole domain that is slow to undo; the operator opts in.
    "security.W021",
]

# --- Usage spool ---------------------------------------------------------------

# Usage records are appended here before they reach the database, so a slow
# or absent database never loses one (usage/spool.py). Keep it on a disk that
# survives a restart of the process (a volume in containers).
USAGE_SPOOL_DIR = env.str("USAGE_SPOOL_DIR", default=str(VAR_DIR / "spool"))

# --- Tests -------------------------------------------------------------------

# A file holding a clock offset in seconds, so tests can move time inside the
# gateway server processes they start (see gateway.core.clock). Never set it in
# production.
GATEWAY_TEST_CLOCK_FILE: str | None = env.str("GATEWAY_TEST_CLOCK_FILE", default="") or None
