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


def _pointer(path: str, key: str) -> str:
    return f"{path}/{key.replace('~', '~0').replace('/', '~1')}"


def json_patch_operations(before: Mapping[str, Any], after: Mapping[str, Any], path: str) -> list[dict[str, Any]]:
    """The same change as `merge_patch(before, after)`, as JSON patch (RFC 6902) operations on the
    document at `path` (e.g. "/status"), so that it can follow a `test` operation and land only while
    the document still is what the writer thinks it is. Its `remove`s fail (422) on a member that is
    no longer there, which only happens when someone else wrote in between: the caller re-reads."""
    operations: list[dict[str, Any]] = []
    for key, old in before.items():
        if old is not None and after.get(key) is None:
            operations.append({"op": "remove", "path": _pointer(path, key)})
    for key, value in after.items():
        if value is None:
            continue
        old = before.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            operations.extend(json_patch_operations(old, value, _pointer(path, key)))
        elif value != old:
            operations.append({"op": "add", "path": _pointer(path, key), "value": _without_nulls(value)})
    return operations


def _without_nulls(value: Any) -> Any:
    # As a merge patch would store it: a null member means "absent".
    if isinstance(value, Mapping):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    return value
