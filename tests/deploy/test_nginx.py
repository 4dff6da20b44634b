"""deploy/nginx/songsgen.conf passes `nginx -t` with Debian's nginx, inside a minimal main configuration."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "deploy" / "nginx" / "songsgen.conf"
CERTIFICATE = "/etc/letsencrypt/live/songs.example.com/fullchain.pem"
KEY = "/etc/letsencrypt/live/songs.example.com/privkey.pem"


def tool(name: str) -> str:
    """A system tool's path; the test skips without it locally and fails without it in CI."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {name} is missing (Debian's {name} package; .ci/run installs it)",
                        pytrace=False)
        pytest.skip(f"{name} not found")
    return found


def nginx_test(site_text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the site as the server would load it: in http {}, with a throwaway certificate."""
    subprocess.run([tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=songs.example.com", "-keyout", str(folder / "key.pem"),
                    "-out", str(folder / "cert.pem")], check=True, capture_output=True, timeout=60)
    site = folder / "site.conf"
    site.write_text(site_text.replace(CERTIFICATE, str(folder / "cert.pem")).replace(KEY, str(folder / "key.pem")))
    main = folder / "nginx.conf"
    main.write_text(f"pid {folder}/nginx.pid;\nerror_log {folder}/error.log;\nevents {{}}\n"
                    f"http {{\n    include /etc/nginx/mime.types;\n    include {site};\n}}\n")
    return subprocess.run([tool("nginx"), "-t", "-p", str(folder), "-c", str(main), "-e", str(folder / "error.log")],
                          capture_output=True, text=True, timeout=60)


def test_the_site_passes_nginx_t(tmp_path: Path) -> None:
    """The site loads in the nginx Debian ships (1.22: `listen … http2`, not 1.25's `http2 on`)."""
    text = SITE.read_text()
    assert CERTIFICATE in text and KEY in text
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in text
    result = nginx_test(text, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_t_fails_on_a_broken_site(tmp_path: Path) -> None:
    """The check above would catch a directive this nginx does not know."""
    result = nginx_test(SITE.read_text().replace("listen 443 ssl http2;", "listen 443 ssl;\n    http2 on;"), tmp_path)
    assert result.returncode != 0
    assert 'unknown directive "http2"' in result.stderr
