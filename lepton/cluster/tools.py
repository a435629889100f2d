"""Build the upstream Kubernetes tools the local control plane runs, from their Go modules.

Tests and the demo run real etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kubectl, kwok and helm. None of them is shipped as a package
we can install here, so we build each from its published Go module at a pinned
version, once, into a cache keyed by version outside the checkout
(``$LEPTON_CACHE_DIR``, default ``~/.cache/lepton``), and reuse it.

k8s.io/kubernetes requires its staging modules at ``v0.0.0``; a small main
module of our own requires it and replaces every staging module with its
published ``v0.<minor>.<patch>`` tag, as kubernetes-sigs/scheduler-plugins does.
etcd's server module has relative replaces, so it too is built from a small
main module. kwok and helm install directly.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lepton.core.errors import LeptonError

log = logging.getLogger(__name__)

KUBERNETES_VERSION = "v1.33.5"
ETCD_VERSION = "v3.5.21"
KWOK_VERSION = "v0.7.0"
HELM_VERSION = "v3.18.4"
# kwok v0.7 and Kubernetes 1.33 declare go 1.24 in their go.mod files.
MINIMUM_GO = (1, 24)

# The staging modules k8s.io/kubernetes v1.33 requires at v0.0.0
# (the same list as scheduler-plugins' go.mod for v0.33).
STAGING_MODULES = [
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-cli-plugin",
    "sample-controller",
]

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


class ToolBuildError(LeptonError, RuntimeError):
    """A tool could not be built; the message names the command and its log."""


def cache_dir() -> Path:
    """Where built tools and their build logs live, keyed by version."""
    return Path(os.environ.get("LEPTON_CACHE_DIR", Path.home() / ".cache" / "lepton"))


@dataclass(frozen=True)
class Tool:
    """One upstream program at a pinned version."""

    name: str
    version: str
    group: str  # the build that produces it (several Kubernetes binaries build together)

    @property
    def path(self) -> Path:
        return cache_dir() / "bin" / f"{self.group}-{self.version}" / self.name


TOOLS: dict[str, Tool] = {
    **{n: Tool(n, KUBERNETES_VERSION, "kubernetes") for n in KUBERNETES_COMMANDS},
    "etcd": Tool("etcd", ETCD_VERSION, "etcd"),
    "kwok": Tool("kwok", KWOK_VERSION, "kwok"),
    "helm": Tool("helm", HELM_VERSION, "helm"),
}


def tool_path(name: str) -> Path:
    """The cached binary for ``name``; raises ToolBuildError telling how to build it."""
    path = TOOLS[name].path
    if not path.exists():
        raise ToolBuildError(
            f"{name} {TOOLS[name].version} is not built yet: run `lepton tools build`"
        )
    return path


def go_version() -> tuple[int, int]:
    """The installed Go toolchain's (major, minor); ToolBuildError when Go is missing."""
    go = shutil.which("go")
    if go is None:
        raise ToolBuildError(
            "Go is not installed or not on PATH: install Go "
            f"{MINIMUM_GO[0]}.{MINIMUM_GO[1]} or newer (https://go.dev/doc/install) to build "
            "the local control plane's binaries"
        )
    out = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"go(\d+)\.(\d+)", out)
    if not match:
        raise ToolBuildError(f"cannot read the Go version from `go version`: {out.strip()!r}")
    return int(match[1]), int(match[2])


def check_go() -> None:
    """Fail with the fix when Go is missing or older than the modules need."""
    found = go_version()
    if found < MINIMUM_GO:
        raise ToolBuildError(
            f"Go {found[0]}.{found[1]} is too old: the pinned modules need Go "
            f"{MINIMUM_GO[0]}.{MINIMUM_GO[1]} or newer; upgrade Go and retry"
        )


def _kubernetes_go_mod() -> str:
    staging_minor = "v0." + KUBERNETES_VERSION.removeprefix("v1.")
    replaces = "\n".join(f"\tk8s.io/{m} => k8s.io/{m} {staging_minor}" for m in STAGING_MODULES)
    return (
        "module lepton.local/kubetools\n\ngo 1.24\n\n"
        f"require k8s.io/kubernetes {KUBERNETES_VERSION}\n\nreplace (\n{replaces}\n)\n"
    )


def _tools_go(imports: list[str]) -> str:
    # The usual tools.go pattern: blank imports keep the commands in `go mod tidy`.
    lines = "\n".join(f'\t_ "{i}"' for i in imports)
    return f"//go:build tools\n\npackage tools\n\nimport (\n{lines}\n)\n"


def _kubernetes_ldflags() -> str:
    major, minor = KUBERNETES_VERSION.removeprefix("v").split(".")[:2]
    flags = [
        "-s",
        "-w",
        f"-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}",
        f"-X k8s.io/component-base/version.gitMajor={major}",
        f"-X k8s.io/component-base/version.gitMinor={minor}",
        "-X k8s.io/component-base/version.gitTreeState=clean",
        f"-X k8s.io/client-go/pkg/version.gitVersion={KUBERNETES_VERSION}",
    ]
    return " ".join(flags)


def _helm_ldflags() -> str:
    major, minor = KUBERNETES_VERSION.removeprefix("v").split(".")[:2]
    # helm's Makefile sets these from its client-go; without them `helm template`
    # assumes Kubernetes 1.20.
    return " ".join(
        [
            "-s",
            "-w",
            f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor={major}",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={minor}",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor={major}",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}",
        ]
    )


@dataclass(frozen=True)
class _Step:
    what: str
    argv: list[str]
    cwd: Path


def _plan(group: str) -> tuple[Path, dict[str, str], list[_Step]]:
    """The module dir, the files to write in it, and the commands that build ``group``."""
    version = {t.group: t.version for t in TOOLS.values()}[group]
    src = cache_dir() / "src" / f"{group}-{version}"
    out = cache_dir() / "bin" / f"{group}-{version}"
    if group == "kubernetes":
        files = {
            "go.mod": _kubernetes_go_mod(),
            "tools.go": _tools_go([f"k8s.io/kubernetes/cmd/{c}" for c in KUBERNETES_COMMANDS]),
        }
        build = [
            "go",
            "build",
            "-trimpath",
            "-ldflags",
            _kubernetes_ldflags(),
            "-o",
            f"{out}/",
            *[f"k8s.io/kubernetes/cmd/{c}" for c in KUBERNETES_COMMANDS],
        ]
        steps = [
            _Step("resolve modules", ["go", "mod", "tidy"], src),
            _Step(f"compile {', '.join(KUBERNETES_COMMANDS)}", build, src),
        ]
    elif group == "etcd":
        files = {
            "go.mod": f"module lepton.local/etcd\n\ngo 1.24\n\n"
            f"require go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n",
            "tools.go": _tools_go(["go.etcd.io/etcd/server/v3"]),
        }
        build = ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd")]
        steps = [
            _Step("resolve modules", ["go", "mod", "tidy"], src),
            _Step("compile etcd", [*build, "go.etcd.io/etcd/server/v3"], src),
        ]
    elif group == "kwok":
        files = {}
        steps = [
            _Step(
                "compile kwok",
                ["go", "install", "-trimpath", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"],
                src,
            )
        ]
    elif group == "helm":
        files = {}
        steps = [
            _Step(
                "compile helm",
                [
                    "go",
                    "install",
                    "-trimpath",
                    "-ldflags",
                    _helm_ldflags(),
                    f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}",
                ],
                src,
            )
        ]
    else:  # pragma: no cover - guarded by TOOLS
        raise KeyError(group)
    return src, files, steps


ProgressFn = Callable[[str], None]


def _default_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_group(group: str, progress: ProgressFn = _default_progress) -> None:
    """Build one group of tools into the cache, unless every binary is already there."""
    wanted = [t for t in TOOLS.values() if t.group == group]
    if all(t.path.exists() for t in wanted):
        return
    check_go()
    lock_path = cache_dir() / "locks" / f"{group}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        # Two builds of one group at once (two terminals, or CI and a demo) would
        # overwrite each other's binaries: the second waits, then finds them built.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all(t.path.exists() for t in wanted):
            _build(group, wanted, progress)


def _build(group: str, wanted: list[Tool], progress: ProgressFn) -> None:
    src, files, steps = _plan(group)
    out = wanted[0].path.parent
    src.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (src / name).write_text(text)
    log_path = cache_dir() / "logs" / f"{group}-{wanted[0].version}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOBIN": str(out), "GOFLAGS": "-buildvcs=false"}
    with log_path.open("a") as log_file:
        for step in steps:
            started = time.monotonic()
            progress(f"[build] {group} {wanted[0].version}: {step.what} … (log: {log_path})")
            log_file.write(f"\n$ (cd {step.cwd} && {' '.join(step.argv)})\n")
            log_file.flush()
            proc = subprocess.Popen(
                step.argv, cwd=step.cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
            # Go prints nothing while it compiles: say we are alive every 30 s.
            while True:
                try:
                    rc = proc.wait(timeout=30)
                    break
                except subprocess.TimeoutExpired:
                    elapsed = time.monotonic() - started
                    progress(f"[build] {group}: {step.what} still running ({elapsed:.0f} s)")
            if rc != 0:
                tail = log_path.read_text().splitlines()[-15:]
                raise ToolBuildError(
                    f"building {group} {wanted[0].version} failed (exit {rc}) in step "
                    f"'{step.what}': `{' '.join(step.argv)}` in {step.cwd}\n"
                    f"full log: {log_path}\nlast lines:\n" + "\n".join(tail)
                )
            progress(f"[build] {group}: {step.what} done in {time.monotonic() - started:.0f} s")
    missing = [str(t.path) for t in wanted if not t.path.exists()]
    if missing:
        raise ToolBuildError(f"build of {group} finished but left no {missing}; see {log_path}")


def build_all(
    groups: tuple[str, ...] = ("etcd", "kwok", "kubernetes", "helm"),
    progress: ProgressFn = _default_progress,
) -> None:
    """Build every tool the local control plane needs (a no-op when all are cached)."""
    for group in groups:
        build_group(group, progress)
