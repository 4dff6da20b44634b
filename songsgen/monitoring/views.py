"""The /health and /metrics endpoints, and who may read them (bearer token or staff login)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import connections
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django.views.decorators.http import require_safe
from health_check.views import HealthCheckView
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from queueing.monitoring import queue_metrics
from songsgen.monitoring.metrics import ScrapeCollector, database_metrics
from songsgen.monitoring.replicas import replica_metrics

# /health: ours, each a django-health-check plugin, in the order the page lists them.
HEALTH_CHECKS = (
    "songsgen.monitoring.checks.DatabaseCheck",
    "songsgen.monitoring.checks.MigrationsCheck",
    "songsgen.monitoring.checks.MigrateCheck",
    "songsgen.monitoring.checks.BackupCheck",
    "songsgen.monitoring.checks.ReplicationCheck",
    "songsgen.monitoring.checks.DiskCheck",
    "songsgen.monitoring.replicas.ReplicaCheck",
    "queueing.monitoring.QueueWaitCheck",
    "queueing.monitoring.StuckJobsCheck",
)
# /metrics: each contributor yields its metric families at scrape time.
METRIC_CONTRIBUTORS = [database_metrics, queue_metrics, replica_metrics]


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def refusal(request: HttpRequest, user: AbstractBaseUser | AnonymousUser) -> HttpResponse | None:
    """None when the request may read the endpoint; else the 401 or 404 to answer."""
    expected = str(getattr(settings, "METRICS_TOKEN", "") or "")
    given = _bearer(request)
    if expected and given is not None and hmac.compare_digest(given.encode(), expected.encode()):
        return None
    if user.is_active and getattr(user, "is_staff", False):
        return None
    if expected:
        response = HttpResponse("A valid bearer token (SONGSGEN_METRICS_TOKEN) is required.\n", status=401,
                                content_type="text/plain; charset=utf-8")
        response["WWW-Authenticate"] = 'Bearer realm="songsgen monitoring"'
        return response
    if settings.DEBUG:
        return None
    return HttpResponse("Not Found\n", status=404, content_type="text/plain; charset=utf-8")


def _closed(response: HttpResponseBase) -> HttpResponseBase:
    add_never_cache_headers(response)
    patch_vary_headers(response, ["Authorization", "Cookie"])
    return response


class ClosingExecutor(ThreadPoolExecutor):
    """Runs each check in a pool thread and closes that thread's database connections when it ends,
    so a health request never leaves a connection behind."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        def run() -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                connections.close_all()  # this thread's connections only: they are thread-local

        return super().submit(run)


class HealthView(HealthCheckView):
    """django-health-check's view over our checks: 200 when all pass, 500 naming each that failed.

    JSON with `?format=json` or `Accept: application/json`, text with `?format=text`, HTML
    otherwise.
    """

    checks = HEALTH_CHECKS
    # ours: the package is not an installed app (settings.py)
    template_name = "monitoring/health.html"

    async def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        denied = refusal(request, await request.auser())
        if denied is not None:
            return _closed(denied)
        return _closed(await super().dispatch(request, *args, **kwargs))

    def get_executor(self) -> ThreadPoolExecutor:
        return ClosingExecutor(max_workers=len(self.checks), thread_name_prefix="health")


health_view = HealthView.as_view()


@require_safe
def metrics(request: HttpRequest) -> HttpResponseBase:
    """The Prometheus text format (OpenMetrics when the scraper asks for it), read now."""
    denied = refusal(request, request.user)
    if denied is not None:
        return _closed(denied)
    registry = CollectorRegistry()
    registry.register(ScrapeCollector(METRIC_CONTRIBUTORS))
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return _closed(HttpResponse(encoder(registry), content_type=content_type))
