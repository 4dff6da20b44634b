"""Settings for songsgen: one module, every deployment difference from the environment.

The variables are listed in README.md, "Configuration".
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
        raise ImproperlyConfigured(
            f"{name} must be a whole number, got {value!r}. Set a whole number, or unset it for the default "
            f"({default})."
        ) from None


def env_list(name: str, default: list[str]) -> list[str]:
    """Read a comma-separated list from the environment."""
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG")

# With DEBUG off and no key, SECRET_KEY stays empty: tooling that never signs anything
# (makemigrations, migrate, a lint in CI) still runs, while the WSGI application refuses to start,
# `check --deploy` fails (songsgen.E001), and Django itself refuses any use of the empty key.
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY and DEBUG:
    # Development only: never used when DEBUG is off.
    SECRET_KEY = "django-insecure-songsgen-development-key-not-for-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])

# created at the end
DATA_DIR = Path(os.environ.get("SONGSGEN_DATA_DIR") or BASE_DIR / "data").resolve()
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
    # Static files from STATIC_ROOT, before anything else touches the request (docs/deploy.md).
    "whitenoise.middleware.WhiteNoiseMiddleware",
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

# --- Database ------------------------------------------------------------------------------------
# negative: KiB, as SQLite reads it
SQLITE_CACHE_SIZE = env_int("SONGSGEN_SQLITE_CACHE_SIZE", -10000)
SQLITE_BUSY_TIMEOUT_MS = env_int("SONGSGEN_SQLITE_BUSY_TIMEOUT", 10000)

DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'songs.db'}"
# Never the URL itself in a message: it may hold a password.
_URL_ADVICE = ("Set it to sqlite:////path/to/songs.db or postgres://USER:PASSWORD@HOST:5432/NAME, or unset it "
               "for songs.db in SONGSGEN_DATA_DIR.")
_scheme = DATABASE_URL.split("://", 1)[0] if "://" in DATABASE_URL else ""
try:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=0)
except dj_database_url.UnknownSchemeError:
    _what = f"the unknown scheme {_scheme + '://'!r}" if _scheme else "no scheme"
    raise ImproperlyConfigured(f"DATABASE_URL has {_what}. {_URL_ADVICE}") from None
except ValueError:  # dj-database-url's ParseError, or a port that is not a number
    raise ImproperlyConfigured(
        f"DATABASE_URL is not a valid URL (characters such as @ : / in the password must be %-quoted). "
        f"{_URL_ADVICE}"
    ) from None

# Every SQLite connection of ours (this default one, and those transferdb/dbcompare open from a
# URL): each write transaction takes the write lock up front, so two writers queue on the busy
# timeout instead of one failing with "database is locked" on lock upgrade.
SQLITE_OPTIONS = {"transaction_mode": "IMMEDIATE", "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
# A PostgreSQL server that does not answer fails after this many seconds instead of waiting for TCP
# to give up; `?connect_timeout=N` in a URL wins.
PG_CONNECT_TIMEOUT = env_int("SONGSGEN_PG_CONNECT_TIMEOUT", 10)

# Django's SQLite backend with our schema editor: a rebuild or index build of a big table runs online
# (docs/migrations.md, "Online rebuilds").
SQLITE_ENGINE = "songsgen.db.migrate.sqlite3"
# ... and Django's PostgreSQL backend with ours: on a big table, each statement that would stall writers runs in its
# safe form (CONCURRENTLY, NOT VALID + VALIDATE, unique via an index, NOT NULL via a CHECK).
POSTGRESQL_ENGINE = "songsgen.db.migrate.postgresql"
if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["ENGINE"] = SQLITE_ENGINE
    _db["OPTIONS"] = dict(SQLITE_OPTIONS)
elif _db["ENGINE"] in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
    _db["ENGINE"] = POSTGRESQL_ENGINE
    _db["CONN_MAX_AGE"] = env_int("SONGSGEN_CONN_MAX_AGE", 60)
    _db["CONN_HEALTH_CHECKS"] = True
    # sslmode, sslrootcert, … come from the URL's query string (dj-database-url puts them in
    # OPTIONS, e.g. ?sslmode=verify-full).
    _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", PG_CONNECT_TIMEOUT)
else:
    raise ImproperlyConfigured(
        f"DATABASE_URL names a {_scheme}:// database; songsgen runs on SQLite or PostgreSQL. {_URL_ADVICE}"
    )

DATABASES = {"default": _db}

# --- Safe migrate and database checks (docs/migrations.md) ---------------------------------------
# Free space the backup folder must have before migrate touches anything: database size x factor +
# margin. `call_command("migrate")` from code takes the safe path too (the test settings opt out,
# for the test runner).
MIGRATE_SAFE_BY_DEFAULT = True
MIGRATE_BACKUP_SIZE_FACTOR = float(os.environ.get("SONGSGEN_MIGRATE_BACKUP_SIZE_FACTOR") or 1.1)
MIGRATE_BACKUP_MARGIN_BYTES = env_int("SONGSGEN_MIGRATE_BACKUP_MARGIN_MB", 64) * 1024 * 1024
# SQLite: a table rebuild or index build on a table of at least this many rows runs online (shadow
# table, capture triggers, chunked copy); below it Django's one-transaction rebuild is quicker.
ONLINE_REBUILD_MIN_ROWS = env_int("SONGSGEN_ONLINE_REBUILD_MIN_ROWS", 10_000)
# ... and waits while more than this much of the WAL is not yet checkpointed (a reader or Litestream behind).
ONLINE_REBUILD_WAL_BACKLOG_MB = env_int("SONGSGEN_ONLINE_REBUILD_WAL_BACKLOG_MB", 256)
# pre-migrate snapshots kept per database
MIGRATE_KEEP_SNAPSHOTS = env_int("SONGSGEN_MIGRATE_KEEP_SNAPSHOTS", 3)
# PostgreSQL: a migration waiting longer than this for a lock fails (and is retried) instead of
# queueing every query behind it; below 1 s, so no write waits a second behind a queued DDL, and
# five attempts outlast 3 s.
MIGRATE_LOCK_TIMEOUT_MS = env_int("SONGSGEN_MIGRATE_LOCK_TIMEOUT_MS", 800)
MIGRATE_STATEMENT_TIMEOUT_MS = env_int("SONGSGEN_MIGRATE_STATEMENT_TIMEOUT_MS", 0)  # 0: no limit
# "full" (PRAGMA integrity_check) or "quick" (quick_check) after migrating a SQLite database.
MIGRATE_VERIFY_INTEGRITY = os.environ.get("SONGSGEN_MIGRATE_VERIFY_INTEGRITY") or "full"
# A table with at least this many rows is "big": unique additions and (PostgreSQL)
# locking DDL are unsafe.
MIGRATE_BIG_TABLE_ROWS = env_int("SONGSGEN_MIGRATE_BIG_TABLE_ROWS", 100_000)
# dbcheck: a hot query may not scan a table holding at least this many rows.
DBCHECK_BIG_TABLE_ROWS = env_int("SONGSGEN_DBCHECK_BIG_TABLE_ROWS", 10_000)
# dbmaintain: VACUUM when free pages exceed this share of the file.
DBMAINTAIN_VACUUM_FREE_RATIO = float(os.environ.get("SONGSGEN_DBMAINTAIN_VACUUM_FREE_RATIO") or 0.2)
# Tables migrations create outside the model state (RunSQL/RunPython), which dbcheck
# should not report. The SQLite FTS5 search table and its shadow tables; Litestream's own
# two tables (`replicate`).
SCHEMA_KNOWN_EXTRA_TABLES = ["songs_song_search*", "_litestream_*"]
# Indexes the same way: songs 0004's PostgreSQL trigram indexes (the state cannot hold an index
# that exists on one engine only; SQLite's FTS5 table stands in for them there).
SCHEMA_KNOWN_EXTRA_INDEXES = ["songs_title_trgm", "songs_suno_id_trgm"]
# The named hot queries dbcheck explains: name -> dotted path of a callable returning a QuerySet.
SONGSGEN_HOT_QUERIES = {
    "songs by user and status": "songsgen.hot_queries.songs_by_user_status",
    "newest songs": "songsgen.hot_queries.newest_songs",
    "pending songs": "songsgen.hot_queries.pending_songs",
    "next job": "songsgen.hot_queries.next_job",
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Generation queue (docs/queue.md) ------------------------------------------------------------
def _env_number(name: str, default: float, unit: str) -> float:
    """Read a non-negative number of `unit` (seconds, hours) from the environment."""
    value = os.environ.get(name, "").strip()
    try:
        number = float(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of {unit}, got {value!r}.") from None
    if number < 0:
        raise ImproperlyConfigured(f"{name} must not be negative, got {value!r}.")
    return number


def _env_seconds(name: str, default: float) -> float:
    return _env_number(name, default, "seconds")


# Dotted path of the generator class, instantiated without arguments (`queueing.generators`).
SONGSGEN_GENERATOR = os.environ.get("SONGSGEN_GENERATOR") or "queueing.generators.LocalWavGenerator"
# How long a claimed job stays a worker's without a renewal; the worker renews it every
# HEARTBEAT seconds (default: a third of the lease). `queueing.config` checks both at start.
SONGSGEN_LEASE_SECONDS = _env_seconds("SONGSGEN_LEASE_SECONDS", 60)
SONGSGEN_HEARTBEAT_SECONDS = (_env_seconds("SONGSGEN_HEARTBEAT_SECONDS", 0)
                              if os.environ.get("SONGSGEN_HEARTBEAT_SECONDS", "").strip() else None)
# Longest one generation may take before it is stopped and counted as a failed attempt; a job's
# own timeout_seconds wins.
SONGSGEN_GENERATION_TIMEOUT = _env_seconds("SONGSGEN_GENERATION_TIMEOUT", 600)
# Retry n waits about BACKOFF * 2**(n-1) seconds (with jitter), at most BACKOFF_MAX.
SONGSGEN_RETRY_BACKOFF_SECONDS = _env_seconds("SONGSGEN_RETRY_BACKOFF_SECONDS", 10)
SONGSGEN_RETRY_BACKOFF_MAX_SECONDS = _env_seconds("SONGSGEN_RETRY_BACKOFF_MAX_SECONDS", 3600)
# Jobs a worker claims in one statement. Jobs not started within a moment go back (fairness).
SONGSGEN_CLAIM_BATCH = env_int("SONGSGEN_CLAIM_BATCH", 64)
# --- end of generation queue ---------------------------------------------------------------------

# --- Read replicas (PostgreSQL streaming replicas; docs/postgres.md, "Read replicas") ------------
# Comma-separated postgres:// URLs of hot standbys of DATABASE_URL's server, each the alias replica1, replica2, ...
# Reads that tolerate a little lag go there (`songsgen.db.replicas`); empty: one database, nothing changes.
READ_REPLICA_URLS = env_list("DATABASE_REPLICA_URLS", [])
# A replica further behind than this, or not answering within its connect timeout, is skipped until it recovers,
# looked at again at most every CHECK seconds (not per query).
READ_REPLICA_MAX_LAG_SECONDS = _env_seconds("SONGSGEN_REPLICA_MAX_LAG_SECONDS", 5)
READ_REPLICA_CONNECT_TIMEOUT = env_int("SONGSGEN_REPLICA_CONNECT_TIMEOUT", 2)
READ_REPLICA_CHECK_SECONDS = _env_seconds("SONGSGEN_REPLICA_CHECK_SECONDS", 2)
# The migrate waits this long after each migration for every replica to replay it, then says so and goes on.
MIGRATE_REPLICA_WAIT_SECONDS = _env_seconds("SONGSGEN_MIGRATE_REPLICA_WAIT_SECONDS", 60)
if READ_REPLICA_URLS:
    if DATABASES["default"]["ENGINE"] != POSTGRESQL_ENGINE:
        raise ImproperlyConfigured(
            "DATABASE_REPLICA_URLS is set but DATABASE_URL is not PostgreSQL: read replicas are PostgreSQL streaming "
            "replicas of DATABASE_URL's server. Unset DATABASE_REPLICA_URLS."
        )
    for _number, _url in enumerate(READ_REPLICA_URLS, start=1):
        try:
            _replica = dj_database_url.parse(_url, conn_max_age=DATABASES["default"]["CONN_MAX_AGE"])
        except (dj_database_url.UnknownSchemeError, ValueError):
            _replica = {"ENGINE": ""}
        if _replica["ENGINE"] not in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
            raise ImproperlyConfigured(
                f"DATABASE_REPLICA_URLS: entry {_number} is not a postgres:// URL (characters such as @ : / in the "
                "password must be %-quoted). Give each replica as postgres://USER:PASSWORD@HOST:5432/NAME."
            )
        _replica["ENGINE"] = POSTGRESQL_ENGINE
        _replica["CONN_HEALTH_CHECKS"] = True
        _replica.setdefault("OPTIONS", {}).setdefault("connect_timeout", READ_REPLICA_CONNECT_TIMEOUT)
        # A physical replica already holds the primary's test database under the same name: the test runner
        # neither creates nor flushes it, and points it at default's test database (MIRROR).
        _replica["TEST"] = {"MIRROR": "default"}
        DATABASES[f"replica{_number}"] = _replica
    DATABASE_ROUTERS = ["songsgen.db.replicas.ReplicaRouter"]
    # after the session middleware: the reader's last write position is kept in the session
    MIDDLEWARE.insert(MIDDLEWARE.index("django.contrib.sessions.middleware.SessionMiddleware") + 1,
                      "songsgen.db.replicas.ReplicaReadsMiddleware")

# --- Auth ----------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

# --- i18n / static -------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# `manage.py collectstatic` fills it; gunicorn serves it through WhiteNoise (docs/deploy.md).
STATIC_ROOT = DATA_DIR / "static"

# --- Backups (django-dbbackup) -------------------------------------------------------------------
# `manage.py dbbackup --clean` from cron; docs/backups.md. On SQLite our connector and commands
# (`songsgen.db.backup`) snapshot through SQLite's backup API and restore without writing over the
# live file; on PostgreSQL django-dbbackup's pg_dump (custom format) runs as it ships.
# after "songsgen", whose dbbackup/dbrestore commands take precedence
INSTALLED_APPS.append("dbbackup")
BACKUP_KEEP = env_int("SONGSGEN_BACKUP_KEEP", 7)
# 1: measured fastest here, 4% larger than 3
BACKUP_ZSTD_LEVEL = env_int("SONGSGEN_BACKUP_ZSTD_LEVEL", 1)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # With DEBUG off: compressed copies and content-hashed names that browsers may cache for ever (WhiteNoise);
    # `collectstatic` writes them and the manifest the templates read.
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage" if DEBUG
                    else "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    # Written under a temporary name and renamed when complete, owner-only (0600
    # files, 0700 folder).
    "dbbackup": {
        "BACKEND": "songsgen.db.backup.AtomicFileSystemStorage",
        "OPTIONS": {"location": str(BACKUP_DIR), "file_permissions_mode": 0o600, "directory_permissions_mode": 0o700},
    },
}
DBBACKUP_CONNECTOR_MAPPING = {
    "django.db.backends.sqlite3": "songsgen.db.backup.SqliteBackupConnector",
    SQLITE_ENGINE: "songsgen.db.backup.SqliteBackupConnector",
    "django.db.backends.postgresql": "songsgen.db.backup.PostgresDumpConnector",
    POSTGRESQL_ENGINE: "songsgen.db.backup.PostgresDumpConnector",
}
# songs-2025-06-01T031500Z.sqlite3.zst: the database's own name and the UTC time; retention
# (`--clean`, BACKUP_KEEP) selects a database's backups by that name.
DBBACKUP_FILENAME_TEMPLATE = "{databasename}-{datetime}.{extension}"
DBBACKUP_DATE_FORMAT = "%Y-%m-%dT%H%M%SZ"
DBBACKUP_CLEANUP_KEEP = BACKUP_KEEP
# No error mail from django-dbbackup (its handler has hidden the real error behind its own): a
# failed backup exits non-zero with the error on stderr, which cron mails to the crontab's owner.
DBBACKUP_SEND_EMAIL = False
# Optional encryption (`dbbackup --encrypt`, `dbrestore --decrypt`) to this GPG key; the key was
# imported for this purpose, so gpg is not asked to check the web of trust.
DBBACKUP_GPG_RECIPIENT = os.environ.get("SONGSGEN_BACKUP_GPG_RECIPIENT") or None
DBBACKUP_GPG_ALWAYS_TRUST = True

# --- Continuous replication (`manage.py replicate`, Litestream; `songsgen.db.backup.replica`)
# ----------- Any Litestream replica URL (s3://bucket/path, gs://, abs://, sftp://, file:///path),
# its credentials from Litestream's own environment variables (AWS_ACCESS_KEY_ID, ...). Unset:
# <data dir>/replica/<database file>.
REPLICA_URL = os.environ.get("SONGSGEN_REPLICA_URL") or ""
# Seconds between Litestream's looks at the WAL and its uploads: about the most a lost disk costs.
REPLICA_SYNC_INTERVAL = _env_seconds("SONGSGEN_REPLICA_SYNC_INTERVAL", 0.1)
if not 0.01 <= REPLICA_SYNC_INTERVAL <= 3600:
    raise ImproperlyConfigured(
        f"SONGSGEN_REPLICA_SYNC_INTERVAL must be between 0.01 and 3600 seconds, got {REPLICA_SYNC_INTERVAL:g}."
    )

# --- Monitoring: /health and /metrics (docs/monitoring.md) ---------------------------------------
# django-health-check is used as a library (its view and check classes, in `songsgen.monitoring`),
# not installed as an app: its package imports dnspython for a DNS check we do not run, 6 MiB in
# every manage.py process, which put `dbbackup` over its 64 MiB budget. The status page is our own
# template. The bearer token Prometheus and uptime checks send (staff may log in instead). Without
# one, and with DEBUG off, both endpoints answer 404 to everyone but staff.
METRICS_TOKEN = os.environ.get("SONGSGEN_METRICS_TOKEN", "")


def _env_hours(name: str, default: float) -> float:
    return _env_number(name, default, "hours")


# /health fails past these limits; docs/alerts.yml alerts on the same figures from /metrics.
# 0: no backup check
HEALTH_BACKUP_MAX_AGE_HOURS = _env_hours("SONGSGEN_HEALTH_BACKUP_MAX_AGE_HOURS", 26)
HEALTH_QUEUE_MAX_WAIT_SECONDS = _env_seconds("SONGSGEN_HEALTH_QUEUE_MAX_WAIT_SECONDS", 900)
# past a lease, stuck
HEALTH_LEASE_GRACE_SECONDS = _env_seconds("SONGSGEN_HEALTH_LEASE_GRACE_SECONDS", 60)
HEALTH_REPLICATION_MAX_LAG_SECONDS = _env_seconds("SONGSGEN_HEALTH_REPLICATION_MAX_LAG_SECONDS", 60)
# Empty: Litestream's position from `manage.py replicate`; else the dotted path of another reader, a
# callable(connection) returning songsgen.monitoring.probes.Replication.
REPLICATION_STATUS = ""

# --- Security (all on when DEBUG is off; `manage.py check --deploy` passes) ----------------------
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


# --- The data folder: last, so that a settings error above leaves nothing behind -----------------
def _data_dir_problem(folder: Path) -> str | None:
    """Why the data folder cannot be used, or None. A missing one is created by the first command
    that writes there (the SQLite connection, the migrate lock), so a refused command leaves none."""
    if not folder.exists():
        parent = folder.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            return "cannot be created (Permission denied)"
        return None
    if not folder.is_dir():
        return "is not a folder"
    # SQLite writes its -wal and -shm files beside the database; the worker writes
    # media/, dbbackup backups/.
    if not os.access(folder, os.W_OK | os.X_OK):
        return "is not writable by this user"
    return None


if _problem := _data_dir_problem(DATA_DIR):
    raise ImproperlyConfigured(
        f"SONGSGEN_DATA_DIR {DATA_DIR} {_problem}. Point SONGSGEN_DATA_DIR at a folder this user may write "
        "(it holds the SQLite database, media/ and backups/), or give this user write access to it."
    )
