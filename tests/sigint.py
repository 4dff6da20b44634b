"""Children a test interrupts with SIGINT, started with SIGINT at its default however the suite was launched.

A shell that starts a job in the background without job control (`make test &` in a script) ignores SIGINT
for it, and an ignored signal stays ignored across fork and exec: every process the suite starts would
shrug off the Ctrl-C a test sends. A handled signal does not survive exec, so while a Python handler is set
here, children start with SIGINT at SIG_DFL (and Python gives them KeyboardInterrupt as a terminal would).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


@contextmanager
def sigint_at_default() -> Iterator[None]:
    """Processes started inside begin with SIGINT at its default, not ignored as ours may be."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.SIG_IGN:
        yield  # a handler or the default already: exec leaves the child at SIG_DFL
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def popen(args: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """subprocess.Popen for a child the test will send SIGINT: it starts with SIGINT at its default."""
    with sigint_at_default():
        return subprocess.Popen(args, **kwargs)
