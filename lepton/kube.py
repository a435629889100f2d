"""The one Kubernetes client factory: the operator, the Lepton scheduler, the exporter and
``kubectl lepton`` all get their ``ApiClient`` here, under one set of rules.

1. ``kubeconfig`` when given (the components' ``--kubeconfig``, which reads ``$KUBECONFIG``);
2. else the in-cluster service account, when running in a pod;
3. else ``$KUBECONFIG``, then ``~/.kube/config`` (the Kubernetes client's own defaults).

Nothing found is a :class:`KubeConfigError` that says how to point Lepton at a cluster.
The pool size is a setting: the default urllib3 pool of 4 would serialise the operator's
parallel admission writes. ``kubernetes`` is imported only when a client is made, so the
SDK and the command line stay cheap to import.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from lepton.core.errors import LeptonError

# Connections per client: enough for the operator's worker threads.
DEFAULT_POOL_SIZE = 32


class KubeConfigError(LeptonError):
    """No Kubernetes configuration was found; the message says how to give one."""


def api_client(
    kubeconfig: str | None = None,
    *,
    context: str | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
) -> Any:
    """A ``kubernetes.client.ApiClient`` by the rules above."""
    client: Any = importlib.import_module("kubernetes.client")
    config: Any = importlib.import_module("kubernetes.config")
    configuration = client.Configuration()
    try:
        if kubeconfig:
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                # read now, not when the client library was imported
                default = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
                config.load_kube_config(
                    config_file=default, context=context, client_configuration=configuration
                )
    except (config.ConfigException, OSError) as error:
        raise KubeConfigError(
            f"no Kubernetes configuration ({error}): set KUBECONFIG or pass --kubeconfig, "
            "or run in a pod with a service account"
        ) from None
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)
