"""Submitting a burst of objects to a local cluster, as a pipeline would: the benchmarks' load."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lepton.cluster.local import LocalCluster


def submit_concurrently(
    cluster: LocalCluster, verb: list[str], objects: list[dict[str, Any]], clients: int = 8
) -> None:
    """``kubectl VERB -f -`` of ``objects`` from several clients at once, as a burst from a
    pipeline would arrive (one kubectl sends its objects one by one)."""
    chunks = [objects[i::clients] for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        list(
            pool.map(
                lambda chunk: cluster.kubectl(
                    *verb,
                    "-f",
                    "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": chunk}),
                    timeout=600,
                ),
                [c for c in chunks if c],
            )
        )
