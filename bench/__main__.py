"""``make bench``: every benchmark, one after another, each writing JSON + PNG under results/.

Benchmarks are not tests: they measure, and report against their goals, but a
missed goal does not fail the run. A benchmark that crashes does.
Run one alone with ``python -m bench.bench_NAME``; list them with ``--list``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path

import bench


def discover() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--out", default="results", help="output folder (default: results)")
    args = parser.parse_args(argv)
    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    chosen = [n if n.startswith("bench_") else f"bench_{n}" for n in args.names] or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {names}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    failed = []
    for i, name in enumerate(chosen, 1):
        print(f"[bench {i}/{len(chosen)}] {name}", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"bench.{name}")
        try:
            rc = module.main(["--out", args.out])
        except Exception as error:  # report and go on: one crash must not hide the others
            print(f"[bench] {name} crashed: {error!r}", file=sys.stderr, flush=True)
            rc = 1
        print(
            f"[bench] {name} finished in {time.monotonic() - started:.0f} s (rc={rc})", flush=True
        )
        if rc:
            failed.append(name)
    from bench.publish import REPO, publish

    # The docs show the project's own results folder only: a scratch --out never overwrites them.
    if Path(args.out).resolve() == (REPO / "results").resolve():
        print(f"[bench] published {publish(Path(args.out))}")
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"[bench] all {len(chosen)} benchmarks done; results in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
