"""GPU-to-pod mapping through a real gRPC pod-resources server on a unix socket."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from lepton_exporter.podresources import api_pb2, api_pb2_grpc
from lepton_exporter.podresources.client import (
    PodResourcesClient,
    PodResourcesError,
    fake_response,
)
from lepton_exporter.readings import PodRef


class FakeKubelet(api_pb2_grpc.PodResourcesListerServicer):
    """Answers List like the kubelet, from a canned response."""

    def __init__(self, response: api_pb2.ListPodResourcesResponse) -> None:
        self.response = response
        self.calls = 0

    def List(self, request: Any, context: Any) -> api_pb2.ListPodResourcesResponse:  # noqa: N802
        self.calls += 1
        return self.response


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[tuple[str, FakeKubelet]]:
    response = fake_response(
        [
            ("ml", "train-0", "trainer", ["GPU-aaaa", "GPU-bbbb"]),
            ("ml", "infer-0", "server", ["GPU-cccc::0"]),
            ("ml", "infer-1", "server", ["GPU-cccc::1"]),
        ]
    )
    # A container with a non-GPU device must not show up.
    other = response.pod_resources.add(name="nic", namespace="net")
    other.containers.add(name="c").devices.add(resource_name="example.com/nic", device_ids=["x"])
    servicer = FakeKubelet(response)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    socket_path = str(tmp_path / "kubelet.sock")
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    yield socket_path, servicer
    server.stop(grace=None)


def test_gpus_map_to_the_containers_the_kubelet_lists(kubelet: tuple[str, FakeKubelet]) -> None:
    socket_path, servicer = kubelet
    client = PodResourcesClient(socket_path)
    try:
        holders = client.gpu_holders()
    finally:
        client.close()
    assert servicer.calls == 1
    assert holders == {
        "GPU-aaaa": [PodRef("ml", "train-0", "trainer")],
        "GPU-bbbb": [PodRef("ml", "train-0", "trainer")],
        # Time-sliced replicas of one GPU are that GPU's several holders.
        "GPU-cccc": [PodRef("ml", "infer-0", "server"), PodRef("ml", "infer-1", "server")],
    }


def test_a_missing_socket_fails_with_the_fix(tmp_path: Path) -> None:
    client = PodResourcesClient(str(tmp_path / "absent.sock"), timeout_seconds=0.5)
    with pytest.raises(PodResourcesError, match="--podresources-socket"):
        client.gpu_holders()
    client.close()
