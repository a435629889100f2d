"""The wheel stands on its own: built from the repository's files, installed into a fresh
virtualenv in an empty folder, and run from there with nothing of the checkout in reach.

The wheel is built from a copy of the sources (what ``.gitignore`` does not exclude), so a
stale ``build/`` folder cannot leak into it, with this virtualenv's setuptools (no index is
needed). The fresh virtualenv gets Lepton from the wheel only; its dependencies are the run-time
closure of the wheel's ``Requires-Dist``, linked from this virtualenv so that no download is
needed — dev-only packages (pytest, matplotlib, …) and the checkout's own editable Lepton are
not in reach, as in a user's ``pip install``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import lepton
from lepton.api import crdgen
from lepton.cluster import tools

REPO_ROOT = Path(__file__).resolve().parents[2]
# The team's shelf beside a clone, which must not be above the test's folder; spelled in
# pieces so that test_sources' scan for it does not match this file.
SHELF = "shar" + "ed"
PIP = (sys.executable, "-m", "pip")

# What `lepton` subcommands read at run time (docs/decisions/0007-what-the-wheel-ships.md).
EXPECTED_IN_WHEEL = (
    "lepton/api/crds/lepton.dev_energybudgets.yaml",
    "lepton/api/crds/lepton.dev_leptonjobs.yaml",
    "lepton/data/README.md",
    "lepton/data/traces/openb_pod_list_default.csv",
    "lepton/data/traces/openb_pod_list_gpushare20.csv",
    "lepton/data/traces/openb_node_list_gpu_node.csv",
    "lepton/data/gpu-power/summary_power_a40.csv",
    "lepton/data/gpu-power/perseus_global_power_limit_A40.csv",
    "lepton/core/gpu_profiles/a40.yaml",
    "lepton/examples/00-energybudget.yaml",
    "lepton/examples/services/inference-deployment.yaml",
    "lepton/cluster/data/kwok-pod-stages.yaml",
    "lepton_scheduler/kube-scheduler-config.yaml",
)


@dataclass(frozen=True)
class Installed:
    sdist: Path
    wheel: Path
    build_log: str
    venv: Path
    site_packages: Path
    cwd: Path
    env: dict[str, str]

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def lepton(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = self.run(str(self.venv / "bin" / "lepton"), *args, timeout=timeout)
        assert result.returncode == 0, f"lepton {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result


def _copy_sources(destination: Path) -> None:
    """The repository's files, without what .gitignore excludes (venvs, caches, build/)."""
    ignored = [".git"]
    for line in (REPO_ROOT / ".gitignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ignored.append(line.rstrip("/"))
    shutil.copytree(REPO_ROOT, destination, ignore=shutil.ignore_patterns(*ignored), symlinks=True)


def _runtime_closure(requirements: list[str]) -> list[metadata.Distribution]:
    """The installed distributions the requirements need at run time, transitively."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        extras = requirement.extras or {""}
        if requirement.marker and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in extras
        ):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        dist = metadata.distribution(name)
        seen[name] = dist
        for child in dist.requires or []:
            parsed = Requirement(child)
            if parsed.marker is None or any(
                parsed.marker.evaluate({"extra": extra}) for extra in (requirement.extras or {""})
            ):
                todo.append(parsed)
    return list(seen.values())


def _link_dependencies(dists: list[metadata.Distribution], folder: Path) -> None:
    """Each distribution's top-level files (packages, modules, .dist-info), linked into folder."""
    folder.mkdir()
    for dist in dists:
        for file in dist.files or []:
            top = file.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            link = folder / top
            if not link.exists():
                link.symlink_to(Path(str(dist.locate_file(top))))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    source, wheels = root / "source", root / "wheels"
    _copy_sources(source)
    # As `python -m build` does: the sdist from the sources, then the wheel from the sdist,
    # so that a file the sdist leaves out is missing from the wheel too.
    sdist_build = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from setuptools import build_meta;"
            "print(build_meta.build_sdist(sys.argv[1]))",
            str(wheels),
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert sdist_build.returncode == 0, sdist_build.stdout[-4000:] + sdist_build.stderr[-4000:]
    sdist = wheels / sdist_build.stdout.split()[-1]
    shutil.rmtree(source)
    shutil.unpack_archive(sdist, root / "unpacked")
    (source,) = (root / "unpacked").iterdir()
    build = subprocess.run(
        [
            *PIP,
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-v",
            "-w",
            str(wheels),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    (wheel,) = wheels.glob("lepton-*.whl")
    shutil.rmtree(source)

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install = subprocess.run(
        [
            *PIP,
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    (site_packages,) = (venv / "lib").glob("python3.*/site-packages")
    (dist_info,) = site_packages.glob("lepton-*.dist-info")
    requires = metadata.PathDistribution(dist_info).requires or []
    _link_dependencies(_runtime_closure(requires), root / "dependencies")
    (site_packages / "lepton-test-dependencies.pth").write_text(f"{root / 'dependencies'}\n")

    cwd = root / "empty"
    cwd.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "LEPTON_DATA_DIR"}
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    build_log = sdist_build.stdout + sdist_build.stderr + build.stdout + build.stderr
    yield Installed(sdist, wheel, build_log, venv, site_packages, cwd, env)


def test_the_folder_has_no_checkout_and_no_shared_data_above_it(installed: Installed) -> None:
    folders = [installed.cwd, *installed.cwd.parents]
    assert REPO_ROOT not in folders and not installed.cwd.is_relative_to(REPO_ROOT)
    assert not [f for f in folders if (f / SHELF).exists() or (f / "pyproject.toml").exists()]
    assert list(installed.cwd.iterdir()) == []


def test_the_build_gives_no_deprecation_warning(installed: Installed) -> None:
    warnings = [
        line
        for line in installed.build_log.splitlines()
        if re.search(r"deprecat|SetuptoolsWarning|license.*(classifier|table)", line, re.I)
    ]
    assert not warnings, "\n".join(warnings)


def test_the_wheel_carries_what_the_commands_read(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    missing = [name for name in EXPECTED_IN_WHEEL if name not in names]
    assert not missing, f"{installed.wheel.name} lacks {missing}"
    licences = {n.rsplit("/", 1)[-1] for n in names if ".dist-info/licenses/" in n}
    assert licences == {"LICENSE", "NOTICE"}
    meta = (
        zipfile.ZipFile(installed.wheel)
        .read(f"lepton-{lepton.__version__}.dist-info/METADATA")
        .decode()
    )
    assert "License-Expression: Apache-2.0" in meta
    assert not [n for n in names if n.startswith(("tests/", "bench/", "deploy/", "crds/"))]


def test_the_sdist_holds_the_package_sources_and_no_part_of_the_tests(installed: Installed) -> None:
    with tarfile.open(installed.sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE"):
        assert name in names, name
    # The components' packages sit in the design card's folders in the sources.
    folders = {"lepton_operator": "operator/", "lepton_scheduler": "scheduler/"}
    shipped = [folders.get(n.split("/")[0], "") + n for n in EXPECTED_IN_WHEEL]
    assert not [n for n in shipped if n not in names], "the sdist lacks package data"
    # The tests need the whole clone (conftest, fixtures, the repository's files): an sdist
    # carries all of them or none, not setuptools' default pick of tests/test*.py.
    assert not [n for n in names if n.startswith("tests/")]


def test_lepton_comes_from_the_wheel_not_the_checkout(installed: Installed) -> None:
    where = installed.run(
        str(installed.venv / "bin" / "python"),
        "-c",
        "import lepton, lepton.api, lepton.data, lepton_scheduler;"
        "print(lepton.__file__); print(lepton.api.crd_dir()); print(lepton.data.data_dir());"
        "print(lepton_scheduler.__file__)",
    )
    assert where.returncode == 0, where.stderr
    paths = where.stdout.split()
    assert len(paths) == 4
    for path in paths:
        assert Path(path).is_relative_to(installed.site_packages), path
        assert not Path(path).resolve().is_relative_to(REPO_ROOT), path
    # Neither dev-only packages nor the checkout's editable Lepton are in reach.
    for module in ("pytest", "matplotlib"):
        found = installed.run(str(installed.venv / "bin" / "python"), "-c", f"import {module}")
        assert found.returncode != 0, f"{module} is importable from the wheel's virtualenv"


def test_help_and_version(installed: Installed) -> None:
    help_text = installed.lepton("--help").stdout
    for command in ("cluster", "crds", "demo", "operator", "scheduler", "exporter", "simulate"):
        assert f"  {command} " in help_text, command
    version = installed.lepton("--version").stdout.strip()
    assert version == f"lepton, version {lepton.__version__}"
    assert installed.wheel.name.startswith(f"lepton-{lepton.__version__}-")


def test_crds_print_from_the_package(installed: Installed) -> None:
    printed = installed.lepton("crds").stdout
    crds = [doc for doc in yaml.safe_load_all(printed) if doc]
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "energybudgets.lepton.dev",
        "leptonjobs.lepton.dev",
    ]
    expected = [yaml.safe_load(text) for _, text in sorted(crdgen.render_all().items())]
    assert crds == expected


def test_simulate_runs_the_default_trace_from_the_package(installed: Installed) -> None:
    result = installed.lepton(
        "simulate", "--pod-limit", "200", "--node-count", "20", "--seeds", "1", "--out", "out"
    )
    report = json.loads((installed.cwd / "out" / "simulation.json").read_text())
    assert report["trace"]["pods"] == 200
    assert report["trace"]["podList"] == "openb_pod_list_default.csv"
    assert report["cells"], "no policy was simulated"
    # Without the optional `charts` extra the tables are written and the chart is skipped.
    assert "no chart: matplotlib is not installed" in result.stdout
    assert sorted(p.name for p in (installed.cwd / "out").iterdir()) == [
        "simulation.json",
        "simulation.md",
    ]


def test_simulate_finds_a_shipped_trace_by_its_name(installed: Installed) -> None:
    # The wheel's other traces are reachable without knowing where site-packages is.
    installed.lepton(
        "simulate",
        "--pods",
        "openb_pod_list_gpushare20.csv",
        "--nodes",
        "openb_node_list_gpu_node.csv",
        "--pod-limit",
        "100",
        "--node-count",
        "10",
        "--seeds",
        "1",
        "--policy",
        "default-scheduler",
        "--out",
        "share",
    )
    report = json.loads((installed.cwd / "share" / "simulation.json").read_text())
    pod_list = Path(report["trace"]["podList"])
    assert pod_list.name == "openb_pod_list_gpushare20.csv"
    assert pod_list.is_relative_to(installed.site_packages), pod_list
    missing = installed.run(str(installed.venv / "bin" / "lepton"), "simulate", "--pods", "no.csv")
    assert missing.returncode != 0
    assert "openb_pod_list_gpushare20.csv" in missing.stderr, "the error names the shipped traces"


def test_the_profiles_rederive_from_the_shipped_sweeps(installed: Installed) -> None:
    derive = installed.run(
        str(installed.venv / "bin" / "python"), "-m", "lepton.core.profiles", "derive", "--check"
    )
    assert derive.returncode == 0, derive.stdout + derive.stderr


@pytest.mark.e2e
def test_cluster_up_installs_the_crds_from_the_package_then_down(
    installed: Installed, tmp_path: Path
) -> None:
    tools.build_all(("etcd", "kwok", "kubernetes"))
    state = str(tmp_path / "state")
    # The fleet: the first nodes of the shipped trace node list, found by its name.
    fleet = ("--fleet", "openb_node_list_gpu_node.csv", "--fleet-limit", "4")
    up = installed.lepton("cluster", "up", "--no-build", *fleet, "--state-dir", state, timeout=300)
    try:
        kubeconfig = up.stdout.strip().splitlines()[-1]
        crd_dir = installed.site_packages / "lepton" / "api" / "crds"
        assert f"established, from {crd_dir}" in up.stderr, up.stderr
        kubectl = installed.lepton("tools", "path", "kubectl").stdout.strip()
        crds = installed.run(
            kubectl, f"--kubeconfig={kubeconfig}", "get", "crd", "-o", "name", timeout=60
        )
        assert crds.returncode == 0, crds.stderr
        nodes = installed.run(kubectl, f"--kubeconfig={kubeconfig}", "get", "nodes", "-o", "name")
        assert len(nodes.stdout.split()) == 4, nodes.stdout + nodes.stderr
        assert sorted(crds.stdout.split()) == [
            "customresourcedefinition.apiextensions.k8s.io/energybudgets.lepton.dev",
            "customresourcedefinition.apiextensions.k8s.io/leptonjobs.lepton.dev",
        ]
    finally:
        down = installed.lepton("cluster", "down", "--state-dir", state)
    assert "stopped" in down.stdout
