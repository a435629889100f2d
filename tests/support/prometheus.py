"""A real Prometheus (Debian's package) for the tests, and its instant queries."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from lepton.cluster.processes import free_port
from tests.support.wait import wait_for


@contextlib.contextmanager
def running_prometheus(directory: Path, target: str) -> Iterator[str]:
    """A real Prometheus (Debian's package) scraping ``target`` every second; yields its URL."""
    binary = shutil.which("prometheus")
    assert binary, "install Prometheus: apt-get install -y --no-install-recommends prometheus"
    config = directory / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: lepton-exporter\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={directory / 'tsdb'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    """The instant-query result, or [] while Prometheus is still starting."""
    try:
        reply = requests.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
    except requests.ConnectionError:
        return []
    if reply.status_code == 503:  # "Service Unavailable" until the TSDB is open
        return []
    reply.raise_for_status()
    result: list[dict[str, Any]] = reply.json()["data"]["result"]
    return result


def wait_for_series(prometheus: str, promql: str, timeout: float = 40.0) -> list[dict[str, Any]]:
    """Poll ``promql`` until it returns series (the first scrape comes a few seconds in)."""
    return wait_for(
        lambda: query(prometheus, promql), timeout, f"series for {promql}", interval=0.5
    )
