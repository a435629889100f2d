"""Lists the kubelet's pod resources and maps GPU UUIDs to the containers holding them."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from lepton_exporter.podresources import api_pb2, api_pb2_grpc
from lepton_exporter.readings import PodRef

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
# The resource names GPU device plugins register (NVIDIA's device plugin;
# its time-slicing and MPS modes keep the same name).
GPU_RESOURCE_NAMES = frozenset({"nvidia.com/gpu"})
# The time-slicing device plugin hands out replicas of a GPU as "<uuid>::<n>".
REPLICA_SEPARATOR = "::"


class PodResourcesError(RuntimeError):
    """The kubelet's pod-resources socket could not be read."""


def gpu_holders(response: api_pb2.ListPodResourcesResponse) -> dict[str, list[PodRef]]:
    """GPU UUID -> containers holding it, from a ``List`` response.

    Replica ids of a shared GPU (``GPU-…::3``) collapse onto their GPU, so
    that the pods sharing it show up as its several holders.
    """
    holders: dict[str, list[PodRef]] = {}
    for pod in response.pod_resources:
        for container in pod.containers:
            ref = PodRef(pod.namespace, pod.name, container.name)
            for devices in container.devices:
                if devices.resource_name not in GPU_RESOURCE_NAMES:
                    continue
                for device_id in devices.device_ids:
                    uuid = device_id.split(REPLICA_SEPARATOR, 1)[0]
                    refs = holders.setdefault(uuid, [])
                    if ref not in refs:
                        refs.append(ref)
    return holders


class PodResourcesClient:
    """A ``List`` client over the kubelet's unix socket."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout_seconds: float = 5.0) -> None:
        self.socket_path = socket_path
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
        return gpu_holders(self.list_pod_resources())

    def close(self) -> None:
        self._channel.close()


def fake_response(
    pods: Iterable[tuple[str, str, str, list[str]]],
) -> api_pb2.ListPodResourcesResponse:
    """A ``List`` response for (namespace, pod, container, GPU ids), for tests and benches."""
    response = api_pb2.ListPodResourcesResponse()
    for namespace, name, container, device_ids in pods:
        pod = response.pod_resources.add(name=name, namespace=namespace)
        entry = pod.containers.add(name=container)
        entry.devices.add(resource_name="nvidia.com/gpu", device_ids=device_ids)
    return response
