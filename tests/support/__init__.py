"""What the tests share: one way to wait, and the builders of the objects they create.

Import it as ``tests.support`` (pytest puts the repository root on ``sys.path``, see
``pythonpath`` in pyproject.toml). Every helper module the tests share lives here, imported
by its full name: ``tests.support.scheduler`` (an in-process Lepton scheduler and the scheduler
tests' fleet and pods), ``tests.support.exporter`` (a scrape, an exporter served over HTTP),
``tests.support.prometheus`` (a real Prometheus and its queries),
``tests.support.dashboards`` (the Grafana dashboards as Grafana reads them); none is found
only because pytest put a test's own folder on the path. The one fake NVML is
:mod:`lepton.hw.fake_nvml`, where the demo and ``--backend fake`` reach it too.
"""

from __future__ import annotations

from tests.support.wait import wait_for

__all__ = ["wait_for"]
