"""The Kubernetes API's times (RFC 3339, ``Z`` for UTC), read and written in one place."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time from the API, or None when there is none; ValueError when malformed."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_time(value: datetime | None) -> str | None:
    """An RFC 3339 time as the API writes it (UTC, seconds, 'Z')."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
