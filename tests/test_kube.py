"""The one Kubernetes client factory: which configuration it takes, and when it gives up."""

from __future__ import annotations

from pathlib import Path

import pytest

from lepton.kube import DEFAULT_POOL_SIZE, KubeConfigError, api_client


def kubeconfig(path: Path, server: str) -> str:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: k, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    return str(path)


@pytest.fixture(autouse=True)
def outside_a_pod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No service-account environment and no ~/.kube/config of the machine running the tests.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_a_given_kubeconfig_wins_and_the_pool_size_is_a_setting(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "given", "https://10.0.0.1:6443")
    api = api_client(path)
    assert api.configuration.host == "https://10.0.0.1:6443"
    assert api.configuration.connection_pool_maxsize == DEFAULT_POOL_SIZE
    assert api_client(path, pool_size=4).configuration.connection_pool_maxsize == 4


def test_outside_a_pod_it_falls_back_to_the_kubeconfig_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", kubeconfig(tmp_path / "env", "https://10.0.0.2:6443"))
    assert api_client().configuration.host == "https://10.0.0.2:6443"


def test_no_configuration_anywhere_is_a_lepton_error_saying_what_to_set() -> None:
    with pytest.raises(KubeConfigError, match="set KUBECONFIG or pass --kubeconfig"):
        api_client()
