from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import path
from django.views.generic import RedirectView


# The monitoring views are imported on their first request, not with this URLconf: every manage.py
# command loads it for Django's system checks, and django-health-check and prometheus-client added
# 8 MiB to each (`dbbackup` went over its 64 MiB budget).
async def health(request: HttpRequest) -> HttpResponseBase:
    """/health: songsgen.monitoring.views.HealthView (async, as django-health-check's view is)."""
    from songsgen.monitoring.views import health_view

    response: HttpResponseBase = await health_view(request)
    return response


def metrics(request: HttpRequest) -> HttpResponseBase:
    """/metrics: songsgen.monitoring.views.metrics."""
    from songsgen.monitoring.views import metrics as view

    return view(request)


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("health", health, name="health"),
    path("metrics", metrics, name="metrics"),
    # The same with a trailing slash, as monitoring systems and people type them; the same token rule.
    path("health/", health),
    path("metrics/", metrics),
]

# The generated audio, served by runserver while DEBUG is on (static() adds nothing
# otherwise): in production the web server serves MEDIA_ROOT at MEDIA_URL (README, "Serving
# audio and static files").
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
