#!/usr/bin/env python
"""Django's command-line utility for songsgen."""

import os


def main() -> None:
    """Run administrative tasks; an operator's mistake ends in one line (songsgen/boundary.py)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "songsgen.settings")
    from songsgen.boundary import main as run

    run()


if __name__ == "__main__":
    main()
