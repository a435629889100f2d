"""The hardware layer: one adapter per device, shared by the exporter and the SDK.

- :mod:`lepton.hw.nvml`: the NVML calls Lepton makes (start, list GPUs, set a
  power limit), with NVML's pitfalls handled once and one ``NvmlUnavailableError``.
- :mod:`lepton.hw.rapl`: CPU energy from the Linux powercap tree, one root convention.
- :mod:`lepton.hw.fake_nvml`: a testing module, a stand-in for ``pynvml``. Only
  tests, benchmarks and demos import it (an import-linter contract keeps it out
  of every production path).

Nothing here imports ``pynvml`` eagerly: the SDK runs inside users' jobs, where
it may be missing.
"""
