"""Test settings plus one corpus app (SONGSGEN_CORPUS_APP, importable from SONGSGEN_CORPUS_PATH), per migrate run."""

import os
import sys

from tests.settings import *  # noqa: F403

if os.environ.get("SONGSGEN_CORPUS_PATH"):
    sys.path.insert(0, os.environ["SONGSGEN_CORPUS_PATH"])
INSTALLED_APPS = [*INSTALLED_APPS, os.environ["SONGSGEN_CORPUS_APP"]]  # noqa: F405
