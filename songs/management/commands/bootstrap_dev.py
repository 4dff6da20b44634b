"""`make run`'s set-up: an admin from the environment, demo data if empty, demo work."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from songs.demo_activity import DemoGenerator
from songs.models import Song

DEMO_GENERATOR = f"{DemoGenerator.__module__}.{DemoGenerator.__qualname__}"  # what `make run` names


class Command(BaseCommand):
    help = (
        "Create an admin account from DJANGO_SUPERUSER_USERNAME/EMAIL/PASSWORD when given, and load a small "
        "demo data set when the database holds no songs; with make run's demo generator, queue a few demo "
        "requests if none are waiting."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--demo-users", type=int, default=20)
        parser.add_argument("--demo-songs", type=int, default=300)

    def handle(self, *args: Any, demo_users: int, demo_songs: int, **options: Any) -> None:
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME")
        User = get_user_model()
        if username and os.environ.get("DJANGO_SUPERUSER_PASSWORD"):
            if User.objects.filter(username=username).exists():
                self.stdout.write(f"Admin account {username!r} already exists.")
            else:
                call_command("createsuperuser", interactive=False, verbosity=0)
                self.stdout.write(self.style.SUCCESS(f"Created admin account {username!r}."))
        elif not User.objects.filter(is_superuser=True).exists():
            self.stdout.write(
                "No admin account yet. Create one with:\n"
                "  DJANGO_SUPERUSER_USERNAME=admin DJANGO_SUPERUSER_EMAIL=admin@example.com "
                "DJANGO_SUPERUSER_PASSWORD=... make run\n"
                "or: .venv/bin/python manage.py createsuperuser"
            )
        if Song.objects.exists():
            self.stdout.write("Database holds songs; no demo data loaded.")
        else:
            call_command("seed_demo", users=demo_users, songs=demo_songs, stdout=self.stdout)
            self.stdout.write(self.style.SUCCESS(f"Loaded demo data: {demo_users} users, {demo_songs} songs."))
        if settings.SONGSGEN_GENERATOR == DEMO_GENERATOR:
            # The demo generator tops its backlog up after each song: give it a first song to make.
            requested = DemoGenerator().top_up()
            if requested:
                self.stdout.write(f"Requested {requested} demo songs for the demo generator.")
