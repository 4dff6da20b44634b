"""The project package. django-admin, WSGI servers and scripts import it before the settings: an
operator's mistake escaping them prints one line, as under manage.py (`songsgen.boundary`)."""

from songsgen import boundary

boundary.install_excepthook()
