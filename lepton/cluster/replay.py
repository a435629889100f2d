"""The real replay's I/O: a trace slice through real kube-schedulers on a kwok fleet.

Everything the replay decides (which pods, how fast, what each pod asks for,
how long it runs on the GPU it got, what energy that costs) is in
:mod:`lepton.sim.replay`; this module only does the talking to a local control
plane (:class:`~lepton.cluster.local.LocalCluster`):

* the fleet is the trace's nodes, labelled with the GPU model the simulator
  maps them to (``G2`` → ``A100`` …), so that the Lepton scheduler scores the same GPUs;
* each pod is created at its compressed creation time, as a bare pod (default
  profile), for the ``most-allocated`` kube-scheduler (a third scheduler with
  the bin-packing profile, :func:`most_allocated_scheduler_config`) or with
  Lepton's hints and ``schedulerName: lepton-scheduler``;
* the cluster autoscaler is emulated as the simulator emulates it
  (:class:`~lepton.sim.replay.ReplayAutoscaler`): every node starts cordoned
  (powered off), a node is uncordoned after the compressed provisioning delay
  when a pending pod fits no powered node, and cordoned again once empty for the
  compressed scale-in grace;
* a watch records when each pod is bound and where; the pod is deleted when its
  modelled run on that node's GPU ends (kwok leaves bare pods Running), so that
  the cluster frees its resources as the simulator does;
* at the window's end every pod left is deleted, and the next scheduler starts
  from an empty cluster.
"""

from __future__ import annotations

import heapq
import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lepton.cluster.fleet import Fleet, NodeGroup
from lepton.cluster.local import ClusterError, LocalCluster
from lepton.cluster.stack import LeptonStack
from lepton.core.names import RESOURCE_GPU
from lepton.kube import api_client
from lepton.sim.engine import fleet_mean_speed
from lepton.sim.policies import PolicyName
from lepton.sim.replay import (
    MOST_ALLOCATED_SCHEDULER_NAME,
    ObservedRun,
    ReplayAutoscaler,
    ReplayConfig,
    placement_for,
    pod_manifest,
)
from lepton.sim.trace import TraceNode, TracePod

API_WORKERS = 8  # concurrent create/delete calls: bursts must not queue behind each other
SETTLE_TIMEOUT_SECONDS = 120.0
WATCH_TIMEOUT_SECONDS = 5
# kube-scheduler retries a pod it found to fit nowhere after a backoff of 1 s, doubling
# to 10 s (podInitialBackoffSeconds >= 1: it cannot be compressed), while a node is
# added in 300 s / compression (66 ms at 4500x) and removed when empty for 600 s /
# compression: the pod would miss the node added for it, over and over. A real
# cluster retries within seconds of minutes-long provisioning, and the simulator
# places a waiting pod the moment it fits; so when a pod kube-scheduler holds in
# backoff fits a powered node by the bound pods' requests, the driver re-creates it
# (same manifest, new pod, no backoff), at most this many times per pod.
REQUEUE_LIMIT = 20
REQUEUE_CREATE_ATTEMPTS = 40  # x 50 ms
UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


def fleet_for_replay(
    nodes: Sequence[TraceNode], model_map: Mapping[str, str], zones: int = 3
) -> Fleet:
    """The trace's nodes as kwok nodes carrying the simulator's mapped GPU model."""
    return Fleet(
        tuple(
            NodeGroup(
                name_prefix=n.name,
                count=1,
                gpu_model=model_map.get(n.model, n.model),
                gpus_per_node=n.gpus,
                zone=f"zone-{chr(ord('a') + i % zones)}",
                cpu_millis=n.cpu_milli,
                memory_mebibytes=n.memory_mib,
                exact_name=True,
            )
            for i, n in enumerate(nodes)
        )
    )


def most_allocated_scheduler_config() -> dict[str, Any]:
    """kube-scheduler's bin-packing profile, as the simulator's ``most-allocated`` emulates it.

    ``NodeResourcesFit`` with the ``MostAllocated`` strategy over cpu, memory and
    ``nvidia.com/gpu`` (weights 1, upstream's "bin packing of extended resources"
    example), no BalancedAllocation, every feasible node scored.
    """
    return {
        "percentageOfNodesToScore": 100,
        "profiles": [
            {
                "schedulerName": MOST_ALLOCATED_SCHEDULER_NAME,
                "plugins": {"score": {"disabled": [{"name": "NodeResourcesBalancedAllocation"}]}},
                "pluginConfig": [
                    {
                        "name": "NodeResourcesFit",
                        "args": {
                            "scoringStrategy": {
                                "type": "MostAllocated",
                                "resources": [
                                    {"name": name, "weight": 1}
                                    for name in ("cpu", "memory", RESOURCE_GPU)
                                ],
                            }
                        },
                    }
                ],
            }
        ],
    }


def _core_api(cluster: LocalCluster) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client(str(cluster.kubeconfig), pool_size=API_WORKERS * 2))


class _BindingWatch:
    """A raw pod watch on one namespace: the first instant each pod is seen with a node."""

    def __init__(self, api: Any, namespace: str, clock: Callable[[], float]) -> None:
        self.api, self.namespace, self.clock = api, namespace, clock
        self.events: queue.Queue[tuple[str, str, float]] = queue.Queue()
        self._seen: set[str] = set()
        # pod -> (replay seconds, message): the first time the scheduler said it fits nowhere
        self.unschedulable: dict[str, tuple[float, str]] = {}
        # pod -> (uid, resourceVersion) of an unbound pod the scheduler has found to fit
        # nowhere, since its last such verdict (the driver takes it to requeue the pod)
        self.backing_off: dict[str, tuple[str, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replay-watch", daemon=True)

    def start(self) -> None:
        listed = self.api.list_namespaced_pod(self.namespace, _preload_content=False)
        self._version = json.loads(listed.data)["metadata"]["resourceVersion"]
        self._thread.start()

    def _run(self) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        while not self._stop.is_set():
            try:
                response = self.api.list_namespaced_pod(
                    self.namespace,
                    watch=True,
                    resource_version=self._version,
                    allow_watch_bookmarks=True,
                    # short, so that a stopped watch ends soon without being closed
                    # under its reader (closing blocks until the server's timeout)
                    timeout_seconds=WATCH_TIMEOUT_SECONDS,
                    _preload_content=False,
                )
                for line in iter_resp_lines(response):
                    if self._stop.is_set():
                        return
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    metadata = obj.get("metadata") or {}
                    self._version = metadata.get("resourceVersion", self._version)
                    node = (obj.get("spec") or {}).get("nodeName")
                    name = metadata.get("name", "")
                    if not node and event.get("type") != "DELETED":
                        for c in (obj.get("status") or {}).get("conditions") or ():
                            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                                if name not in self.unschedulable:
                                    self.unschedulable[name] = (self.clock(), c.get("message", ""))
                                self.backing_off[name] = (
                                    metadata.get("uid", ""),
                                    metadata.get("resourceVersion", ""),
                                )
                    if node and name not in self._seen and event.get("type") != "DELETED":
                        self._seen.add(name)
                        self.events.put((name, node, self.clock()))
            except Exception:  # a closed or expired watch: resume unless stopping
                if self._stop.is_set():
                    return
                time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()


class ReplayDriver:
    """Replays one slice under one scheduler at a time on a running local cluster."""

    def __init__(
        self,
        cluster: LocalCluster,
        nodes: Sequence[TraceNode],
        settings: ReplayConfig,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.cluster = cluster
        self.nodes = list(nodes)
        self.settings = settings
        self.progress = progress
        self.models = {n.name: settings.model_map.get(n.model, n.model) for n in nodes}
        self.trace_speed = fleet_mean_speed(nodes, settings.model_map)
        self.config = settings.sim_config(self.trace_speed)
        self.api = _core_api(cluster)

    def _namespace(self, policy: PolicyName) -> str:
        from kubernetes import client

        name = f"replay-{policy}"
        self.api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        self.cluster.wait_for_default_service_account(name)
        return name

    def _set_schedulable(self, node: str, schedulable: bool) -> None:
        """Cordon or uncordon ``node``, with the cordon's taint in the same write.

        kube-controller-manager adds and removes ``node.kubernetes.io/unschedulable``
        after a cordon; waiting for it would delay each uncordoned node by the
        controller's reaction time, which the compressed clock magnifies (the
        scheduler's TaintToleration filter keeps it out until the taint goes).
        """
        taints = [UNSCHEDULABLE_TAINT] if not schedulable else []
        self.api.patch_node(
            node,
            {"spec": {"unschedulable": not schedulable, "taints": taints}},
            _preload_content=False,
        )

    def _cordon_all(self) -> None:
        """Every node off before a run, as the autoscaler's fleet starts."""
        with ThreadPoolExecutor(API_WORKERS, thread_name_prefix="replay-cordon") as pool:
            list(pool.map(lambda n: self._set_schedulable(n, False), self.models))

    def run(self, policy: PolicyName, pods: Sequence[TracePod]) -> ObservedRun:
        """Create, watch and delete ``pods`` on the compressed clock; where did they go?"""
        namespace = self._namespace(policy)
        self._cordon_all()
        by_name = {p.name: p for p in pods}
        compression = self.settings.time_compression
        window = self.settings.window_end_seconds
        autoscaler = ReplayAutoscaler(
            self.nodes,
            self.settings.compressed_provisioning_delay_seconds,
            self.settings.compressed_grace_seconds,
            self.settings.seed,
        )
        started = time.monotonic()
        epoch = datetime.now(UTC)

        def clock() -> float:
            return time.monotonic() - started

        manifests = {
            p.name: pod_manifest(p, policy, namespace, self.config, self.trace_speed, epoch)
            for p in pods
        }
        watch = _BindingWatch(self.api, namespace, clock)
        watch.start()
        # (replay seconds, order, name): deletions before creations at the same instant
        events: list[tuple[float, int, str]] = [
            (p.creation_seconds / compression, 1, p.name) for p in pods
        ]
        heapq.heapify(events)
        starts: dict[str, tuple[str, float]] = {}
        pending: dict[str, TracePod] = {}  # created, not seen bound; creation order
        requeues: Counter[str] = Counter()
        creation_lag: list[float] = []
        binding_lag: list[float] = []
        deleted: set[str] = set()
        lock = threading.Lock()

        def create(name: str, planned: float) -> None:
            self.api.create_namespaced_pod(namespace, manifests[name], _preload_content=False)
            with lock:
                creation_lag.append(clock() - planned)

        def delete(name: str) -> None:
            self.api.delete_namespaced_pod(
                name, namespace, grace_period_seconds=0, _preload_content=False
            )

        def requeue(name: str, uid: str, version: str) -> None:
            """Re-create a pod kube-scheduler holds in backoff: see REQUEUE_LIMIT."""
            from kubernetes import client
            from kubernetes.client.exceptions import ApiException

            try:
                self.api.delete_namespaced_pod(
                    name,
                    namespace,
                    body=client.V1DeleteOptions(
                        grace_period_seconds=0,
                        preconditions=client.V1Preconditions(uid=uid, resource_version=version),
                    ),
                    _preload_content=False,
                )
            except ApiException as error:
                if error.status in (404, 409):  # bound or changed meanwhile: leave it
                    return
                raise
            # the old pod may linger a moment (bound just before the delete: kwok ends it)
            for _ in range(REQUEUE_CREATE_ATTEMPTS):
                if name in starts:
                    return  # it was bound after all: its binding stands
                try:
                    self.api.create_namespaced_pod(
                        namespace, manifests[name], _preload_content=False
                    )
                    return
                except ApiException as error:
                    if error.status != 409:
                        raise
                    time.sleep(0.05)
            raise ClusterError(f"pod {name} could not be re-created: it is still there")

        pool = ThreadPoolExecutor(API_WORKERS, thread_name_prefix="replay-api")
        futures = []

        def apply(actions: list[tuple[str, bool]]) -> None:
            for node, schedulable in actions:
                futures.append(pool.submit(self._set_schedulable, node, schedulable))

        try:
            while True:
                now = clock()
                while True:
                    try:
                        name, node, seen = watch.events.get_nowait()
                    except queue.Empty:
                        break
                    pod = by_name[name]
                    starts[name] = (node, seen)
                    pending.pop(name, None)
                    binding_lag.append(seen - pod.creation_seconds / compression)
                    apply(autoscaler.bound(pod, node, seen))
                    placed = placement_for(
                        pod, node, self.models[node], seen, policy, self.config, self.trace_speed
                    )
                    heapq.heappush(events, (placed.end_seconds, 0, name))
                while events and events[0][0] <= now and events[0][0] < window:
                    at, order, name = heapq.heappop(events)
                    if order == 1:
                        pending[name] = by_name[name]
                        futures.append(pool.submit(create, name, at))
                    else:
                        deleted.add(name)
                        autoscaler.finished(by_name[name], at)
                        futures.append(pool.submit(delete, name))
                apply(autoscaler.step(now, list(pending.values())))
                for name in [n for n in pending if n in watch.backing_off]:
                    if requeues[name] < REQUEUE_LIMIT and autoscaler.fits_powered(pending[name]):
                        uid, version = watch.backing_off.pop(name)
                        requeues[name] += 1
                        futures.append(pool.submit(requeue, name, uid, version))
                finished = (
                    not any(o == 1 for _, o, _ in events)
                    and len(deleted) == len(pods)
                    and not (autoscaler.powered.any() or autoscaler.booting.any())
                )
                if finished or now >= window:
                    break
                wake = min(events[0][0] if events else window, autoscaler.next_deadline(), window)
                wait = min(0.02, max(0.0, wake - clock()))
                try:
                    name, node, seen = watch.events.get(timeout=wait)
                    watch.events.put((name, node, seen))
                except queue.Empty:
                    pass
            for future in futures:
                future.result()
        finally:
            pool.shutdown(wait=True)
            watch.stop()
        wall = clock()
        unscheduled = sorted(set(by_name) - set(starts))
        self.progress(
            f"[replay] {policy}: {len(starts)} placed, {len(unscheduled)} unscheduled, "
            f"{autoscaler.nodes_added} nodes added in {wall:.0f} s"
        )
        self._clear(namespace)
        return ObservedRun(
            policy=policy,
            starts=starts,
            unscheduled=unscheduled,
            wall_seconds=wall,
            creation_lag_seconds=creation_lag,
            binding_lag_seconds=binding_lag,
            power_intervals=autoscaler.close(min(wall, window)),
            nodes_added=autoscaler.nodes_added,
            late_bindings=autoscaler.late_bindings,
            first_unschedulable=dict(watch.unschedulable),
            requeued=sum(requeues.values()),
        )

    def _clear(self, namespace: str) -> None:
        """Delete what is left and wait until no pod of the namespace holds a node."""
        self.api.delete_collection_namespaced_pod(
            namespace, grace_period_seconds=0, _preload_content=False
        )
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        while self.api.list_namespaced_pod(namespace).items:
            if time.monotonic() > deadline:
                raise ClusterError(f"pods of {namespace} still there after deleting them all")
            time.sleep(0.2)
        self.api.delete_namespace(namespace, _preload_content=False)


def replay_on_local_cluster(
    pods: Sequence[TracePod],
    nodes: Sequence[TraceNode],
    settings: ReplayConfig,
    policies: Sequence[PolicyName],
    state_dir: Path,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[PolicyName, ObservedRun]:
    """Start a control plane with the slice's fleet, replay under each policy, stop it."""
    cluster = LocalCluster(state_dir, progress=progress)
    cluster.up(fleet_for_replay(nodes, settings.model_map))
    try:
        if any(p in (PolicyName.LEPTON_BALANCED, PolicyName.LEPTON_EFFICIENCY) for p in policies):
            LeptonStack(cluster).start_scheduler()
        if PolicyName.MOST_ALLOCATED in policies:
            cluster.start_scheduler_with(
                f"{MOST_ALLOCATED_SCHEDULER_NAME}-scheduler", most_allocated_scheduler_config()
            )
        driver = ReplayDriver(cluster, nodes, settings, progress)
        return {policy: driver.run(policy, pods) for policy in policies}
    finally:
        cluster.down()
