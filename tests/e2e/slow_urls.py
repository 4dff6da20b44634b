"""songsgen's URLs and /slow: a request that stays in flight until the test releases it (never in production)."""

import os
import time
from pathlib import Path

from django.http import HttpRequest, HttpResponse
from django.urls import path

from songsgen.urls import urlpatterns as production


def slow(request: HttpRequest) -> HttpResponse:
    """Say it started (a file), wait for the test's release file, then answer."""
    folder = Path(os.environ["SONGSGEN_TEST_SLOW_DIR"])
    (folder / "started").touch()
    deadline = time.monotonic() + 60
    while not (folder / "release").exists():
        if time.monotonic() > deadline:
            return HttpResponse("never released", status=504)
        time.sleep(0.05)
    return HttpResponse("finished after release")


urlpatterns = [path("slow", slow), *production]
