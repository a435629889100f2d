"""The one base of Lepton's errors.

Every error Lepton raises for a user to read (a bad fleet file, a tool that would not
build, a cluster that did not start, an unreadable trace, NVML missing) derives from
:class:`LeptonError`: its message says what went wrong and how to fix it. The command
line maps a ``LeptonError`` to its message and exit code 1 in one place
(``lepton.cli.LeptonGroup``); anything else is a bug and keeps its traceback. Each error
also keeps the builtin base it had (``ValueError``, ``RuntimeError``), so callers that
catch those still do.
"""

from __future__ import annotations


class LeptonError(Exception):
    """An error whose message tells the user what went wrong and what to do about it."""
