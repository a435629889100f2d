"""One error base: every error Lepton shows a user is a LeptonError, and the CLI maps it once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
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


def test_a_wrong_simulate_option_is_a_lepton_error_and_its_message() -> None:
    from lepton.sim.run import parse_model_map

    result = CliRunner().invoke(main, ["simulate", "--gpu-model", "G2"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: --gpu-model 'G2': write TRACE_MODEL=PROFILE_MODEL, e.g. G2=A100\n"
    )
    try:
        parse_model_map(["G2"])
    except LeptonError as error:
        assert isinstance(error, ValueError)  # callers that catch ValueError still do
    else:
        raise AssertionError("parse_model_map accepted 'G2'")


def test_a_bug_in_a_command_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a LeptonError becomes "Error: ..."; a plain ValueError from deep down is a bug."""
    import lepton.sim.run

    def broken(**_: object) -> None:
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(lepton.sim.run, "cli_run", broken)
    result = CliRunner().invoke(main, ["simulate"])
    assert isinstance(result.exception, ValueError), result.output
    assert "Error:" not in result.output


def _handlers_turning_errors_into_messages(path: Path) -> list[str]:
    """``except X: raise click.ClickException(...)`` handlers: X as written."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            raises = [n for n in ast.walk(node) if isinstance(n, ast.Raise) and n.exc is not None]
            if any("ClickException" in ast.unparse(r.exc) for r in raises):  # type: ignore[arg-type]
                found.append(ast.unparse(node.type))
    return found


def test_the_command_line_maps_errors_to_messages_in_one_place() -> None:
    assert _handlers_turning_errors_into_messages(REPO / "lepton" / "cli.py") == ["LeptonError"]
