"""gunicorn's settings for songsgen: `gunicorn -c python:songsgen.gunicorn_conf` (docs/deploy.md).

Read by gunicorn's master before any Django code loads, so it parses its few variables itself.
"""

from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    """A positive whole number from the environment; gunicorn refuses to start on a bad one."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}.")
    return int(value)


def default_workers() -> int:
    """gunicorn's rule of thumb, 2 x cores + 1, counting the cores this process may run on."""
    return 2 * len(os.sched_getaffinity(0)) + 1


def trusted_proxies() -> str:
    """Whose X-Forwarded-* headers gunicorn believes: the proxy's address behind a TLS proxy, nobody's otherwise."""
    if os.environ.get("SONGSGEN_BEHIND_TLS_PROXY", "").strip().lower() not in _TRUE:
        return ""
    return os.environ.get("SONGSGEN_PROXY_IPS", "").strip() or "127.0.0.1,::1"


wsgi_app = "songsgen.wsgi:application"
# nginx proxies to this address; the service is never exposed directly.
bind = [os.environ.get("SONGSGEN_WEB_BIND", "").strip() or "127.0.0.1:8000"]
workers = _env_int("SONGSGEN_WEB_WORKERS", default_workers())
# A request still running after this many seconds has its worker killed and restarted.
timeout = _env_int("SONGSGEN_WEB_TIMEOUT", 30)
# SIGTERM (systemd's stop) and SIGHUP (reload) give requests in flight this long to finish.
graceful_timeout = _env_int("SONGSGEN_WEB_GRACEFUL_TIMEOUT", 30)
forwarded_allow_ips = trusted_proxies()
# The heartbeat files on tmpfs, never on a disk that may stall a worker.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# No control socket: it would be written under $HOME, which the systemd unit makes read-only.
control_socket_disable = True
# To stdout and stderr: the journal under systemd.
accesslog = "-"
errorlog = "-"
# Client, time, request, status, bytes, duration in microseconds, referrer, user agent.
access_log_format = '%({x-forwarded-for}i)s %(h)s %(t)s "%(r)s" %(s)s %(b)s %(D)sus "%(f)s" "%(a)s"'
