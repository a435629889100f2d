"""The local cluster's processes: start one detached, tell whether it runs, stop it.

Everything is read from ``/proc`` and done by PID, so that a process started by
``lepton cluster up`` is found and stopped by ``lepton cluster down`` in another
Python process, and a later process that reuses the PID is never mistaken for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# How long a SIGTERMed process may take to exit before it is SIGKILLed.
STOP_GRACE_SECONDS = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Counted after the parenthesised command name, which may hold spaces.
    return stat.rsplit(")", 1)[1].split()


def _start_ticks(fields: list[str]) -> int:
    return int(fields[19])  # field 22: start time in clock ticks since boot


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks, to tell it from a later process with its PID."""
    fields = _stat_fields(pid)
    return None if fields is None else _start_ticks(fields)


def pid_running(pid: int) -> bool:
    """A process with this PID exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process has used, or None when there is no such process."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14 and 15


def rss_bytes(pid: int | str = "self") -> int:
    """A process's resident memory (``/proc/PID/status`` VmRSS), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Process:
    """One component the cluster started."""

    name: str
    pid: int
    start_ticks: int | None
    port: int
    health_url: str
    log_path: str

    def alive(self) -> bool:
        # One read of /proc: the process may exit between two.
        fields = _stat_fields(self.pid)
        return fields is not None and _start_ticks(fields) == self.start_ticks and fields[0] != "Z"


def spawn(
    name: str,
    argv: list[str],
    port: int,
    health_url: str,
    log_path: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
) -> Process:
    """Start ``argv`` in a session of its own, output appended to ``log_path``.

    The process outlives this call (and, for ``lepton cluster up``, this Python process):
    it is stopped by PID with :func:`stop`.
    """
    with log_path.open("ab") as log_file:
        popen = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
            env=env,
        )
    # The Popen object is dropped on purpose; marking it done keeps it from warning.
    popen.returncode = 0
    return Process(
        name=name,
        pid=popen.pid,
        start_ticks=process_start_ticks(popen.pid),
        port=port,
        health_url=health_url,
        log_path=str(log_path),
    )


def stop(processes: Sequence[Process], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM each process's group, then SIGKILL what still runs after ``grace`` seconds."""
    for proc in processes:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in processes:
        while proc.alive() and time.monotonic() < deadline:
            reap(proc.pid)
            time.sleep(0.05)
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            while proc.alive():
                reap(proc.pid)
                time.sleep(0.05)
        reap(proc.pid)


def reap(pid: int) -> None:
    """Wait for ``pid`` if this Python process started it (else it stays a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` of a process's log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
