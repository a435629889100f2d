"""The KubeSchedulerConfiguration in the repo matches what the Lepton scheduler serves."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from lepton_scheduler.app import build_app
from lepton_scheduler.config import kube_scheduler_config, render_kube_scheduler_config

from lepton.core.names import SCHEDULER_NAME


def test_the_profile_calls_the_scheduler_by_name_only_and_fails_open() -> None:
    config = kube_scheduler_config("http://127.0.0.1:8888/", "/tmp/kubeconfig")
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["kind"] == "KubeSchedulerConfiguration"
    assert config["clientConnection"]["kubeconfig"] == "/tmp/kubeconfig"
    assert [p["schedulerName"] for p in config["profiles"]] == [SCHEDULER_NAME]
    assert config["percentageOfNodesToScore"] == 100
    (entry,) = config["extenders"]
    assert entry["urlPrefix"] == "http://127.0.0.1:8888"
    assert entry["nodeCacheCapable"] is True
    assert entry["ignorable"] is True
    assert entry["weight"] >= 1
    assert "bindVerb" not in entry and "preemptVerb" not in entry


def test_the_verbs_are_routes_the_scheduler_serves() -> None:
    (entry,) = kube_scheduler_config("http://x", "k")["extenders"]
    app: web.Application = build_app()
    posts = {r.resource.canonical for r in app.router.routes() if r.method == "POST"}  # type: ignore[union-attr]
    assert f"/{entry['filterVerb']}" in posts
    assert f"/{entry['prioritizeVerb']}" in posts


def test_https_adds_tls_config() -> None:
    (plain,) = kube_scheduler_config("http://x", "k")["extenders"]
    (secure,) = kube_scheduler_config("https://x", "k", ca_file="/ca.crt")["extenders"]
    assert "tlsConfig" not in plain
    assert secure["enableHTTPS"] is True and secure["tlsConfig"] == {"caFile": "/ca.crt"}
    text: Any = render_kube_scheduler_config("https://x", "k")
    assert "insecure: true" in text and "${" not in text
