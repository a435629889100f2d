"""Keeping the cache current: list, then watch, Nodes, Pods and EnergyBudgets.

One daemon thread per kind runs the informer loop client-go made familiar:
list (JSON parsed once, without building client models: 50,000 pods must load
in seconds), hand the items to the cache, watch from the list's
resourceVersion, apply each event, and relist when the watch expires (410
Gone). Errors back off and mark the Lepton scheduler degraded until the next success.

Watch events are read off the stream here, one ``orjson`` parse a line, not
through ``kubernetes.watch.Watch`` (which parses each event with ``json``,
dumps it again and parses it once more, and copies its buffer on every line):
during a scheduling burst every bind brings two or three pod events, and the
thread applying them holds the GIL the request handlers need.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from lepton.core.names import GROUP, VERSION

from .cache import ClusterCache
from .protocol import loads

log = logging.getLogger(__name__)

WATCH_TIMEOUT_SECONDS = 300
MAX_BACKOFF_SECONDS = 30.0
# Terminal pods hold no GPUs; leaving them out keeps the cache small on busy clusters.
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


@dataclass
class Kind:
    """One watched resource: how to list it and what to do with what comes back."""

    name: str
    list_fn: Callable[..., Any]
    replace: Callable[[list[Mapping[str, Any]]], None]
    upsert: Callable[[Mapping[str, Any]], object]
    delete: Callable[[Mapping[str, Any]], None]


def kinds(
    api: client.ApiClient,
    cache: ClusterCache,
    on_pod: Callable[[Mapping[str, Any], bool], None],
    on_pod_deleted: Callable[[Mapping[str, Any]], None] | None = None,
) -> list[Kind]:
    """The three kinds the Lepton scheduler watches; ``on_pod`` and ``on_pod_deleted`` see each pod
    after the cache has it."""
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)

    def upsert_pod(obj: Mapping[str, Any]) -> None:
        cache.upsert_pod(obj)
        on_pod(obj, False)

    def delete_pod(obj: Mapping[str, Any]) -> None:
        cache.delete_pod(obj)
        if on_pod_deleted is not None:
            on_pod_deleted(obj)

    def replace_pods(items: list[Mapping[str, Any]]) -> None:
        cache.replace_pods(items)
        for obj in items:
            on_pod(obj, True)

    return [
        Kind("nodes", core.list_node, cache.replace_nodes, cache.upsert_node, cache.delete_node),
        Kind(
            "pods",
            partial(core.list_pod_for_all_namespaces, field_selector=ACTIVE_PODS),
            replace_pods,
            upsert_pod,
            delete_pod,
        ),
        Kind(
            "energybudgets",
            partial(custom.list_cluster_custom_object, GROUP, VERSION, "energybudgets"),
            cache.replace_budgets,
            cache.upsert_budget,
            cache.delete_budget,
        ),
    ]


def watch_events(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The events of a watch stream (one JSON object a line), parsed once each."""
    rest = b""
    for chunk in chunks:
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line.strip():
                event = loads(line)
                if isinstance(event, dict):
                    yield event
    if rest.strip():
        event = loads(rest)
        if isinstance(event, dict):
            yield event


class Informer(threading.Thread):
    """List-then-watch one kind into the cache until stopped."""

    def __init__(
        self,
        kind: Kind,
        stop: threading.Event,
        on_error: Callable[[str, BaseException | None], None],
    ) -> None:
        super().__init__(name=f"watch-{kind.name}", daemon=True)
        self.kind = kind
        self.stop_event = stop
        self.on_error = on_error
        self.synced = threading.Event()

    def _list(self) -> str:
        response = self.kind.list_fn(_preload_content=False)
        data = loads(response.data)
        self.kind.replace(data.get("items") or [])
        self.synced.set()
        return str(data.get("metadata", {}).get("resourceVersion", ""))

    def _watch(self, resource_version: str) -> str:
        response = self.kind.list_fn(
            watch=True,
            resource_version=resource_version,
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            allow_watch_bookmarks=True,
            _preload_content=False,
        )
        try:
            for event in watch_events(response.stream(amt=None, decode_content=False)):
                if self.stop_event.is_set():
                    break
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":  # 410 Gone: the caller relists
                    raise ApiException(
                        status=int(obj.get("code") or 500),
                        reason=f"{obj.get('reason')}: {obj.get('message')}",
                    )
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    resource_version = str(version)
                if kind in ("ADDED", "MODIFIED"):
                    self.kind.upsert(obj)
                elif kind == "DELETED":
                    self.kind.delete(obj)
        finally:
            response.close()
            response.release_conn()
        return resource_version

    def run(self) -> None:
        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                version = self._list()
                self.on_error(self.kind.name, None)
                backoff = 0.5
                while not self.stop_event.is_set():
                    version = self._watch(version)
            except ApiException as error:
                if error.status == 410:  # the watch expired: relist
                    continue
                if error.status == 404 and not self.synced.is_set():
                    # The resource is not served (EnergyBudget CRD not installed): run
                    # without it rather than stay unready, and look again later.
                    log.warning(
                        "%s are not served by the API: running without them", self.kind.name
                    )
                    self.kind.replace([])
                    self.synced.set()
                    self.stop_event.wait(MAX_BACKOFF_SECONDS)
                    continue
                self.on_error(self.kind.name, error)
            except Exception as error:
                self.on_error(self.kind.name, error)
            self.stop_event.wait(backoff)
            backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)
