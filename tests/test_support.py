"""The test kit's one ``wait_for``: it returns, fails with what it waited for, and retries."""

from __future__ import annotations

import itertools

import pytest

from tests.support import wait_for


def test_wait_for_returns_once_the_condition_holds() -> None:
    calls = itertools.count()
    wait_for(lambda: next(calls) >= 2, 5, "the third call", interval=0.01)
    assert next(calls) == 3


def test_wait_for_fails_naming_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match="timed out after 0 s waiting for the moon"):
        wait_for(lambda: False, 0.05, "the moon", interval=0.01)


def test_wait_for_polls_again_on_an_ignored_error_and_raises_any_other() -> None:
    calls = itertools.count()

    def flaky() -> bool:
        if next(calls) < 2:
            raise ConnectionRefusedError
        return True

    wait_for(flaky, 5, "a server", ignoring=(OSError,), interval=0.01)
    with pytest.raises(ZeroDivisionError):
        wait_for(lambda: 1 / 0, 5, "never", ignoring=(OSError,), interval=0.01)


def test_the_pod_builder_writes_the_one_default_gpu_pod() -> None:
    from tests.support.builders import gpu_pod

    assert gpu_pod("p") == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ]
        },
    }
    pod = gpu_pod("q", gpus=2, node="n", requests=True)
    assert pod["spec"]["nodeName"] == "n"
    assert pod["spec"]["containers"][0]["resources"] == {
        "requests": {"nvidia.com/gpu": "2"},
        "limits": {"nvidia.com/gpu": "2"},
    }


def test_every_shared_test_module_lives_in_the_kit() -> None:
    """A helper beside the tests imports only because pytest puts that folder on sys.path."""
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    strays = [
        path.relative_to(tests).as_posix()
        for path in tests.rglob("*.py")
        if not path.name.startswith("test_")
        and path.name != "conftest.py"
        and tests / "support" not in path.parents
    ]
    assert not strays, f"move these into tests/support and import them as tests.support.…: {strays}"


def test_the_tests_poll_only_through_wait_for() -> None:
    """A deadline loop of a test's own is a second ``wait_for`` with its own sleeps and failure."""
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    loops = [
        path.relative_to(tests).as_posix()
        for path in tests.rglob("*.py")
        if path not in {tests / "support" / "wait.py", Path(__file__).resolve()}
        and "time.monotonic() +" in path.read_text()
    ]
    assert not loops, f"poll with tests.support.wait_for: {loops}"
