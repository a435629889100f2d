"""The KubeSchedulerConfiguration in the repo matches what the extender serves."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from lepton_scheduler.app import build_app
from lepton_scheduler.config import kube_scheduler_config, render_kube_scheduler_config

from lepton.core.names import SCHEDULER_NAME


def test_the_profile_calls_the_extender_by_name_only_and_fails_open() -> None:
    config = kube_scheduler_config("http://127.0.0.1:8888/", "/tmp/kubeconfig")
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["kind"] == "KubeSchedulerConfiguration"
    assert config["clientConnection"]["kubeconfig"] == "/tmp/kubeconfig"
    assert [p["schedulerName"] for p in config["profiles"]] == [SCHEDULER_NAME]
    assert config["percentageOfNodesToScore"] == 100
    (extender,) = config["extenders"]
    assert extender["urlPrefix"] == "http://127.0.0.1:8888"
    assert extender["nodeCacheCapable"] is True
    assert extender["ignorable"] is True
    assert extender["weight"] >= 1
    assert "bindVerb" not in extender and "preemptVerb" not in extender


def test_the_verbs_are_routes_the_extender_serves() -> None:
    (extender,) = kube_scheduler_config("http://x", "k")["extenders"]
    app: web.Application = build_app()
    posts = {r.resource.canonical for r in app.router.routes() if r.method == "POST"}  # type: ignore[union-attr]
    assert f"/{extender['filterVerb']}" in posts
    assert f"/{extender['prioritizeVerb']}" in posts


def test_https_adds_tls_config() -> None:
    (plain,) = kube_scheduler_config("http://x", "k")["extenders"]
    (secure,) = kube_scheduler_config("https://x", "k", ca_file="/ca.crt")["extenders"]
    assert "tlsConfig" not in plain
    assert secure["enableHTTPS"] is True and secure["tlsConfig"] == {"caFile": "/ca.crt"}
    text: Any = render_kube_scheduler_config("https://x", "k")
    assert "insecure: true" in text and "${" not in text
