"""deploy/'s systemd units pass `systemd-analyze verify`, and its environment example names every variable."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
SYSTEM_UNITS = Path("/lib/systemd/system")


def unit_files() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in {".service", ".timer", ".target"})


def verify(units: Path, root: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` on every unit in `units`, inside a root where what they run exists.

    The units name /srv/songsgen/.venv/bin/... which this machine does not have: under --root those
    paths are stubs, and the system's own units (targets the units order against) are copied in.
    """
    if SYSTEMD_ANALYZE is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and systemd-analyze is missing (Debian's systemd package)", pytrace=False)
        pytest.skip("systemd-analyze not found")
    target = root / "etc" / "systemd" / "system"
    target.mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    for unit in units.iterdir():
        shutil.copy(unit, target / unit.name)
        for command in re.findall(r"^Exec\w+=[-@:+!]*(/\S+)", unit.read_text(), re.MULTILINE):
            stub = root / command.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\n")
            stub.chmod(0o755)
    names = sorted(str(p) for p in target.iterdir())
    return subprocess.run([SYSTEMD_ANALYZE, f"--root={root}", "verify", *names],
                          capture_output=True, text=True, timeout=60)


def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """A unit systemd would reject or half-ignore never reaches a server."""
    names = {p.name for p in unit_files()}
    assert {"songsgen-web.service", "songsgen-worker@.service", "songsgen-replicate.service",
            "songsgen-dbbackup.timer", "songsgen-backupcheck.timer", "songsgen-dbmaintain.timer"} <= names
    result = verify(UNITS, tmp_path / "root")
    # systemd only warns (exit 0) about a key it ignores: any output is a failure here.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize(("unit", "good", "bad"), [
    ("songsgen-web.service", "ProtectSystem=strict", "ProtectSystem=strcit"),
    ("songsgen-web.service", "ExecStart=", "ExecStar="),
    ("songsgen-worker@.service", "manage.py runworker", "manage.py runworker\nKillMode=gentle"),
    ("songsgen-dbmaintain.timer", "OnCalendar=Sun *-*-* 04:30:00", "OnCalendar=Sun 25:61"),
])
def test_verify_fails_on_a_broken_unit(tmp_path: Path, unit: str, good: str, bad: str) -> None:
    """The check above would catch a typo: a broken copy of a unit fails it."""
    broken = tmp_path / "units"
    shutil.copytree(UNITS, broken)
    text = (broken / unit).read_text()
    assert good in text
    (broken / unit).write_text(text.replace(good, bad, 1))
    result = verify(broken, tmp_path / "root")
    assert result.returncode != 0 or result.stderr.strip()
    assert unit in result.stdout + result.stderr


def test_every_service_is_confined_to_the_data_folder() -> None:
    """The services run the project's virtualenv as its own user, confined to the data folder."""
    for unit in unit_files():
        if unit.suffix != ".service":
            continue
        text = unit.read_text()
        assert "User=songsgen" in text and "ProtectSystem=strict" in text, unit.name
        assert re.findall(r"^ReadWritePaths=(.*)$", text, re.MULTILINE) == ["/srv/songsgen/data"], unit.name
        assert "EnvironmentFile=/etc/songsgen/songsgen.env" in text, unit.name


def readme_variables() -> list[str]:
    """Every variable named in the first column of README.md's configuration table."""
    section = (REPO / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return [name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)]


def test_env_example_holds_every_configuration_variable() -> None:
    """An operator copying the example sees every knob the README documents."""
    example = (REPO / "deploy" / "songsgen.env.example").read_text()
    assigned = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    variables = readme_variables()
    assert len(variables) > 30
    assert [name for name in variables if name not in assigned] == []
