"""Bad input gets a 4xx with a message, never a 5xx, and the server keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lepton_scheduler.app import SCHEDULER_KEY, SchedulerConfig, build_app

from lepton.core.hints import JobHints
from lepton.core.names import ANNOTATION_WORK_GPU_HOURS
from tests.support.scheduler import FLEET, Server, extender_args, fleet_cache, lepton_pod, serve

ALL = [n[0] for n in FLEET]


@pytest.fixture
def server(make_server: Any) -> Server:
    return make_server(fleet_cache())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def small_server() -> Iterator[Server]:
    """One server for all fuzzed cases, with a 4 KiB body limit."""
    app = build_app(fleet_cache(), config=SchedulerConfig(max_body_bytes=FUZZ_BODY_LIMIT))
    url, stop = serve(app)
    yield Server(url, app[SCHEDULER_KEY], app[SCHEDULER_KEY].cache, requests.Session())
    stop()


def still_serving(server: Server) -> None:
    assert server.get("/healthz").status_code == 200
    assert server.post("filter", extender_args(lepton_pod(), ALL)).status_code == 200


@pytest.mark.parametrize("verb", ["filter", "prioritize"])
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty body"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"Pod"', "must be a JSON object"),
        (b"{}", "Pod is missing"),
        (b'{"NodeNames": ["a40-0"]}', "Pod is missing"),
        (b'{"Pod": {"spec": {}}, "NodeNames": []}', "metadata.name is missing"),
        (b'{"Pod": {"metadata": {"name": "p"}}}', "neither NodeNames nor Nodes"),
        (b'{"Pod": {"metadata": {"name": "p"}}, "NodeNames": "a40-0"}', "list of node names"),
        (b'{"Pod": {"metadata": {"name": "p"}}, "NodeNames": [1]}', "strings only"),
        (b'{"Pod": {"metadata": {"name": "p"}}, "Nodes": {"items": 3}}', "v1.NodeList"),
        (b'{"Pod": {"metadata": {"name": "p"}}, "Nodes": {"items": [{}]}}', "no metadata.name"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_requests_get_400_with_a_message(
    server: Server, verb: str, body: bytes, message: str
) -> None:
    response = server.post_raw(verb, body)
    assert response.status_code == 400, response.text
    assert message in response.json()["Error"]
    still_serving(server)


@pytest.mark.parametrize("verb", ["filter", "prioritize"])
def test_unreadable_hints_get_422_naming_the_annotation(server: Server, verb: str) -> None:
    pod = lepton_pod(JobHints(job_name="train"))
    pod["metadata"]["annotations"][ANNOTATION_WORK_GPU_HOURS] = "lots"
    response = server.post(verb, extender_args(pod, ALL))
    assert response.status_code == 422
    assert ANNOTATION_WORK_GPU_HOURS in response.json()["Error"]
    still_serving(server)


@pytest.mark.parametrize("verb", ["filter", "prioritize"])
def test_payload_over_10_mb_is_refused_with_413(server: Server, verb: str) -> None:
    names = [f"node-{i:08d}-{'x' * 40}" for i in range(220_000)]  # ~11 MB
    data = json.dumps(extender_args(lepton_pod(), names)).encode()
    assert len(data) > 10 * 1024 * 1024
    response = server.post_raw(verb, data)
    assert response.status_code == 413
    assert "limit" in response.json()["Error"]
    still_serving(server)


def test_payload_just_under_10_mb_is_served(server: Server) -> None:
    names = [f"node-{i:08d}-{'x' * 40}" for i in range(180_000)]  # ~9.5 MB
    data = json.dumps(extender_args(lepton_pod(), names)).encode()
    assert len(data) < 10 * 1024 * 1024
    response = server.post_raw("filter", data)
    assert response.status_code == 200
    assert len(response.json()["NodeNames"]) == len(names)  # unknown nodes fail open


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("", 400),
        ("?pod=", 400),
        ("?pod=nonamespace", 400),
        ("?pod=a/b/c", 400),
        ("?pod=ml/never-seen", 404),
    ],
)
def test_explain_of_unknown_or_malformed_pods_is_a_4xx_with_a_message(
    server: Server, query: str, status: int
) -> None:
    response = server.get(f"/explain{query}")
    assert response.status_code == status
    assert response.json()["Error"]


def test_wrong_methods_and_paths_are_4xx(server: Server) -> None:
    assert server.get("/filter").status_code == 405
    assert server.post("nope", {}).status_code == 404


# --------------------------------------------------------------------------- fuzz

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
hint_values = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["Auto", "None", "1e308", "-1", "nan", "inf", "0", "Efficiency", "2026-01-01T00:00:00Z"]
    ),
    st.integers(-(10**6), 10**6).map(str),
    st.floats().map(repr),
)
annotation_keys = st.sampled_from(
    [
        f"lepton.dev/{k}"
        for k in (
            "energy-policy",
            "work-reference-gpu-hours",
            "gpu-models",
            "gpus-per-replica",
            "replicas",
            "deadline-time",
            "spread-across",
            "max-replicas-per-domain",
            "spares",
            "power-cap",
            "budget-pressure",
        )
    ]
)
pods = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {
                "name": st.text(min_size=1, max_size=10),
                "namespace": st.text(max_size=5) | st.none(),
                "uid": st.text(max_size=5) | st.integers(),
                "labels": st.dictionaries(
                    st.sampled_from(["lepton.dev/job-name", "lepton.dev/budget-name", "app"]),
                    st.text(max_size=8) | st.integers(),
                )
                | json_values,
                "annotations": st.dictionaries(annotation_keys, hint_values) | json_values,
            }
        ),
        "spec": json_values,
    }
)
keys = st.sampled_from(["Pod", "pod", "POD", "NodeNames", "nodenames", "Nodes", "nodes", "X"])
names = st.lists(st.sampled_from([*ALL, "ghost", ""]) | st.text(max_size=5), max_size=8)
lepton_pods = st.builds(
    lambda annotations, name: {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {"lepton.dev/job-name": "train", "lepton.dev/budget-name": "b"},
            "annotations": annotations,
        },
        "spec": {},
    },
    st.dictionaries(annotation_keys, hint_values),
    st.text(min_size=1, max_size=5),
)
payloads = st.one_of(
    st.builds(lambda p, n: {"Pod": p, "NodeNames": n}, lepton_pods, names),
    json_values,
    st.dictionaries(keys, json_values | pods | names, max_size=4),
    st.builds(lambda p, n: {"Pod": p, "NodeNames": n}, pods, names),
    st.builds(
        lambda p, n: {"Pod": p, "Nodes": {"items": [{"metadata": {"name": x}} for x in n]}},
        pods,
        names,
    ),
)


FUZZ_BODY_LIMIT = 4096  # a small limit, so that over-long bodies are cheap to send
bodies = st.one_of(
    payloads.map(lambda p: json.dumps(p).encode()),
    st.binary(max_size=64),  # not JSON at all (or by chance)
    payloads.map(lambda p: json.dumps(p).encode()[:-1]),  # cut short
    st.binary(min_size=FUZZ_BODY_LIMIT + 1, max_size=FUZZ_BODY_LIMIT + 64),  # over the limit
)


@settings(
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(verb=st.sampled_from(["filter", "prioritize", "filter-best"]), body=bodies)
def test_fuzzed_requests_never_get_a_5xx(small_server: Server, verb: str, body: bytes) -> None:
    response = small_server.post_raw(verb, body)
    assert response.status_code < 500, (body, response.text)
    event(f"{verb} {response.status_code}")
    if response.status_code == 200:
        answer = response.json()
        if verb == "prioritize":
            assert all(type(e["Score"]) is int and 0 <= e["Score"] <= 10 for e in answer)
    else:
        assert response.json()["Error"]


@pytest.mark.parametrize("verb", ["filter", "prioritize"])
def test_lone_surrogates_and_odd_names_come_back_as_valid_json(server: Server, verb: str) -> None:
    raw = json.dumps(extender_args(lepton_pod(name="p"), ["a40-0", "x"])).replace(
        '"x"', '"\\ud800 \\", \\" \\\\"'
    )
    response = server.post_raw(verb, raw.encode())
    assert response.status_code == 200
    assert "a40-0" in response.text
    json.loads(response.text)
