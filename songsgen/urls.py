from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from songsgen.monitoring import views as monitoring

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("health", monitoring.HealthView.as_view(), name="health"),
    path("metrics", monitoring.metrics, name="metrics"),
]

# The generated audio, served by runserver while DEBUG is on (static() adds nothing otherwise): in
# production the web server serves MEDIA_ROOT at MEDIA_URL (README, "Serving audio and static files").
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
