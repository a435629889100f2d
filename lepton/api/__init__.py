"""Lepton's Kubernetes API: the pydantic models from which the CRDs in ``crds/`` are generated.

The models are the single source of the schema: ``python -m lepton.api.crdgen`` writes the
CRDs and a test fails when the checked-in copies drift from them.
"""
