"""Leader election against an apiserver that stops answering (a real socket that never replies)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client
from lepton_operator.leader import LeaseElector


@pytest.fixture
def silent_apiserver() -> Iterator[str]:
    """An HTTP endpoint that accepts connections and never replies (a hung apiserver)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def test_a_leader_whose_renewal_hangs_stops_by_its_renew_deadline(silent_apiserver: str) -> None:
    configuration = client.Configuration()
    configuration.host = silent_apiserver
    api = client.CoordinationV1Api(client.ApiClient(configuration))
    elector = LeaseElector(api, "ns", "lease", "me", lease_seconds=3)
    elector.renewed_at = elector.clock()  # it held the Lease a moment ago
    lost = threading.Event()
    stop = threading.Event()
    started = time.monotonic()
    threading.Thread(target=elector.keep_renewing, args=(stop, lost.set), daemon=True).start()
    try:
        assert lost.wait(10), "a hung renewal kept the leader acting past its renew deadline"
        # Stopped after the renew deadline (2 s) and well before the lease (3 s) expires.
        assert elector.renew_deadline_seconds <= time.monotonic() - started < 3.0
    finally:
        stop.set()
