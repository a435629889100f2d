"""The one ``wait_for``: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable

# How often a condition is polled: often enough that a test does not wait long after it
# holds, seldom enough not to load the shared control plane.
POLL_SECONDS = 0.3


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    *,
    ignoring: tuple[type[BaseException], ...] = (),
    interval: float = POLL_SECONDS,
) -> None:
    """Return once ``predicate()`` is truthy; fail the test after ``timeout`` seconds.

    ``ignoring`` names exceptions that mean "not yet" (a server still starting), so that a
    predicate raising one of them is polled again rather than failing the test.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except ignoring:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
