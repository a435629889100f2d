"""The Lepton scheduler served for real on 127.0.0.1, with a cache the test feeds directly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from lepton_scheduler.app import SCHEDULER_KEY, build_app
from lepton_scheduler.cache import ClusterCache

from tests.support.scheduler import NOW, Server, serve


@pytest.fixture
def make_server() -> Iterator[Callable[..., Server]]:
    stops: list[Callable[[], None]] = []

    def make(cache: ClusterCache | None = None, **kw: Any) -> Server:
        cache = cache if cache is not None else ClusterCache()
        kw.setdefault("clock", lambda: NOW)
        app = build_app(cache, **kw)
        url, stop = serve(app)
        stops.append(stop)
        return Server(url, app[SCHEDULER_KEY], cache, requests.Session())

    yield make
    for stop in stops:
        stop()
