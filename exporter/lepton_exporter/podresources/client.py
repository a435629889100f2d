"""Lists the kubelet's pod resources and maps GPU UUIDs to the containers holding them.

Three ways a container holds a GPU, all in one ``List`` answer:

- a device plugin's ``nvidia.com/gpu`` ids: GPU UUIDs, or ``<uuid>::<n>`` replicas of a
  time-sliced or MPS-shared GPU (one replica each, repeated ids for several);
- MIG devices, ``MIG-…`` UUIDs, under ``nvidia.com/gpu`` (single strategy) or
  ``nvidia.com/mig-<profile>`` (mixed strategy);
- DRA ResourceClaims (``dynamic_resources``, Kubernetes 1.30+ where the kubelet's
  ``KubeletPodResourcesDynamicResources`` gate is on): (driver, pool, device) triplets,
  mapped to UUIDs by the devices' ``uuid`` attribute in their ResourceSlice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grpc

from lepton.core.errors import LeptonError
from lepton.core.names import RESOURCE_GPU, RESOURCE_MIG_PREFIX
from lepton_exporter.podresources import api_pb2, api_pb2_grpc
from lepton_exporter.readings import PodRef

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
# The resource names GPU device plugins register (NVIDIA's device plugin;
# its time-slicing and MPS modes keep the same name).
GPU_RESOURCE_NAMES = frozenset({RESOURCE_GPU})
# The time-slicing device plugin hands out replicas of a GPU as "<uuid>::<n>".
REPLICA_SEPARATOR = "::"
# DRA drivers whose devices are NVIDIA GPUs or MIG devices.
DRA_GPU_DRIVERS = frozenset({"gpu.nvidia.com"})

# (driver, pool, device) of a claimed DRA device -> its GPU or MIG UUID, or None.
DraDeviceUuid = Callable[[str, str, str], str | None]


def uuid_in_device_name(driver: str, pool: str, device: str) -> str | None:
    """The UUID a DRA device name carries itself (``GPU-…``, ``MIG-…``), else None."""
    return device if device.startswith(("GPU-", "MIG-")) else None


def is_gpu_resource(resource_name: str) -> bool:
    return resource_name in GPU_RESOURCE_NAMES or resource_name.startswith(RESOURCE_MIG_PREFIX)


class PodResourcesError(LeptonError, RuntimeError):
    """The kubelet's pod-resources socket could not be read."""


def gpu_holders(
    response: api_pb2.ListPodResourcesResponse,
    dra_uuid: DraDeviceUuid = uuid_in_device_name,
) -> dict[str, list[PodRef]]:
    """GPU or MIG UUID -> containers holding it, once per replica held, from a ``List`` response.

    Replica ids of a shared GPU (``GPU-…::3``) collapse onto their GPU, so that
    the pods sharing it show up as its several holders, and a pod holding two
    replicas twice (its allocation weighs double when idle energy is split).
    A DRA device shared by several containers (one claim, several users) has each
    as a holder.
    """
    holders: dict[str, list[PodRef]] = {}
    for pod in response.pod_resources:
        for container in pod.containers:
            ref = PodRef(pod.namespace, pod.name, container.name)
            for devices in container.devices:
                if not is_gpu_resource(devices.resource_name):
                    continue
                for device_id in devices.device_ids:
                    holders.setdefault(device_id.split(REPLICA_SEPARATOR, 1)[0], []).append(ref)
            claimed: set[str] = set()
            for dynamic in container.dynamic_resources:
                for claim in dynamic.claim_resources:
                    if claim.driver_name not in DRA_GPU_DRIVERS:
                        continue
                    uuid = dra_uuid(claim.driver_name, claim.pool_name, claim.device_name)
                    if uuid is not None and uuid not in claimed:
                        claimed.add(uuid)
                        holders.setdefault(uuid, []).append(ref)
    return holders


class PodResourcesClient:
    """A ``List`` client over the kubelet's unix socket."""

    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        timeout_seconds: float = 5.0,
        dra_uuid: DraDeviceUuid = uuid_in_device_name,
    ) -> None:
        self.socket_path = socket_path
        self.dra_uuid = dra_uuid
        self.timeout_seconds = timeout_seconds
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]

    def list_pod_resources(self) -> api_pb2.ListPodResourcesResponse:
        try:
            response: api_pb2.ListPodResourcesResponse = self._stub.List(
                api_pb2.ListPodResourcesRequest(), timeout=self.timeout_seconds
            )
        except grpc.RpcError as error:
            raise PodResourcesError(
                f"kubelet pod-resources API at {self.socket_path} failed: {error}. "
                "Mount /var/lib/kubelet/pod-resources into the exporter's pod "
                "(hostPath) or pass --podresources-socket."
            ) from error
        return response

    def gpu_holders(self) -> dict[str, list[PodRef]]:
        return gpu_holders(self.list_pod_resources(), self.dra_uuid)

    def close(self) -> None:
        self._channel.close()


def fake_response(
    pods: Iterable[tuple[str, str, str, list[str]]],
) -> api_pb2.ListPodResourcesResponse:
    """A ``List`` response for (namespace, pod, container, GPU ids), for tests and benches.

    Ids starting with ``MIG-`` go under the mixed strategy's MIG resource name.
    """
    response = api_pb2.ListPodResourcesResponse()
    for namespace, name, container, device_ids in pods:
        pod = response.pod_resources.add(name=name, namespace=namespace)
        entry = pod.containers.add(name=container)
        gpus = [d for d in device_ids if not d.startswith("MIG-")]
        migs = [d for d in device_ids if d.startswith("MIG-")]
        if gpus:
            entry.devices.add(resource_name=RESOURCE_GPU, device_ids=gpus)
        if migs:
            entry.devices.add(resource_name=f"{RESOURCE_MIG_PREFIX}1g.10gb", device_ids=migs)
    return response


def add_dra_claim(
    response: api_pb2.ListPodResourcesResponse,
    namespace: str,
    pod: str,
    container: str,
    claim: str,
    devices: Iterable[tuple[str, str, str]],
) -> None:
    """Add a container holding ResourceClaim ``claim`` of (driver, pool, device) devices."""
    entry = response.pod_resources.add(name=pod, namespace=namespace).containers.add(name=container)
    dynamic = entry.dynamic_resources.add(claim_name=claim, claim_namespace=namespace)
    for driver, pool, device in devices:
        dynamic.claim_resources.add(driver_name=driver, pool_name=pool, device_name=device)
