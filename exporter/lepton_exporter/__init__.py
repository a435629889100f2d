"""Lepton's power exporter: measured (NVML, RAPL) or modelled energy per node, GPU and pod.

Entry point: ``lepton_exporter.main.run`` (``lepton exporter``); metrics are listed
in ``docs/metrics.md``.
"""
