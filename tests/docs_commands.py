"""`make lint`'s check that the docs name only commands and flags that exist.

    python -m tests.docs_commands [FILE ...]        # default: README.md and docs/*.md

Every `manage.py <command>` written in those files must be a command of this project, and every flag
written after it on the same line (a shell line continued with a backslash is one line) an option of
that command's parser, as `manage.py <command> --help` would list it; so must the flags of a code span
that starts with a command's name (`dbrestore --from-replica`). Also: the same cron line reads the same in
every file, and every relative link (and `*.md` named in a code span) points at a file of the repository.
Each miss is printed as FILE:LINE: …; the exit status is 1 when there is one.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
COMMAND = re.compile(r"manage\.py\s+([a-z][a-z0-9_]*)\b(?![-/.'])")
# Where the words that belong to one command end: a code span, a shell operator or a comment.
END = re.compile(r"`|&&|\|\||\||;|\s#|\$\(")
SPAN = re.compile(r"`([^`]+)`")
SHORT_WITH_VALUE = re.compile(r"^(-[A-Za-z])\d+$")  # -v2 is -v with its value


def documents() -> list[Path]:
    """The files a user reads: the README and every page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(number of the first line, text) with backslash-continued lines joined, as a shell reads them."""
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def flags_in(words: str) -> list[str]:
    """The option strings written in `words`: --name, --name=value, -x, -x2; [--a] and --a/--b too."""
    found = []
    for raw in words.split():
        for token in raw.strip("[](),.:…").split("/"):
            token = token.strip("[](),.:…").split("=", 1)[0]
            if not token.startswith("-") or token in ("-", "--") or token[1:2].isdigit():
                continue
            short = SHORT_WITH_VALUE.match(token)
            found.append(short.group(1) if short else token)
    return found


def mentions(text: str) -> Iterator[tuple[int, str, list[str], bool]]:
    """(line, command, flags, named as `manage.py <command>`) for each command a document shows.

    Besides `manage.py <command> …`, a code span such as `dbrestore --from-replica` names a command by its
    first word; that word may be anything (`make run`), so only a known command's flags are checked."""
    for number, line in logical_lines(text):
        matches = list(COMMAND.finditer(line))
        for index, match in enumerate(matches):
            stop = matches[index + 1].start() if index + 1 < len(matches) else len(line)
            rest = line[match.end():stop]
            end = END.search(rest)
            yield number, match.group(1), flags_in(rest[: end.start()] if end else rest), True
        for span in SPAN.findall(line):
            words = span.split()
            if words and "manage.py" not in span and (flags := flags_in(span)):
                yield number, words[0], flags, False


class Commands:
    """The project's management commands; a command's options are read from its parser when first asked."""

    def __init__(self) -> None:
        import django
        from django.core.management import get_commands

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "songsgen.settings")
        django.setup()
        self.apps: dict[str, Any] = dict(get_commands())
        self._options: dict[str, set[str]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.apps

    def options(self, name: str) -> set[str]:
        """The option strings `manage.py NAME --help` lists."""
        from django.core.management import load_command_class

        if name not in self._options:
            app = self.apps[name]
            command = app if not isinstance(app, str) else load_command_class(app, name)
            parser = command.create_parser("manage.py", name)
            self._options[name] = {string for action in parser._actions for string in action.option_strings}
        return self._options[name]


def problems(paths: Iterable[Path], commands: Commands | None = None) -> list[str]:
    """One line per command or flag named in `paths` that does not exist."""
    commands = Commands() if commands is None else commands
    found = []
    for path in paths:
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        for number, command, flags, explicit in mentions(path.read_text(encoding="utf-8")):
            if command not in commands:
                if explicit:
                    found.append(f"{shown}:{number}: `manage.py {command}`: there is no such command")
                continue
            for flag in flags:
                if flag not in commands.options(command):
                    found.append(f"{shown}:{number}: `manage.py {command} {flag}`: {command} has no option {flag}")
    return found


CRON = re.compile(r"^\s*((?:\S+\s+){5})(.*manage\.py\s+([a-z][a-z0-9_]*).*)$")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
FILE_SPAN = re.compile(r"`([\w./-]+\.md)`")


def cron_disagreements(paths: Iterable[Path]) -> list[str]:
    """Cron lines at the same time for the same command that read differently from one file to another."""
    seen: dict[tuple[str, str], set[str]] = {}
    where: dict[tuple[str, str], list[str]] = {}
    for path in paths:
        for number, line in logical_lines(path.read_text(encoding="utf-8")):
            if cron := CRON.match(line):
                key = (" ".join(cron.group(1).split()), cron.group(3))
                seen.setdefault(key, set()).add(" ".join(cron.group(2).split()))
                where.setdefault(key, []).append(f"{path.name}:{number}")
    return [f"{' and '.join(where[key])}: the cron line for `{key[1]}` differs: {' | '.join(sorted(lines))}"
            for key, lines in seen.items() if len(lines) > 1]


def missing_files(paths: Iterable[Path]) -> list[str]:
    """Relative links, and `*.md` files named in code spans, that are in neither the doc's folder nor the repo."""
    found = []
    for path in paths:
        for number, line in logical_lines(path.read_text(encoding="utf-8")):
            for target in [*LINK.findall(line), *FILE_SPAN.findall(line)]:
                if "://" in target or target.startswith("mailto:"):
                    continue
                if not ((path.parent / target).exists() or (REPO / target).exists()):
                    found.append(f"{path.name}:{number}: names {target}, which is not in the repository")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    paths = [Path(arg).resolve() for arg in args] or documents()
    found = [*problems(paths), *cron_disagreements(paths), *missing_files(paths)]
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print(f"docs: {len(found)} problem(s): fix the docs, or the command (tests/docs_commands.py)", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
