"""JSON merge patches (RFC 7386), pure: the smallest patch that turns one document into another.

The engine keeps what it last wrote to an experiment's status and sends only what changed, so a
guard tick that adds one SLI sample sends that condition's samples, not the whole status.
Objects are diffed key by key; lists and scalars are replaced whole (merge patches cannot do
better); a key that disappears becomes null, which deletes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns `before` into `after` (empty when they are equal)."""
    patch: dict[str, Any] = {key: None for key in before if key not in after and before[key] is not None}
    for key, value in after.items():
        if key not in before:
            if value is not None:
                patch[key] = value
            continue
        old = before[key]
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif value != old:
            patch[key] = value
    return patch


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386's application of `patch` to `target` (as the API server does), for checks and tests."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result
