"""The docs say what the code does: commands, flags, cron lines, files, the claim's index (tests/docs_commands.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.db import connection

from queueing.models import GenerationQueue
from tests.conftest import REPO
from tests.docs_commands import cron_disagreements, documents, missing_files, problems

README = REPO / "README.md"


def test_every_command_and_flag_the_docs_name_exists():
    """A renamed or removed flag left in the docs fails lint, not a reader at 3 a.m."""
    assert problems(documents()) == []


def test_the_check_fails_on_a_made_up_command_or_flag(tmp_path, subprocess_env):
    """As `make lint` runs it: a typo in a command or a flag is named with its line, and the exit is 1."""
    doc = tmp_path / "doc.md"
    doc.write_text("Back up with `manage.py dbbackup --clean --frobnicate`, then `manage.py dbfrobnicate`.\n\n"
                   "```sh\nmanage.py dbrestore --noinput \\\n    -i NAME --to-tyme 2026-01-01\n```\n"
                   "Or `dbrestore --from-replicaa`; `migrate --rehearse -v2` is fine.\n")
    result = subprocess.run([sys.executable, "-m", "tests.docs_commands", str(doc)], cwd=REPO, env=subprocess_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[:4] == [
        f"{doc}:1: `manage.py dbbackup --frobnicate`: dbbackup has no option --frobnicate",
        f"{doc}:1: `manage.py dbfrobnicate`: there is no such command",
        f"{doc}:4: `manage.py dbrestore --to-tyme`: dbrestore has no option --to-tyme",
        f"{doc}:7: `manage.py dbrestore --from-replicaa`: dbrestore has no option --from-replicaa",
    ]
    assert len(lines) == 5 and "Traceback" not in result.stderr


def test_the_same_cron_line_reads_the_same_everywhere():
    """A reader copies the crontab from whichever page they opened first."""
    assert cron_disagreements(documents()) == []


def test_every_file_the_docs_point_at_is_in_the_repository():
    """No link to, or claim to copy, a file a clone does not have."""
    assert missing_files(documents()) == []


@pytest.mark.django_db
def test_the_readme_names_the_index_the_claim_reads_on_this_engine():
    """The README's account of the worker's next-job query matches the plan dbcheck shows."""
    from django.db import transaction

    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # an empty test table makes any plan acceptable: ask what can serve it
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_sort = off")
        plan = GenerationQueue.objects.next_job()[:1].explain()
    used = [name for name in ("queue_claim", "queue_status_order") if name in plan]
    assert used, plan
    text = README.read_text()
    start = text.index("The worker's next-job query")
    paragraph = text[start:text.index("\n- ", start)]
    assert f"`{used[0]}`" in paragraph, (connection.vendor, plan, paragraph)
