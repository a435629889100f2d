"""Host process ids to the pods and containers they run in, through ``/proc/<pid>/cgroup``.

NVML names the processes on a GPU by host PID. To charge a time-sliced or
MPS-shared GPU's energy to the pods that used it, each PID is mapped to its
container: the kubelet puts every container in a cgroup whose path carries
the pod's UID and the container's id, in one of a few shapes:

- cgroup v1 or v2, with the ``cgroupfs`` driver:
  ``/kubepods/burstable/pod<uid>/<container-id>`` (containerd) or ``.../crio-<id>`` (CRI-O);
- with the ``systemd`` driver:
  ``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/``
  then ``cri-containerd-<id>.scope`` (containerd) or ``crio-<id>.scope`` (CRI-O);
- seen from inside a container's own cgroup namespace, the same path with ``/../..`` in front.

The pod UID and container id are then named by the Kubernetes API (``PodLookup``).
This needs the host's PID namespace (``hostPID``) and its ``/proc`` (read-only);
the chart asks for both only when sharing attribution is on.

A PID is cached with its start time (``/proc/<pid>/stat`` field 22): a recycled
PID has a new start time and is resolved afresh, and a process that exited
since it was sampled keeps the answer it had while it lived.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lepton_exporter.readings import PodRef

# Why a process's energy could not be charged to a pod (the ``reason`` label of the
# unattributed counter). One list, shared by the resolver and the accountant.
REASON_OUTSIDE_KUBERNETES = "process_outside_kubernetes"
REASON_UNRESOLVED_PID = "unresolved_pid"
REASON_POD_WITHOUT_ALLOCATION = "pod_without_allocation"
REASON_NO_POD_HOLDS_GPU = "no_pod_holds_gpu"
REASON_MIG_SLICE_WITHOUT_POD = "mig_slice_without_pod"
REASONS = (
    REASON_OUTSIDE_KUBERNETES,
    REASON_UNRESOLVED_PID,
    REASON_POD_WITHOUT_ALLOCATION,
    REASON_NO_POD_HOLDS_GPU,
    REASON_MIG_SLICE_WITHOUT_POD,
)

# A pod UID inside a cgroup path: dashes (cgroupfs) or underscores (systemd slice names).
_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?(?:/|$)"
)
# The container's cgroup: the last path element, a 64-hex id with the runtime's prefix.
_CONTAINER = re.compile(
    r"/(?:(cri-containerd|crio|docker|containerd)-)?([0-9a-f]{64})(?:\.scope)?$"
)


@dataclass(frozen=True)
class CgroupRef:
    """What a cgroup path says about a process: its pod's UID and its container's id."""

    pod_uid: str
    container_id: str  # "" for a pod-level process (the pause container's sandbox, conmon)
    runtime: str  # "containerd", "crio", "docker" or "" where the path does not say


def parse_cgroup(text: str) -> CgroupRef | None:
    """The pod and container of a ``/proc/<pid>/cgroup`` file, or None outside Kubernetes.

    cgroup v2 has one line ``0::<path>``; v1 has one line per hierarchy
    (``<id>:<controllers>:<path>``), and the first that names a pod is used.
    """
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = parts[2].strip()
        uid = _POD_UID.search(path)
        if uid is None:
            continue
        container = _CONTAINER.search(path)
        container_id, runtime = "", ""
        if container is not None and container.start() >= uid.end() - 1:
            prefix = container.group(1) or ""
            runtime = {"cri-containerd": "containerd", "crio": "crio"}.get(prefix, prefix)
            container_id = container.group(2)
        return CgroupRef(uid.group(1).replace("_", "-"), container_id, runtime)
    return None


def process_start_ticks(stat_text: str) -> int:
    """Field 22 of ``/proc/<pid>/stat``: start time after boot, in clock ticks.

    The command name (field 2) is in parentheses and may itself contain spaces
    and parentheses, so fields are counted from the last ``)``.
    """
    rest = stat_text[stat_text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): field 22 is rest[19].
    return int(rest[19])


# (pod UID, container id) -> the container as the pod-resources API names it, or None
# when the API does not know the pod (yet).
PodLookup = Callable[[str, str], PodRef | None]

# A resolution: the container (PodRef), or the reason it has none.
Resolution = PodRef | str


class ProcPodResolver:
    """Maps host PIDs to containers; one per exporter, called from the sampling thread."""

    def __init__(self, lookup: PodLookup, proc_root: str = "/proc", max_entries: int = 8192):
        self.lookup = lookup
        self.proc_root = Path(proc_root)
        self.max_entries = max_entries
        # pid -> (start ticks, the cgroup's reference or None outside Kubernetes)
        self._cache: OrderedDict[int, tuple[int, CgroupRef | None]] = OrderedDict()
        self.reads = 0  # cgroup files read (for tests and the benchmark)

    def _read_cgroup(self, pid: int) -> tuple[int, CgroupRef | None] | None:
        base = self.proc_root / str(pid)
        try:
            start = process_start_ticks((base / "stat").read_text())
            cgroup = (base / "cgroup").read_text()
        except (OSError, ValueError, IndexError):
            return None
        self.reads += 1
        return start, parse_cgroup(cgroup)

    def _cgroup_of(self, pid: int) -> tuple[CgroupRef | None, bool]:
        """(the cgroup reference, whether the process is known at all)."""
        cached = self._cache.get(pid)
        try:
            start = process_start_ticks((self.proc_root / str(pid) / "stat").read_text())
        except (OSError, ValueError, IndexError):
            # Exited since it was sampled: the answer it had while it lived, if any.
            if cached is not None:
                return cached[1], True
            return None, False
        if cached is not None and cached[0] == start:
            self._cache.move_to_end(pid)
            return cached[1], True
        fresh = self._read_cgroup(pid)
        if fresh is None:
            return None, False
        self._cache[pid] = fresh
        self._cache.move_to_end(pid)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return fresh[1], True

    def resolve(self, pid: int) -> Resolution:
        """The container running ``pid``, or why there is none (a ``REASON_…``)."""
        ref, known = self._cgroup_of(pid)
        if not known:
            return REASON_UNRESOLVED_PID
        if ref is None:
            return REASON_OUTSIDE_KUBERNETES
        pod = self.lookup(ref.pod_uid, ref.container_id)
        return REASON_UNRESOLVED_PID if pod is None else pod
