"""The KubeSchedulerConfiguration of the ``lepton-scheduler`` profile, rendered.

The checked-in ``kube-scheduler-config.yaml`` beside this module is the one
source: the local control plane, the tests and the Helm chart all fill in its
``${SCHEDULER_URL}`` and ``${KUBECONFIG}``. This function does so, and adds the
extenders stanza's ``tlsConfig`` when the Lepton scheduler is served over HTTPS.
"""

from __future__ import annotations

import string
from importlib import resources
from typing import Any

import yaml

TEMPLATE = "kube-scheduler-config.yaml"


def template_text() -> str:
    """The checked-in template, placeholders and all."""
    return resources.files("lepton_scheduler").joinpath(TEMPLATE).read_text()


def kube_scheduler_config(
    scheduler_url: str, kubeconfig: str, ca_file: str | None = None
) -> dict[str, Any]:
    """The configuration as a dict, for ``scheduler_url`` (http or https) and a kubeconfig."""
    text = string.Template(template_text()).substitute(
        SCHEDULER_URL=scheduler_url.rstrip("/"), KUBECONFIG=kubeconfig
    )
    config: dict[str, Any] = yaml.safe_load(text)
    if scheduler_url.startswith("https://"):
        for entry in config.get("extenders", []):
            entry["enableHTTPS"] = True
            entry["tlsConfig"] = {"caFile": ca_file} if ca_file else {"insecure": True}
    return config


def render_kube_scheduler_config(
    scheduler_url: str, kubeconfig: str, ca_file: str | None = None
) -> str:
    """The same, as the YAML kube-scheduler's ``--config`` reads."""
    return yaml.safe_dump(
        kube_scheduler_config(scheduler_url, kubeconfig, ca_file), sort_keys=False
    )
