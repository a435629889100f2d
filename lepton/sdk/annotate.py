"""Publishing a job's phases on its own pod, for the operator to copy into LeptonJob status.

Inside a LeptonJob pod the training code knows its phases; the operator knows
the LeptonJob. The pod is where they meet: the SDK writes a compact JSON summary
to the pod annotation ``lepton.dev/phases`` and the operator copies it into the
LeptonJob's status, so ``kubectl describe lj`` shows the phases. The pod finds
itself through the downward API (``POD_NAME``, ``POD_NAMESPACE``) and needs RBAC
to ``patch`` its own pod. Everything here is best-effort: a missing permission
or an unreachable API server is logged once and never interrupts training.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from lepton.core.names import ANNOTATION_PHASES
from lepton.kube import api_client

log = logging.getLogger(__name__)

POD_NAME_ENV = "POD_NAME"
POD_NAMESPACE_ENV = "POD_NAMESPACE"
# Kubernetes caps all of an object's annotations together at 256 KiB
# (apimachinery's TotalAnnotationSizeLimitB); the summary stays far below.
MAX_ANNOTATION_BYTES = 64 * 1024

PodPatcher = Callable[[str, str, dict[str, Any]], object]


def pod_identity(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(namespace, name) of the pod this process runs in, or None outside a pod."""
    env = os.environ if env is None else env
    name, namespace = env.get(POD_NAME_ENV), env.get(POD_NAMESPACE_ENV)
    if not name or not namespace:
        return None
    return namespace, name


def kubernetes_pod_patcher() -> PodPatcher:
    """A patcher using the pod's service account (imports ``kubernetes`` only now)."""
    client: Any = importlib.import_module("kubernetes.client")
    core = client.CoreV1Api(api_client())

    def patch(namespace: str, name: str, body: dict[str, Any]) -> object:
        return core.patch_namespaced_pod(name=name, namespace=namespace, body=body)

    return patch


def annotation_patch(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that sets ``lepton.dev/phases`` to the compact JSON of ``summary``."""
    value = json.dumps(summary, separators=(",", ":"), sort_keys=True)
    if len(value.encode()) > MAX_ANNOTATION_BYTES:
        raise ValueError(
            f"the phases summary is {len(value.encode())} bytes, over {MAX_ANNOTATION_BYTES}: "
            "use fewer distinct phase names"
        )
    return {"metadata": {"annotations": {ANNOTATION_PHASES: value}}}


class PodAnnotator:
    """Writes the phases summary to this pod, at most once per interval, never raising."""

    def __init__(
        self,
        identity: tuple[str, str] | None,
        patcher_factory: Callable[[], PodPatcher] = kubernetes_pod_patcher,
        min_interval_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identity = identity
        self._patcher_factory = patcher_factory
        self._patcher: PodPatcher | None = None
        self._min_interval_seconds = min_interval_seconds
        self._clock = clock
        self._last_write: float | None = None
        self._disabled_reason: str | None = None if identity else "not running in a pod"
        self.writes = 0

    @property
    def enabled(self) -> bool:
        return self._disabled_reason is None

    def publish(self, summary: Mapping[str, Any], *, force: bool = False) -> bool:
        """Patch the annotation if enabled and due (or forced); True when it was written."""
        if self._disabled_reason is not None or self.identity is None:
            return False
        now = self._clock()
        due = self._last_write is None or now - self._last_write >= self._min_interval_seconds
        if not (due or force):
            return False
        try:
            if self._patcher is None:
                self._patcher = self._patcher_factory()
            namespace, name = self.identity
            self._patcher(namespace, name, annotation_patch(summary))
        except Exception as error:  # best-effort by contract: training goes on
            self._disabled_reason = str(error)
            log.warning(
                "phases not published on pod %s/%s (%s); grant the pod's service account "
                "'patch' on pods to show phases in the LeptonJob status",
                *self.identity,
                error,
            )
            return False
        self._last_write = now
        self.writes += 1
        return True
