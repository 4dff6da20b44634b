"""Settings for songsgen: one module, every deployment difference from the environment.

Environment variables (all optional in development, see README.md):
  DEBUG                    "1"/"true"/"yes"/"on" turns debug on; off by default.
  SECRET_KEY               required when DEBUG is off.
  ALLOWED_HOSTS            comma-separated host names.
  SONGSGEN_DATA_DIR        folder for the SQLite file, media/ and backups/ (default: ./data).
  DATABASE_URL             default sqlite:///<data dir>/songs.db; postgres://… for PostgreSQL.
  SONGSGEN_BACKUP_DIR      default <data dir>/backups.
  SONGSGEN_SQLITE_CACHE_SIZE, SONGSGEN_SQLITE_BUSY_TIMEOUT   SQLite pragmas (see songsgen/db/sqlite.py).
  SONGSGEN_CONN_MAX_AGE, SONGSGEN_PG_CONNECT_TIMEOUT   PostgreSQL persistent connections and connect timeout.
  SONGSGEN_SECURE_SSL_REDIRECT, SONGSGEN_SECURE_COOKIES, SONGSGEN_HSTS_SECONDS,
  SONGSGEN_BEHIND_TLS_PROXY   HTTPS hardening; all on (except the proxy header) when DEBUG is off.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}


def env_bool(name: str, default: bool = False) -> bool:
    """Read a boolean from the environment."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in _TRUE


def env_int(name: str, default: int) -> int:
    """Read an integer from the environment, with a clear error for a bad value."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    """Read a comma-separated list from the environment."""
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG")

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set the SECRET_KEY environment variable to a long random "
            "value (e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
            "or set DEBUG=1 for local development."
        )
    # Development only: never used when DEBUG is off.
    SECRET_KEY = "django-insecure-songsgen-development-key-not-for-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])

DATA_DIR = Path(os.environ.get("SONGSGEN_DATA_DIR") or BASE_DIR / "data").resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)
MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "/media/"
BACKUP_DIR = Path(os.environ.get("SONGSGEN_BACKUP_DIR") or DATA_DIR / "backups").resolve()

INSTALLED_APPS = [
    "songsgen",  # first, so its admin templates (capped pagination) take precedence
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_extensions",
    "accounts",
    "queueing",
    "songs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "songsgen.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

WSGI_APPLICATION = "songsgen.wsgi.application"

# --- Database -----------------------------------------------------------------------------------
SQLITE_CACHE_SIZE = env_int("SONGSGEN_SQLITE_CACHE_SIZE", -10000)  # negative: KiB, as SQLite reads it
SQLITE_BUSY_TIMEOUT_MS = env_int("SONGSGEN_SQLITE_BUSY_TIMEOUT", 10000)

DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'songs.db'}"
try:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=0)
except Exception as exc:  # dj_database_url raises a bare ValueError/KeyError for unknown schemes
    raise ImproperlyConfigured(f"DATABASE_URL could not be parsed ({exc}).") from exc

if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["OPTIONS"] = {
        # Every write transaction takes the write lock up front, so two writers queue on the
        # busy timeout instead of one failing with "database is locked" on lock upgrade.
        "transaction_mode": "IMMEDIATE",
        "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
    }
elif _db["ENGINE"] in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
    _db["ENGINE"] = "django.db.backends.postgresql"
    _db["CONN_MAX_AGE"] = env_int("SONGSGEN_CONN_MAX_AGE", 60)
    _db["CONN_HEALTH_CHECKS"] = True
    # --- PostgreSQL production connection (issue 6) ---
    # sslmode, sslrootcert, … come from the URL's query string (dj-database-url puts them in OPTIONS,
    # e.g. ?sslmode=verify-full). A server that does not answer fails after connect_timeout seconds
    # instead of waiting for TCP to give up; `?connect_timeout=N` in the URL wins.
    _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", env_int("SONGSGEN_PG_CONNECT_TIMEOUT", 10))
    # --- end PostgreSQL production connection ---
else:
    raise ImproperlyConfigured(
        f"DATABASE_URL must point at SQLite or PostgreSQL, got engine {_db['ENGINE']!r}."
    )

DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth ---------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

# --- i18n / static ------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"

# --- Security (all on when DEBUG is off; `manage.py check --deploy` passes) -------------------
SESSION_COOKIE_SECURE = env_bool("SONGSGEN_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("SONGSGEN_SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env_int("SONGSGEN_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
if env_bool("SONGSGEN_BEHIND_TLS_PROXY"):
    # Only trust X-Forwarded-Proto when a proxy we control sets it.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("SONGSGEN_LOG_LEVEL", "WARNING")},
}
