"""The demo's content: pools of names, titles, lyrics and prompts that seeded rows are drawn from.

A row costs a few random() calls: everything random is an index into a pool.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypedDict

from songs.admin import GENRES
from songs.models import Song

# Relative weight of each genre in GENRES order (pop and hip-hop dominate, classical is rare).
_GENRE_WEIGHTS = {"pop": 18, "hip-hop": 14, "rock": 12, "electronic": 11, "r&b": 7, "country": 6, "latin": 6,
                  "jazz": 4, "folk": 4, "metal": 4, "ambient": 3, "soul": 3, "reggae": 2, "funk": 2, "punk": 2,
                  "blues": 1, "classical": 1}
# Share of songs per status, in per-mille: most finished, a backlog waiting, some failed. None
# generating: that is a job a live worker holds and renews the lease of, and the seed runs no worker
# (`make run`'s, started next, claims the backlog within seconds). Rows seeded as running would be an
# expired lease to reclaim at the first start, or at 1M songs 20,000 jobs "running" at once.
_STATUS_PER_MILLE = ((Song.Status.COMPLETED.value, 800), (Song.Status.PENDING.value, 120),
                     (Song.Status.FAILED.value, 80))

_FIRST_NAMES = ("ava", "liam", "mia", "noah", "zoe", "leo", "ivy", "owen", "nora", "eli", "lucia", "mateo", "yuki",
                "kenji", "amara", "kofi", "ines", "hugo", "freya", "arjun", "priya", "sven", "olga", "tariq",
                "layla", "diego", "chloe", "finn", "maya", "omar", "rosa", "theo")
_LAST_NAMES = ("smith", "garcia", "nguyen", "muller", "rossi", "kowalski", "silva", "tanaka", "okafor", "haddad",
               "johansson", "dubois", "novak", "kim", "patel", "lopez", "ivanova", "murphy", "schmidt", "costa",
               "chen", "ali", "jensen", "moreau")
_ADJECTIVES = ("midnight", "golden", "broken", "electric", "silent", "burning", "velvet", "neon", "endless",
               "wild", "frozen", "hollow", "crimson", "lonely", "restless", "summer", "paper", "distant",
               "sweet", "northern", "faded", "gentle", "savage", "silver", "borrowed", "secret")
_NOUNS = ("heart", "river", "highway", "city", "dream", "fire", "echo", "shadow", "ocean", "sky", "radio",
          "memory", "garden", "storm", "letter", "train", "mirror", "horizon", "rain", "kingdom", "signal",
          "harbor", "window", "thunder", "lullaby", "parade")
# Subjects that all take the plain verb form, so every generated line is grammatical.
_SUBJECTS = ("I", "you", "we", "they", "the lights", "our hearts", "your eyes", "the stars", "these streets",
             "old friends", "the rivers", "the sirens", "we both")
_VERBS = ("keep on running", "call your name", "fall apart", "light the way", "hold the line", "chase the sun",
          "wait for the rain", "dance alone", "burn so bright", "drift away", "break the silence",
          "sing it back", "find a way home", "lose control", "count the miles", "paint the sky")
_TAILS = ("tonight", "till the morning comes", "under neon lights", "one more time", "like we used to",
          "in the pouring rain", "on an empty road", "with nothing left to lose", "when the music stops",
          "across the great divide", "in a city made of glass", "before the fire dies", "and never look back",
          "where the rivers meet")
_MOODS = ("uplifting", "melancholic", "dreamy", "energetic", "dark", "nostalgic", "romantic", "aggressive",
          "chill", "anthemic", "bittersweet", "playful")
_INSTRUMENTS = ("warm analog synths", "fingerpicked acoustic guitar", "punchy 808s", "driving drums",
                "lush strings", "distorted guitars", "soft piano", "brass section", "slap bass", "choir pads",
                "lo-fi tape hiss", "pedal steel")
_VOCALS = ("female vocals", "male vocals", "duet", "whispered vocals", "gritty vocals", "falsetto",
           "choir", "instrumental, no vocals", "rap verses", "layered harmonies")
ERRORS = ("Generator timed out after 300 s.", "Generator returned HTTP 503: service unavailable.",
           "Audio file was empty (0 bytes).", "Lyrics rejected by the content filter.",
           "Generator returned HTTP 429: rate limit exceeded.", "Worker lease expired; attempts exhausted.",
           "Could not write audio: no space left on device.", "Generator returned malformed JSON.")


@dataclass(frozen=True)
class Pools:
    """Precomputed building blocks: choosing one is an index, never work per character."""

    genres: tuple[str, ...]  # 1,000 entries in genre proportions
    statuses: tuple[str, ...]  # 1,000 entries in status proportions
    titles: tuple[str, ...]
    stanzas: tuple[str, ...]
    prompts: tuple[str, ...]
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]


def _weighted_table(weights: Iterable[tuple[str, int]], size: int = 1000) -> tuple[str, ...]:
    """`size` entries, each value repeated in proportion to its weight: a draw is one index."""
    items = list(weights)
    total = sum(weight for _, weight in items)
    table: list[str] = []
    for value, weight in items:
        table.extend([value] * round(weight * size / total))
    return tuple((table + [items[0][0]] * size)[:size])


def build_pools(rng: random.Random) -> Pools:
    """The pools for one run, drawn from `rng` so that a seed fixes them."""
    genre_weights = [(genre, _GENRE_WEIGHTS.get(genre, 1)) for genre in GENRES]
    lines = [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_TAILS)}".capitalize() for _ in range(600)]
    stanzas = tuple("\n".join(rng.sample(lines, rng.randint(4, 6))) for _ in range(1500))
    titles = tuple(
        rng.choice((f"{a} {n}", f"The {a} {n}", f"{n} of the {a}", f"{a} {n} {rng.randint(2, 9)}")).title()
        for a, n in ((rng.choice(_ADJECTIVES), rng.choice(_NOUNS)) for _ in range(4000))
    )
    prompts = tuple(
        f"{rng.choice(_MOODS)} {{genre}}, {rng.choice(_INSTRUMENTS)} and {rng.choice(_INSTRUMENTS)}, "
        f"{rng.randrange(60, 180)} bpm, {rng.choice(_VOCALS)}"
        for _ in range(2000)
    )
    return Pools(
        genres=_weighted_table(genre_weights),
        statuses=_weighted_table(_STATUS_PER_MILLE),
        titles=titles,
        stanzas=stanzas,
        prompts=prompts,
        first_names=_FIRST_NAMES,
        last_names=_LAST_NAMES,
    )


class RequestFields(TypedDict):
    """The song_request() arguments of one demo request, all but the user."""

    title: str
    genre: str
    style_prompt: str
    lyrics: str


def request_fields(pools: Pools, rng: random.Random) -> RequestFields:
    """Title, genre, style prompt and lyrics of one new demo song request, drawn from the pools."""
    genre = rng.choice(pools.genres)
    verse1, verse2, chorus = rng.choice(pools.stanzas), rng.choice(pools.stanzas), rng.choice(pools.stanzas)
    return {
        "title": rng.choice(pools.titles), "genre": genre,
        "style_prompt": rng.choice(pools.prompts).format(genre=genre),
        "lyrics": f"[Verse 1]\n{verse1}\n\n[Chorus]\n{chorus}\n\n[Verse 2]\n{verse2}\n\n[Chorus]\n{chorus}",
    }
