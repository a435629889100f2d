"""The Dockerfile is hadolint-clean and keeps the promises the chart relies on.

The chart runs every component from one image as a non-root user with a read-only root
filesystem; these checks read the Dockerfile itself (the real build is
``test_deploy_image.py``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split into stages."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    result: list[list[str]] = []
    for instruction in instructions:
        if instruction.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_would_catch_a_bad_instruction(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\n")
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_base_is_a_pinned_slim_python() -> None:
    match = re.search(r"^ARG BASE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "the base image is the BASE build argument"
    assert re.fullmatch(r"docker\.io/library/python:3\.11\.\d+-slim-bookworm", match.group(1))


def test_final_stage_is_non_root_with_the_lepton_entrypoint_and_no_build_tools() -> None:
    all_stages = stages()
    assert len(all_stages) >= 3, "multi-stage: base, build, final"
    final = all_stages[-1]
    assert final[0].startswith("FROM base AS final")
    users = [i.split()[1] for i in final if i.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["/opt/venv/bin/lepton"]' in final
    body = " ".join(final)
    for tool in ("pip install", "apt-get", "gcc", "build-essential", "make "):
        assert tool not in body, f"{tool!r} in the final stage"
    copies = [i for i in final if i.startswith("COPY")]
    assert copies == ["COPY --from=build /opt/venv /opt/venv"]
    build = next(s for s in all_stages if s[0].startswith("FROM base AS build"))
    assert any("pip uninstall --yes pip setuptools" in i for i in build)
