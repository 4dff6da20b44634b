"""Generators named by SONGSGEN_GENERATOR in the demo's worker processes under test."""

from __future__ import annotations

from songs.demo_activity import DemoGenerator


class QuickDemoGenerator(DemoGenerator):
    """make run's demo generator at a test's pace: about half a second a song."""

    pace_seconds = 0.5
