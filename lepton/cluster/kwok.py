"""kwok's pod stages for the local cluster: how a fake node's pods run and complete.

The stages come from ``data/kwok-pod-stages.yaml``. A Job pod completes
:data:`JOB_POD_RUN_SECONDS` after it starts running, unless the cluster holds LeptonJob
pods for the work simulator (:mod:`lepton.cluster.workload`), which releases each one
when its work is done on the GPU it got.
"""

from __future__ import annotations

from importlib import resources

import yaml

from lepton.core.names import LABEL_JOB_NAME

# A Job pod on kwok runs this long unless held for the work simulator: long enough for the
# Job's start and completion times (whole seconds) to differ, so run time is never zero.
JOB_POD_RUN_SECONDS = 2.0
_HELD_STAGE = "lepton-pod-complete-when-released"
_LEPTON_POD_KEY = f'.metadata.labels["{LABEL_JOB_NAME}"]'


def pod_stages(hold_lepton_pods: bool) -> str:
    """kwok's pod stages for this cluster, from ``data/kwok-pod-stages.yaml``.

    Without holding, LeptonJob pods complete like any Job pod (no work simulator needed).
    """
    text = resources.files("lepton.cluster").joinpath("data/kwok-pod-stages.yaml").read_text()
    stages = [s for s in yaml.safe_load_all(text) if s]
    if not hold_lepton_pods:
        stages = [s for s in stages if s["metadata"]["name"] != _HELD_STAGE]
    for stage in stages:
        if stage["metadata"]["name"] != "pod-complete":
            continue
        stage["spec"]["delay"] = {"durationMilliseconds": int(JOB_POD_RUN_SECONDS * 1000)}
        if not hold_lepton_pods:
            selector = stage["spec"]["selector"]
            selector["matchExpressions"] = [
                e for e in selector["matchExpressions"] if e["key"] != _LEPTON_POD_KEY
            ]
    return yaml.safe_dump_all(stages, sort_keys=False)
