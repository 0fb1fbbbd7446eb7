"""The status writer's merge patches: applying the patch always gives the new status, and it is small."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chaosguard.decisions.mergepatch import apply_merge_patch, merge_patch

scalars = st.one_of(st.integers(), st.text(max_size=3), st.booleans(), st.floats(allow_nan=False))
documents = st.recursive(
    scalars | st.lists(scalars, max_size=3),
    lambda children: st.dictionaries(st.sampled_from("abcde"), children, max_size=4),
    max_leaves=12,
)


def without_nulls(value: Any) -> Any:
    """What the API server keeps of a document: merge patches cannot store a null."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    return value


@settings(deadline=None)  # a loaded CI machine must not turn a slow example into a failure
@given(st.dictionaries(st.sampled_from("abcde"), documents), st.dictionaries(st.sampled_from("abcde"), documents))
def test_applying_the_patch_gives_the_new_document(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert apply_merge_patch(without_nulls(before), merge_patch(before, after)) == without_nulls(after)


def test_only_what_changed_is_sent() -> None:
    samples = [{"at": "t1", "value": "0.1"}]
    before = {"phase": "Running", "currentRun": {"id": "r1", "kills": [{"name": "a"}], "sliSamples": {"e": samples}}}
    after = {
        "phase": "Running",
        "currentRun": {"id": "r1", "kills": [{"name": "a"}], "sliSamples": {"e": [*samples, {"at": "t2"}]}},
    }
    assert merge_patch(before, after) == {"currentRun": {"sliSamples": {"e": [*samples, {"at": "t2"}]}}}
    assert merge_patch(after, after) == {}


def test_a_field_that_goes_away_is_deleted() -> None:
    assert merge_patch({"currentRun": {"id": "r1"}, "phase": "Running"}, {"phase": "Completed"}) == {
        "currentRun": None,
        "phase": "Completed",
    }
    assert merge_patch({"currentRun": {"id": "r1"}}, {"currentRun": None}) == {"currentRun": None}
    assert merge_patch({"message": None}, {}) == {}
