"""json_patch_operations: the engine's guarded status writes (a `test` of the run id, then the change)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from chaosguard.decisions.mergepatch import apply_merge_patch, json_patch_operations, merge_patch


def apply_operations(document: dict[str, Any], operations: list[dict[str, Any]], root: str) -> dict[str, Any]:
    """RFC 6902 add/remove on object members, as the API server applies them (a missing member on remove
    raises, as the API server's 422)."""
    result = copy.deepcopy(document)
    for operation in operations:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"][len(root) + 1 :].split("/")]
        target = result
        for part in parts[:-1]:
            target = target[part]
        if operation["op"] == "remove":
            del target[parts[-1]]
        else:
            target[parts[-1]] = operation["value"]
    return result


documents = st.recursive(
    st.dictionaries(st.sampled_from(["a", "b", "c/d", "e~f"]), st.integers() | st.none() | st.lists(st.integers())),
    lambda children: st.dictionaries(st.sampled_from(["a", "b", "c/d", "e~f"]), children),
    max_leaves=12,
)


def without_nulls(document: Any) -> Any:
    if isinstance(document, dict):
        return {key: without_nulls(value) for key, value in document.items() if value is not None}
    return document


@given(documents, documents)
def test_the_operations_make_the_same_change_as_the_merge_patch(before: dict[str, Any], after: dict[str, Any]) -> None:
    stored = without_nulls(before)
    expected = apply_merge_patch(stored, merge_patch(stored, after))
    assert apply_operations(stored, json_patch_operations(stored, after, "/status"), "/status") == expected


def test_condition_names_with_slashes_are_escaped() -> None:
    operations = json_patch_operations({}, {"sliSamples": {"policy/quietAlerts": [1]}}, "/status/currentRun")
    assert operations == [{"op": "add", "path": "/status/currentRun/sliSamples", "value": {"policy/quietAlerts": [1]}}]
    nested = json_patch_operations({"s": {"x": [0]}}, {"s": {"x": [0], "p/q~r": [1]}}, "/status")
    assert nested == [{"op": "add", "path": "/status/s/p~1q~0r", "value": [1]}]


def test_nothing_changed_means_no_operation() -> None:
    assert json_patch_operations({"a": {"b": 1}}, {"a": {"b": 1}}, "/status") == []
