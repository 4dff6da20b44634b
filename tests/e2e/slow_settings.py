"""Production settings plus one test-only URL, /slow, that answers when the test says so (test_production.py)."""

from songsgen.settings import *  # noqa: F403

ROOT_URLCONF = "tests.e2e.slow_urls"
