"""Watch streams read by the Lepton scheduler's informers: one JSON event a line, however
chunked."""

from __future__ import annotations

import json

import pytest
from lepton_scheduler.watch import watch_events


def _event(kind: str, name: str, version: str) -> dict[str, object]:
    return {
        "type": kind,
        "object": {"metadata": {"name": name, "resourceVersion": version, "note": "é\nx"}},
    }


EVENTS = [_event("ADDED", f"pod-{i}", str(100 + i)) for i in range(5)] + [
    {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "200"}}},
    {"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old"}},
]
STREAM = b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in EVENTS)


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(STREAM)])
def test_events_are_parsed_whatever_the_chunks(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert list(watch_events(chunks)) == EVENTS


def test_blank_lines_are_skipped_and_a_last_line_without_newline_is_read() -> None:
    body = b"\n\n" + STREAM.replace(b"\n", b"\n\r\n") + json.dumps(EVENTS[0]).encode()
    assert list(watch_events([body])) == [*EVENTS, EVENTS[0]]


def test_a_line_that_is_not_json_raises() -> None:
    with pytest.raises(ValueError):
        list(watch_events([STREAM[:20] + b"\n"]))
