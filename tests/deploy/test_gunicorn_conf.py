"""songsgen/gunicorn_conf.py as gunicorn reads it: `gunicorn -c python:songsgen.gunicorn_conf --print-config`."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).with_name("gunicorn")
OURS = ("SONGSGEN_", "DJANGO_", "DEBUG", "SECRET_KEY", "DATABASE_URL", "FORWARDED_ALLOW_IPS")


def gunicorn_config(**env: str) -> tuple[int, dict[str, str], str]:
    """Exit code, the settings gunicorn ends up with, and what it printed (it loads the application too)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    with tempfile.TemporaryDirectory() as data:
        base |= {"SECRET_KEY": "a-production-like-key-" + "x" * 40, "SONGSGEN_DATA_DIR": data}
        result = subprocess.run([str(GUNICORN), "-c", "python:songsgen.gunicorn_conf", "--print-config"],
                                env={**base, **env}, cwd=REPO, capture_output=True, text=True, timeout=60)
    settings = dict(line.split(" = ", 1) for line in result.stdout.splitlines() if " = " in line)
    return result.returncode, {k.strip(): v.strip() for k, v in settings.items()}, result.stdout + result.stderr


def test_defaults_serve_the_project_on_localhost_with_a_worker_per_core() -> None:
    """Without any variable: songsgen.wsgi on 127.0.0.1:8000, 2 x cores + 1 processes, graceful stops."""
    code, config, output = gunicorn_config()
    assert code == 0, output
    assert config["wsgi_app"] == "songsgen.wsgi:application"
    assert config["bind"] == "['127.0.0.1:8000']"
    assert config["workers"] == str(2 * len(os.sched_getaffinity(0)) + 1)
    assert (config["timeout"], config["graceful_timeout"]) == ("30", "30")
    assert config["control_socket_disable"] == "True"  # nothing written under $HOME
    assert "%(D)s" in config["access_log_format"]


def test_forwarded_headers_are_believed_only_behind_the_tls_proxy() -> None:
    """X-Forwarded-Proto from a client is ignored unless SONGSGEN_BEHIND_TLS_PROXY says a proxy sets it."""
    assert gunicorn_config()[1]["forwarded_allow_ips"] == "[]"
    assert gunicorn_config(SONGSGEN_BEHIND_TLS_PROXY="0")[1]["forwarded_allow_ips"] == "[]"
    assert gunicorn_config(SONGSGEN_BEHIND_TLS_PROXY="1")[1]["forwarded_allow_ips"] == "['127.0.0.1', '::1']"
    behind = gunicorn_config(SONGSGEN_BEHIND_TLS_PROXY="yes", SONGSGEN_PROXY_IPS="10.0.0.5")[1]
    assert behind["forwarded_allow_ips"] == "['10.0.0.5']"
    # The proxy's address alone is no trust without the switch.
    assert gunicorn_config(SONGSGEN_PROXY_IPS="10.0.0.5")[1]["forwarded_allow_ips"] == "[]"


def test_environment_overrides_and_refuses_nonsense() -> None:
    """Bind and workers come from the environment; a bad count stops gunicorn with one clear line."""
    code, config, _ = gunicorn_config(SONGSGEN_WEB_BIND="127.0.0.1:9123", SONGSGEN_WEB_WORKERS="3")
    assert code == 0 and config["bind"] == "['127.0.0.1:9123']" and config["workers"] == "3"
    code, _, output = gunicorn_config(SONGSGEN_WEB_WORKERS="0")
    assert code != 0
    assert "SONGSGEN_WEB_WORKERS must be a whole number of at least 1, got '0'." in output
