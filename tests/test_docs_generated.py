"""The reference docs are generated from their sources and checked in: they cannot drift."""

from __future__ import annotations

from pathlib import Path

import click

from lepton import docgen
from lepton.cli import main as lepton
from lepton.kubectl import main as kubectl_lepton

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_checked_in_reference_docs_match_their_sources() -> None:
    assert docgen.main(["--check", "--docs", str(REPO_ROOT / "docs")]) == 0, (
        "run `python -m lepton.docgen` and commit docs/"
    )


def test_every_command_and_option_has_help() -> None:
    for root, prog in ((lepton, "lepton"), (kubectl_lepton, "kubectl lepton")):
        for path, command in docgen._commands(root, [prog]):
            assert (command.help or "").strip(), f"`{' '.join(path)}` has no help text"
            for param in command.params:
                if isinstance(param, click.Option) and param.name != "help":
                    assert param.help, f"`{' '.join(path)}` option {param.opts} has no help"
