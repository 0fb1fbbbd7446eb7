"""Kubernetes-style durations (`200ms`, `30s`, `5m`, `1h30m`) as people write them in YAML.

The API keeps durations as strings so that `kubectl get -o yaml` shows what the author wrote;
code converts them with `to_seconds` at the point of use. The same regular expression is put
into the CRD so that the API server refuses a malformed duration before the operator sees it.
"""

from __future__ import annotations

import re
from datetime import timedelta

DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_FULL = re.compile(DURATION_PATTERN)


class DurationError(ValueError):
    """A duration string that does not follow the `<number><unit>` form."""


def to_seconds(text: str) -> float:
    """Converts `1h30m` to 5400.0; raises DurationError naming the accepted form."""
    if not isinstance(text, str) or not _FULL.match(text):
        raise DurationError(
            f"{text!r} is not a duration: write a number followed by ms, s, m or h, "
            "for example 500ms, 30s, 5m or 1h30m (0 means zero)"
        )
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))


def to_timedelta(text: str) -> timedelta:
    return timedelta(seconds=to_seconds(text))


def format_seconds(seconds: float) -> str:
    """Formats seconds back into the shortest readable duration, e.g. 5400 -> `1h30m`."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0"
