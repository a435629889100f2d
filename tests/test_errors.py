"""One error base: every error Lepton shows a user is a LeptonError, and the CLI maps it once."""

from __future__ import annotations

import ast
from pathlib import Path

from click.testing import CliRunner

from lepton.cli import main
from lepton.cluster.fleet import FleetError
from lepton.core.errors import LeptonError
from tests.test_one_of_each import REPO, package_files

# Raised and caught inside one module as control flow, never shown to a user.
INTERNAL = {"ConflictError", "_DeviceLostError"}


def test_a_lepton_error_is_the_commands_message_and_exit_code_1(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("nodeGroups: [\n")  # not YAML: load_fleet raises FleetError
    args = ["cluster", "up", "--state-dir", str(tmp_path / "s"), "--fleet", str(fleet)]
    result = CliRunner().invoke(main, [*args, "--no-build"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {fleet}: not valid YAML")
    assert isinstance(FleetError("x"), LeptonError) and isinstance(FleetError("x"), ValueError)


def test_every_error_class_in_the_packages_derives_from_lepton_error() -> None:
    bases: dict[str, tuple[str, set[str]]] = {}
    for path in package_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                names = {b.id for b in node.bases if isinstance(b, ast.Name)}
                if any(b.endswith(("Error", "Exception")) for b in names):  # an exception
                    bases[node.name] = (path.relative_to(REPO).as_posix(), names)
    lepton = {"LeptonError"}
    while grown := {n for n, (_, b) in bases.items() if b & lepton} - lepton:
        lepton |= grown
    loose = [f"{where}: {n}" for n, (where, _) in bases.items() if n not in lepton | INTERNAL]
    assert not loose, f"derive these from lepton.core.errors.LeptonError: {loose}"


def test_the_exporter_checks_its_backends_in_one_place_and_the_cli_shows_it() -> None:
    # build_exporter refuses the backend before anything starts; the CLI has no check of its own.
    result = CliRunner().invoke(main, ["exporter", "--backend", "dcgm", "--node-name", "n"])
    assert result.exit_code == 1
    assert result.output == "Error: unknown backend 'dcgm': choose from nvml, rapl, model\n"
