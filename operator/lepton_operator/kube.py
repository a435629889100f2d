"""The operator's only door to the Kubernetes API (the ``kubernetes`` client, synchronous).

Calls are blocking; the handlers run them in a worker thread. Writes that must not lose a race
(the EnergyBudget status) carry ``metadata.resourceVersion`` so that a stale write fails with
409 Conflict instead of overwriting a newer decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lepton.core.names import API_VERSION, GROUP, LABEL_GPU_PRODUCT, LABEL_JOB_UID, VERSION
from lepton.core.profiles import get_profile

# Every ConflictError's message says this (the handlers keep expected retries quiet by it).
CONFLICT_MARK = "changed meanwhile"


class ConflictError(Exception):
    """A write carried a stale resourceVersion; read again and retry."""


def _to_dict(api_client: client.ApiClient, obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    result: dict[str, Any] = api_client.sanitize_for_serialization(obj)
    return result


class KubeApi:
    """The handful of API calls the operator makes."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self._node_models: dict[str, str | None] = {}

    # --- EnergyBudgets ---------------------------------------------------------------

    def get_budget(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "energybudgets", name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    def replace_budget_status(
        self, budget: Mapping[str, Any], status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Write a budget's status, failing with Conflict if the budget changed meanwhile."""
        meta = budget["metadata"]
        body = {
            "apiVersion": API_VERSION,
            "kind": "EnergyBudget",
            "metadata": {"name": meta["name"], "resourceVersion": meta["resourceVersion"]},
            "status": status,
        }
        try:
            result: dict[str, Any] = self.custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], "energybudgets", meta["name"], body
            )
        except ApiException as error:
            if error.status == 409:
                raise ConflictError(f"EnergyBudget {meta['name']!r} {CONFLICT_MARK}") from None
            raise
        return result

    # --- LeptonJobs --------------------------------------------------------------------

    def list_lepton_jobs(self, namespace: str) -> list[dict[str, Any]]:
        body = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "leptonjobs")
        items: list[dict[str, Any]] = body.get("items", [])
        return items

    def get_lepton_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "leptonjobs", name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    def patch_lepton_job_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        precondition: Mapping[str, Any] | None = None,
    ) -> None:
        """Merge-patch a LeptonJob's status. With ``precondition`` (the metadata the status was
        decided from) the write fails with Conflict if the object changed or was replaced by
        another of the same name meanwhile."""
        body: dict[str, Any] = {"status": dict(status)}
        if precondition is not None:
            # A LeptonJob deleted and created again under the name has another resourceVersion
            # too (the status subresource ignores a uid in the patch, not this).
            body["metadata"] = {"resourceVersion": precondition["resourceVersion"]}
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, "leptonjobs", name, body
            )
        except ApiException as error:
            if error.status == 409:
                raise ConflictError(f"LeptonJob {name!r} {CONFLICT_MARK}") from None
            if error.status != 404:  # deleted meanwhile: the next pass releases it
                raise

    # --- Jobs and pods -----------------------------------------------------------------

    def list_jobs(self, namespace: str) -> list[dict[str, Any]]:
        """Every Lepton-managed Job of the namespace (labelled with a LeptonJob's UID)."""
        jobs = self.batch.list_namespaced_job(namespace, label_selector=LABEL_JOB_UID)
        return [_to_dict(self.client, j) for j in jobs.items]

    def create_job(self, job: Mapping[str, Any]) -> bool:
        """Create a Job; False when it exists already (creation is idempotent)."""
        try:
            self.batch.create_namespaced_job(job["metadata"]["namespace"], dict(job))
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def set_job_suspended(self, namespace: str, name: str, suspended: bool) -> None:
        self.batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": suspended}})

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=label_selector)
        return [_to_dict(self.client, p) for p in pods.items]

    def node_gpu_model(self, name: str) -> str | None:
        """The GPU model of a node, from GPU feature discovery's product label (cached)."""
        if name not in self._node_models:
            try:
                node = self.core.read_node(name)
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            product = (node.metadata.labels or {}).get(LABEL_GPU_PRODUCT)
            self._node_models[name] = get_profile(product).model if product else None
        return self._node_models[name]

    def annotate_pod(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        try:
            self.core.patch_namespaced_pod(
                name, namespace, {"metadata": {"annotations": dict(annotations)}}
            )
        except ApiException as error:
            if error.status != 404:
                raise
