"""WSGI entry point for songsgen."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "songsgen.settings")

application = get_wsgi_application()
