"""Fleets of fake GPU nodes: the default, fleet files and the trace's node list."""

from __future__ import annotations

from pathlib import Path

import pytest

from lepton.cluster.fleet import (
    DEFAULT_FLEET,
    FleetError,
    load_fleet,
)
from lepton.core.names import LABEL_GPU_PRODUCT, LABEL_ZONE


def test_default_fleet_is_mixed_across_three_zones() -> None:
    nodes = DEFAULT_FLEET.nodes()
    models = {n["metadata"]["labels"]["lepton.dev/gpu-model"] for n in nodes}
    zones = {n["metadata"]["labels"][LABEL_ZONE] for n in nodes}
    assert {"A40", "A100", "T4", "L4"} <= models
    assert len(zones) == 3
    for node in nodes:
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert int(node["status"]["capacity"]["nvidia.com/gpu"]) > 0
        assert node["metadata"]["labels"][LABEL_GPU_PRODUCT]


def test_fleet_file_describes_any_fleet(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "nodeGroups:\n"
        "  - {name: big, count: 3, gpuModel: H100, gpusPerNode: 8, zone: east}\n"
        "  - {name: small, gpuModel: L4, gpusPerNode: 1, zone: west, cpuMillis: 8000}\n"
    )
    fleet = load_fleet(path)
    names = [n["metadata"]["name"] for n in fleet.nodes()]
    assert names == ["big-0", "big-1", "big-2", "small-0"]
    small = fleet.nodes()[-1]
    assert small["status"]["capacity"]["cpu"] == "8000m"
    assert small["metadata"]["labels"][LABEL_GPU_PRODUCT] == "NVIDIA-L4"


def test_a_fleet_file_can_give_a_nodes_measured_host_idle_draw(tmp_path: Path) -> None:
    from lepton_scheduler.cache import ClusterCache

    path = tmp_path / "fleet.yaml"
    path.write_text(
        "nodeGroups:\n"
        "  - {name: lean, gpuModel: L4, gpusPerNode: 8, zone: a, hostIdleWatts: 180}\n"
        "  - {name: plain, gpuModel: L4, gpusPerNode: 8, zone: a}\n"
    )
    nodes = load_fleet(path).nodes()
    assert nodes[0]["metadata"]["labels"]["lepton.dev/host-idle-watts"] == "180"
    assert "lepton.dev/host-idle-watts" not in nodes[1]["metadata"]["labels"]
    # the Lepton scheduler reads the label into the scorer's table; the other node gets the default
    cache = ClusterCache()
    cache.replace_nodes(nodes)
    table, _ = cache.table(["lean-0", "plain-0"])
    assert table.host_idle().tolist() == [180.0, 300.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nodeGroups: []", "non-empty list 'nodeGroups'"),
        (
            "nodeGroups:\n  - {name: a, gpuModel: A40, zone: z}",
            r"nodeGroups\[0\]: 'gpusPerNode' is required",
        ),
        (
            "nodeGroups:\n  - {name: a, gpuModel: A40, zone: z, gpusPerNode: -1}",
            "non-negative integer",
        ),
        (
            "nodeGroups:\n  - {gpuModel: A40, zone: z, gpusPerNode: 1}",
            "'name' must be a non-empty string",
        ),
        (
            "nodeGroups:\n  - {name: a, gpuModel: A40, zone: z, gpusPerNode: 1}\n"
            "  - {name: a, gpuModel: T4, zone: z, gpusPerNode: 1}",
            "duplicate node names",
        ),
        ("nodeGroups: [", "not valid YAML"),
        (
            "nodeGroups:\n  - {name: a, gpuModel: A40, zone: z, gpusPerNode: 1, hostIdleWatts: x}",
            "'hostIdleWatts' must be a non-negative integer",
        ),
    ],
)
def test_bad_fleet_files_say_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(FleetError, match=message):
        load_fleet(path)


def test_trace_node_list_loads_as_a_fleet(shipped_data: Path) -> None:
    fleet = load_fleet(shipped_data / "traces" / "openb_node_list_gpu_node.csv")
    nodes = fleet.nodes()
    assert len(nodes) == 1213
    assert sum(int(n["status"]["capacity"]["nvidia.com/gpu"]) for n in nodes) == 6212
    assert nodes[0]["metadata"]["name"] == "openb-node-0000"
    assert {n["metadata"]["labels"][LABEL_ZONE] for n in nodes} == {"zone-a", "zone-b", "zone-c"}
    assert (
        len(load_fleet(shipped_data / "traces" / "openb_node_list_gpu_node.csv", limit=150).nodes())
        == 150
    )
