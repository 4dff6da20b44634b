"""`make run`'s generator: demo songs move through pending → generating → completed while you watch.

A few seconds per song and a small backlog of new requests, so the admin lists keep moving.
"""

from __future__ import annotations

import random
import time
from functools import cached_property

from accounts.models import User
from queueing.generators import GenerationResult, LocalWavGenerator
from queueing.models import GenerationQueue
from songs.demo_content import Pools, build_pools, request_fields
from songs.models import Song
from songs.services import song_request

DEMO_EMAIL_DOMAIN = "@example.com"  # seed_demo's users


class DemoGenerator(LocalWavGenerator):
    """A WAV per song, in about `pace_seconds`; then queued requests topped up to `backlog`."""

    pace_seconds = 4.0
    backlog = 3

    def __init__(self) -> None:
        self.rng = random.Random()

    @cached_property
    def pools(self) -> Pools:
        return build_pools(random.Random(0))

    def generate(self, song: Song) -> GenerationResult:
        time.sleep(self.pace_seconds * self.rng.uniform(0.5, 1.5))
        result = super().generate(song)
        self.top_up()
        return result

    def top_up(self) -> int:
        """Request demo songs until `backlog` jobs are queued; returns how many were requested."""
        waiting = GenerationQueue.objects.queued()[: self.backlog].count()
        requested = 0
        for _ in range(self.backlog - waiting):
            user = self.demo_user()
            if user is None:
                break
            song_request(user=user, **request_fields(self.pools, self.rng))
            requested += 1
        return requested

    def demo_user(self) -> User | None:
        """A random demo account (an indexed range read from a random id, no ORDER BY RANDOM())."""
        demo = User.objects.filter(email__endswith=DEMO_EMAIL_DOMAIN, is_active=True, is_staff=False)
        top = User.objects.order_by("-pk").values_list("pk", flat=True).first()
        if top is None:
            return None
        start = self.rng.randint(1, top)
        return demo.filter(pk__gte=start).order_by("pk").first() or demo.order_by("pk").first()
