"""Exporter overhead: scrape latency and CPU per scrape for 8 GPUs and 50 pods on the fake NVML.

Kepler's users complain about exporter CPU overhead (notes/energy-metering.md);
the goals here are a scrape under 20 ms and under 1 % of one core at a
15-second scrape interval, sampling included. The GPUs are fake (no GPU on
the benchmark machine), so NVML's own call latency is not in these figures.

    python -m bench.bench_exporter [--scrapes 300] [--out results]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import urllib.request
from pathlib import Path

from lepton_exporter.fake_nvml import FakeGpu, FakeNvml
from lepton_exporter.main import Exporter
from lepton_exporter.nvml import NvmlBackend
from lepton_exporter.readings import PodRef
from prometheus_client import generate_latest, start_http_server

GPUS = 8
PODS = 50
SCRAPE_INTERVAL_SECONDS = 15.0
SAMPLE_INTERVAL_SECONDS = 5.0  # the exporter's default --interval-seconds
GOAL_SCRAPE_MS = 20.0
GOAL_CORE_FRACTION = 0.01


def build() -> tuple[Exporter, FakeNvml]:
    fake = FakeNvml(
        [FakeGpu(uuid=f"GPU-bench-{i:02d}", power_mw=150_000 + i * 1000) for i in range(GPUS)]
    )
    backend = NvmlBackend(fake, "bench-node")
    backend.start()
    pods = [PodRef("bench", f"pod-{p:02d}", "main") for p in range(PODS)]
    holders: dict[str, list[PodRef]] = {}
    pid_to_pod: dict[int, PodRef] = {}
    for p, pod in enumerate(pods):
        gpu = fake.gpus[p % GPUS]
        holders.setdefault(gpu.uuid, []).append(pod)
        gpu.processes[1000 + p] = 5 + p % 40
        pid_to_pod[1000 + p] = pod
    exporter = Exporter(
        backends=[backend],
        node="bench-node",
        holders=lambda: holders,
        resolve_pid=pid_to_pod.get,
        clock=fake.clock,
    )
    return exporter, fake


def measure(scrapes: int) -> dict[str, object]:
    exporter, fake = build()
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
        return (
            statistics.quantiles(values, n=100)[int(q) - 1] * 1000
            if q < 100
            else max(values) * 1000
        )

    render_mean = statistics.fmean(render_cpu)
    sample_mean = statistics.fmean(sample_cpu)
    core_fraction = render_mean / SCRAPE_INTERVAL_SECONDS + sample_mean / SAMPLE_INTERVAL_SECONDS
    return {
        "gpus": GPUS,
        "pods": PODS,
        "scrapes": scrapes,
        "series_bytes": len(body),
        "series": sum(1 for line in body.decode().splitlines() if line and line[0] != "#"),
        "scrape_latency_ms_p50": ms(latency, 50),
        "scrape_latency_ms_p99": ms(latency, 99),
        "scrape_latency_ms_max": max(latency) * 1000,
        "render_cpu_ms_mean": render_mean * 1000,
        "sample_cpu_ms_mean": sample_mean * 1000,
        "scrape_interval_seconds": SCRAPE_INTERVAL_SECONDS,
        "sample_interval_seconds": SAMPLE_INTERVAL_SECONDS,
        "core_fraction": core_fraction,
        "goal_scrape_ms": GOAL_SCRAPE_MS,
        "goal_core_fraction": GOAL_CORE_FRACTION,
        # p99 on a shared 2-core machine mostly measures the neighbours; both are reported.
        "meets_latency_goal_p50": ms(latency, 50) < GOAL_SCRAPE_MS,
        "meets_latency_goal_p99": ms(latency, 99) < GOAL_SCRAPE_MS,
        "meets_cpu_goal": core_fraction < GOAL_CORE_FRACTION,
        "load_average_1m": os.getloadavg()[0],
        "latencies_ms": [v * 1000 for v in latency],
        "note": "fake NVML: NVML call latency on real GPUs is not included",
    }


def chart(result: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latencies = result["latencies_ms"]
    assert isinstance(latencies, list)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(latencies, bins=40, color="#4477aa")
    ax.axvline(GOAL_SCRAPE_MS, color="#cc3311", linestyle="--", label=f"goal {GOAL_SCRAPE_MS} ms")
    ax.set_xlabel("scrape latency over loopback (ms)")
    ax.set_ylabel("scrapes")
    ax.set_title(
        f"lepton exporter, {GPUS} fake GPUs x {PODS} pods: "
        f"{float(result['core_fraction']) * 100:.3f}% of a core"  # type: ignore[arg-type]
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="exporter overhead benchmark")
    parser.add_argument("--scrapes", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    result = measure(args.scrapes)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_exporter.json").write_text(
        json.dumps({k: v for k, v in result.items() if k != "latencies_ms"}, indent=2) + "\n"
    )
    chart(result, args.out / "bench_exporter.png")
    summary = {k: v for k, v in result.items() if k != "latencies_ms"}
    print(json.dumps(summary, indent=2))
    # A benchmark reports against its goals; a missed goal is in the JSON, not the exit code.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
