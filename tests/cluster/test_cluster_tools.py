"""Building the upstream tools fails with a message that says what to do."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lepton.cluster import tools


def _fake_go(directory: Path, script: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    go = directory / "go"
    go.write_text("#!/bin/sh\n" + script)
    go.chmod(go.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEPTON_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_missing_go_says_how_to_install_it(
    empty_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "nogo").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "nogo"))
    with pytest.raises(tools.ToolBuildError, match=r"Go is not installed.*go\.dev/doc/install"):
        tools.build_group("kwok")


def test_too_old_go_names_the_version_needed(
    empty_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_go(tmp_path / "oldgo", 'echo "go version go1.19.3 linux/amd64"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'oldgo'}{os.pathsep}/usr/bin:/bin")
    with pytest.raises(tools.ToolBuildError, match=r"Go 1\.19 is too old.*1\.24 or newer"):
        tools.build_group("etcd")


def test_failed_build_names_the_command_and_the_log(
    empty_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_go(
        tmp_path / "badgo",
        'if [ "$1" = version ]; then echo "go version go1.26.0 linux/amd64"; exit 0; fi\n'
        'echo "compile: something broke" >&2; exit 3\n',
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'badgo'}{os.pathsep}/usr/bin:/bin")
    messages: list[str] = []
    with pytest.raises(tools.ToolBuildError) as raised:
        tools.build_group("kwok", progress=messages.append)
    text = str(raised.value)
    assert "exit 3" in text
    assert "go install -trimpath sigs.k8s.io/kwok/cmd/kwok@v0.7.0" in text
    log_path = empty_cache / "logs" / "kwok-v0.7.0.log"
    assert str(log_path) in text
    assert "something broke" in log_path.read_text()
    assert "something broke" in text, "the error shows the log's last lines"
    assert any("compile kwok" in m for m in messages), "progress was reported"


def test_cached_tools_are_reused_without_go(
    empty_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for tool in tools.TOOLS.values():
        if tool.group == "helm":
            tool.path.parent.mkdir(parents=True, exist_ok=True)
            tool.path.write_text("")
    (tmp_path / "nogo").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "nogo"))
    tools.build_group("helm")  # no Go needed: nothing to build
    assert "v3.18.4" in str(tools.tool_path("helm"))


def test_cache_is_keyed_by_version(empty_cache: Path) -> None:
    assert tools.TOOLS["kube-apiserver"].path == (
        empty_cache / "bin" / f"kubernetes-{tools.KUBERNETES_VERSION}" / "kube-apiserver"
    )
    assert tools.TOOLS["etcd"].path.parent.name == f"etcd-{tools.ETCD_VERSION}"


def test_kubernetes_module_replaces_every_staging_module() -> None:
    go_mod = tools._kubernetes_go_mod()
    assert "require k8s.io/kubernetes v1.33.5" in go_mod
    for module in tools.STAGING_MODULES:
        assert f"k8s.io/{module} => k8s.io/{module} v0.33.5" in go_mod
    assert len(tools.STAGING_MODULES) == 31
