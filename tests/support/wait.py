"""The one ``wait_for``: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# How often a condition is polled: often enough that a test does not wait long after it
# holds, seldom enough not to load the shared control plane.
POLL_SECONDS = 0.3


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    ignoring: tuple[type[BaseException], ...] = (),
    interval: float = POLL_SECONDS,
) -> T:
    """Return ``predicate()``'s first truthy value; fail the test after ``timeout`` seconds.

    A predicate that fetches something (a query's series, an object in a state) is polled
    until it returns it, and the caller gets what it fetched.

    ``ignoring`` names exceptions that mean "not yet" (a server still starting), so that a
    predicate raising one of them is polled again rather than failing the test.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if value := predicate():
                return value
        except ignoring:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
