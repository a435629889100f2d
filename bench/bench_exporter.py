"""Exporter overhead: scrape latency and CPU for 8 GPUs and 50 pods on the fake NVML.

Kepler's users complain about exporter CPU overhead (notes/energy-metering.md);
the goals here are a scrape p99 of at most 20 ms and under 1 % of one core at a
15-second scrape interval, sampling included. Three set-ups side by side, in one run:

- ``equal``: time-sliced GPUs without sharing attribution (split equally, no /proc reads);
- ``sharing``: the same with ``--sharing-attribution``: every GPU process resolved
  through a recorded ``/proc`` tree (cgroup and stat files) and the pods' UIDs;
- ``mig``: 8 boards of 7 MIG devices, 50 of the 56 held by a pod with a process each.

The GPUs are fake (no GPU on the benchmark machine), so NVML's own call latency is
not in these figures; /proc reads are real file reads (of a tmpfs-like temporary tree).

    python -m bench.bench_exporter [--scrapes 300] [--out results]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from lepton_exporter.kube import PodIdentity
from lepton_exporter.main import Exporter
from lepton_exporter.nvml import NvmlBackend
from lepton_exporter.procs import ProcPodResolver
from lepton_exporter.readings import PodRef
from prometheus_client import generate_latest, start_http_server

from lepton.hw.fake_nvml import FakeGpu, FakeNvml, mig_gpu

GPUS = 8
PODS = 50
SCRAPE_INTERVAL_SECONDS = 15.0
SAMPLE_INTERVAL_SECONDS = 5.0  # the exporter's default --interval-seconds
GOAL_SCRAPE_MS = 20.0
GOAL_CORE_FRACTION = 0.01


MODES = ("equal", "sharing", "mig")


def build(mode: str, proc: Path) -> tuple[Exporter, FakeNvml]:
    pods = [PodRef("bench", f"pod-{p:02d}", "main") for p in range(PODS)]
    holders: dict[str, list[PodRef]] = {}
    identities: dict[str, PodIdentity] = {}
    if mode == "mig":
        fake = FakeNvml([mig_gpu(f"GPU-bench-{i:02d}", [(1, "1g.10gb")] * 7) for i in range(GPUS)])
        devices = [d for gpu in fake.gpus for d in gpu.mig_devices if d is not None]
    else:
        fake = FakeNvml(
            [FakeGpu(uuid=f"GPU-bench-{i:02d}", power_mw=150_000 + i * 1000) for i in range(GPUS)]
        )
    for p, pod in enumerate(pods):
        pid = 1000 + p
        pod_uid = f"{p:08x}-0000-4000-8000-{p:012x}"
        container_id = f"{p:064x}"
        identities[pod_uid] = PodIdentity(
            pod_uid, pod.namespace, pod.pod, {container_id: pod.container}, (pod.container,)
        )
        (proc / str(pid)).mkdir(parents=True, exist_ok=True)
        fields = ["S"] + ["0"] * 18 + [str(10_000 + p)] + ["0"] * 30
        (proc / str(pid) / "stat").write_text(f"{pid} (python3) {' '.join(fields)}\n")
        (proc / str(pid) / "cgroup").write_text(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            f"{pod_uid.replace('-', '_')}.slice/cri-containerd-{container_id}.scope\n"
        )
        if mode == "mig":
            holders[devices[p].uuid] = [pod]
            devices[p].running[pid] = 1 << 30
        else:
            gpu = fake.gpus[p % GPUS]
            holders.setdefault(gpu.uuid, []).append(pod)
            gpu.processes[pid] = 5 + p % 40

    def lookup(pod_uid: str, container_id: str) -> PodRef | None:
        identity = identities.get(pod_uid)
        return None if identity is None else identity.container_ref(container_id)

    backend = NvmlBackend(fake, "bench-node")
    backend.start()
    resolver = ProcPodResolver(lookup, str(proc)).resolve if mode != "equal" else None
    exporter = Exporter(
        backends=[backend],
        node="bench-node",
        holders=lambda: holders,
        resolve_pid=resolver,
        clock=fake.clock,
    )
    return exporter, fake


def measure(mode: str, scrapes: int, proc: Path) -> dict[str, object]:
    exporter, fake = build(mode, proc)
    for _ in range(3):
        fake.advance(1.0)
        exporter.sample_once()

    sample_cpu: list[float] = []
    for _ in range(scrapes):
        fake.advance(1.0)
        start = time.thread_time()
        exporter.sample_once()
        sample_cpu.append(time.thread_time() - start)

    registry = exporter.registry()
    render_cpu: list[float] = []
    body = b""
    for _ in range(scrapes):
        start = time.thread_time()
        body = generate_latest(registry)
        render_cpu.append(time.thread_time() - start)

    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = server.server_address[1]
    latency: list[float] = []
    try:
        for _ in range(scrapes):
            start = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                reply.read()
            latency.append(time.perf_counter() - start)
    finally:
        server.shutdown()
        thread.join(timeout=5)

    def ms(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1] * 1000

    render_mean = statistics.fmean(render_cpu)
    sample_mean = statistics.fmean(sample_cpu)
    core_fraction = render_mean / SCRAPE_INTERVAL_SECONDS + sample_mean / SAMPLE_INTERVAL_SECONDS
    p99 = ms(latency, 99)
    return {
        "mode": mode,
        "gpus": GPUS,
        "pods": PODS,
        "scrapes": scrapes,
        "series_bytes": len(body),
        "series": sum(1 for line in body.decode().splitlines() if line and line[0] != "#"),
        "scrape_latency_ms_p50": ms(latency, 50),
        "scrape_latency_ms_p99": p99,
        "scrape_latency_ms_max": max(latency) * 1000,
        "render_cpu_ms_mean": render_mean * 1000,
        # The scrape's own CPU time: what the exporter costs whatever its neighbours do.
        "render_cpu_ms_p99": ms(render_cpu, 99),
        "sample_cpu_ms_mean": sample_mean * 1000,
        "sample_cpu_ms_p99": ms(sample_cpu, 99),
        "core_fraction": core_fraction,
        "meets_latency_goal_p99": p99 <= GOAL_SCRAPE_MS,
        "meets_cpu_goal": core_fraction < GOAL_CORE_FRACTION,
        "latencies_ms": [v * 1000 for v in latency],
    }


def run_all(scrapes: int) -> dict[str, object]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-exporter-proc-") as directory:
        for mode in MODES:
            rows.append(measure(mode, scrapes, Path(directory) / mode))
    base = rows[0]

    def ratio(row: dict[str, object], key: str) -> float:
        return float(row[key]) / float(base[key])  # type: ignore[arg-type]

    return {
        "benchmark": f"exporter overhead, {GPUS} fake GPUs x {PODS} pods: equal split vs "
        "sharing attribution vs MIG, same run",
        "goal_scrape_ms_p99": GOAL_SCRAPE_MS,
        "goal_core_fraction": GOAL_CORE_FRACTION,
        "scrape_interval_seconds": SCRAPE_INTERVAL_SECONDS,
        "sample_interval_seconds": SAMPLE_INTERVAL_SECONDS,
        "machine": {"cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0]},
        "results": [{k: v for k, v in r.items() if k != "latencies_ms"} for r in rows],
        "ratios_vs_equal": [
            {
                "mode": r["mode"],
                "sample_cpu": ratio(r, "sample_cpu_ms_mean"),
                "render_cpu": ratio(r, "render_cpu_ms_mean"),
                "scrape_p99": ratio(r, "scrape_latency_ms_p99"),
                "core_fraction": ratio(r, "core_fraction"),
            }
            for r in rows[1:]
        ],
        "latencies_ms": {str(r["mode"]): r["latencies_ms"] for r in rows},
        "note": "fake NVML: NVML call latency on real GPUs is not included; p99 on a shared "
        "machine mostly measures the neighbours (load_average_1m)",
    }


def chart(result: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latencies = result["latencies_ms"]
    rows = result["results"]
    assert isinstance(latencies, dict) and isinstance(rows, list)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.boxplot(list(latencies.values()), tick_labels=list(latencies), whis=(1, 99))
    left.axhline(
        GOAL_SCRAPE_MS, color="#cc3311", linestyle="--", label=f"goal p99 {GOAL_SCRAPE_MS:g} ms"
    )
    left.set_ylabel("scrape latency over loopback (ms)")
    left.legend()
    right.bar(
        [str(r["mode"]) for r in rows],
        [float(r["core_fraction"]) * 100 for r in rows],
        color="#4477aa",
    )
    right.axhline(GOAL_CORE_FRACTION * 100, color="#cc3311", linestyle="--", label="goal 1 %")
    right.set_ylabel("% of one core (15 s scrapes, 5 s samples)")
    right.legend()
    fig.suptitle(f"lepton exporter, {GPUS} fake GPUs x {PODS} pods")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="exporter overhead benchmark")
    parser.add_argument("--scrapes", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    result = run_all(args.scrapes)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in result.items() if k != "latencies_ms"}
    (args.out / "bench_exporter.json").write_text(json.dumps(summary, indent=2) + "\n")
    chart(result, args.out / "bench_exporter.png")
    print(json.dumps(summary, indent=2))
    # A benchmark reports against its goals; a missed goal is in the JSON, not the exit code.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
