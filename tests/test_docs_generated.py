"""The reference docs are generated from their sources and checked in: they cannot drift."""

from __future__ import annotations

import os
import subprocess
import sys
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


def test_the_reference_shows_the_help_a_command_prints() -> None:
    """A subcommand inherits ``-h`` from its group's context settings. The reference built
    each command's help without its parents' contexts, so it showed ``--help`` alone, and
    matched only until a command had run in the same process (click keeps a command's help
    option once made): this failed before, and the docs test failed after tests/test_errors.py."""
    env = dict(os.environ)
    reference = docgen.render_cli_reference()
    for path in (["cluster", "up"], ["simulate"]):
        printed = subprocess.run(
            [sys.executable, "-c", "from lepton.cli import main; main()", *path, "--help"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
        section = reference.split(f"## `lepton {' '.join(path)}`\n\n```text\n", 1)[1]
        shown = section.split("\n```", 1)[0]
        assert "-h, --help" in shown
        # the same words; the reference wraps at 100 columns, a pipe's help at click's 80
        assert "".join(shown.split()) == "".join(
            printed.replace("Usage: -c", "Usage: lepton").split()
        )
