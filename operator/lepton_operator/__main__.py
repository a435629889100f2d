"""``python -m lepton_operator`` is ``lepton operator``: one command line, two ways to reach it."""

from __future__ import annotations

import sys


def main() -> None:
    from lepton.cli import main as lepton

    lepton(["operator", *sys.argv[1:]], prog_name="python -m lepton_operator")


if __name__ == "__main__":
    main()
