"""The author and approver stamps: signed by the operator's key, bound to the object, the spec and the time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from chaosguard.decisions import stamps
from chaosguard.decisions.stamps import AUTHOR, EDITORS, SIGNATURE, Identity, SignatureState

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
SPEC: dict[str, Any] = {"action": "pod-kill", "duration": "15s", "target": {"mode": "one", "value": None}}
ALICE = Identity("alice", ("dev", "system:authenticated"))


def created(spec: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    """An experiment as the mutating webhook sees it on CREATE: no uid, no creationTimestamp yet."""
    meta = {"namespace": "shop", "name": "kill", **metadata}
    return {"metadata": meta, "spec": dict(spec or SPEC)}


def stamped(body: dict[str, Any], stamp: stamps.AuthorStamp, key: bytes = KEY) -> dict[str, Any]:
    annotations = stamps.experiment_annotations(key, body["metadata"], body["spec"], stamp)
    meta = {**body["metadata"], "annotations": {k: v for k, v in annotations.items() if v is not None}}
    return {**body, "metadata": meta}


def persisted(body: dict[str, Any], uid: str = "uid-1", at: datetime = NOW, name: str | None = None) -> dict[str, Any]:
    """What the API server stores: a uid, a creationTimestamp, and a name generated from generateName."""
    meta = {**body["metadata"], "uid": uid, "creationTimestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if name is not None:
        meta["name"] = name
    return {**body, "metadata": meta}


def test_a_creation_stamp_verifies_on_the_object_the_api_server_stores() -> None:
    body = persisted(stamped(created(), stamps.stamp_for_create(ALICE, NOW)))
    check = stamps.read_experiment_stamp(KEY, body)
    assert check.stamp is not None
    assert check.stamp.author == "alice"
    assert check.stamp.groups == ("dev", "system:authenticated")
    assert check.stamp.writers == {"alice"}


def test_a_creation_stamp_with_generate_name_verifies_once_the_name_is_generated() -> None:
    body = stamped(created(name=None, generateName="kill-"), stamps.stamp_for_create(ALICE, NOW))
    body["metadata"].pop("name")
    assert stamps.read_experiment_stamp(KEY, persisted(body, name="kill-x7k2p")).valid
    # but not on an object whose name does not come from that generateName
    assert not stamps.read_experiment_stamp(KEY, persisted(body, name="other")).valid


def test_a_creation_stamp_does_not_verify_on_an_object_created_much_later() -> None:
    body = stamped(created(), stamps.stamp_for_create(ALICE, NOW))
    assert stamps.read_experiment_stamp(KEY, persisted(body, at=NOW + timedelta(seconds=100))).valid
    late = stamps.read_experiment_stamp(KEY, persisted(body, at=NOW + timedelta(hours=1)))
    assert not late.valid
    assert "copied from another object" in late.problem


def test_an_update_stamp_is_bound_to_the_uid() -> None:
    stored = persisted(created(), uid="uid-1")
    body = stamped(stored, stamps.stamp_for_create(ALICE, NOW))
    assert stamps.read_experiment_stamp(KEY, body).valid
    copy = {**body, "metadata": {**body["metadata"], "uid": "uid-2"}}
    # Another object (uid-2) created within the creation skew still does not verify: bound to uid-1.
    assert not stamps.read_experiment_stamp(KEY, copy).valid


def test_editing_the_spec_without_the_webhook_voids_the_stamp() -> None:
    body = persisted(stamped(created(), stamps.stamp_for_create(ALICE, NOW)))
    edited = {**body, "spec": {**body["spec"], "duration": "1h"}}
    check = stamps.read_experiment_stamp(KEY, edited)
    assert not check.valid
    assert "changed without the admission webhook" in check.problem


def test_forged_or_altered_stamps_do_not_verify() -> None:
    body = persisted(stamped(created(), stamps.stamp_for_create(ALICE, NOW)))
    other_author = json.loads(json.dumps(body))
    other_author["metadata"]["annotations"][AUTHOR] = "mallory"
    assert not stamps.read_experiment_stamp(KEY, other_author).valid
    other_key = persisted(stamped(created(), stamps.stamp_for_create(ALICE, NOW), key=OTHER_KEY))
    assert not stamps.read_experiment_stamp(KEY, other_key).valid
    dropped_editor = persisted(stamped(created(), stamps.AuthorStamp("alice", (), ("mallory",), NOW)), uid="uid-1")
    dropped_editor["metadata"]["annotations"].pop(EDITORS)
    assert not stamps.read_experiment_stamp(KEY, dropped_editor).valid


def test_unstamped_malformed_and_keyless_reads_say_why() -> None:
    assert "no author stamp" in stamps.read_experiment_stamp(KEY, persisted(created())).problem
    body = persisted(stamped(created(), stamps.stamp_for_create(ALICE, NOW)))
    assert "no signing key" in stamps.read_experiment_stamp(None, body).problem
    body["metadata"]["annotations"][stamps.AUTHOR_GROUPS] = "not json"
    assert "malformed" in stamps.read_experiment_stamp(KEY, body).problem


def test_an_update_keeps_the_author_and_records_other_editors_of_the_spec() -> None:
    old = persisted(stamped(created(), stamps.stamp_for_create(ALICE, NOW)))
    check = stamps.read_experiment_stamp(KEY, old)
    bob = Identity("bob", ("sre-leads",))
    new_spec = {**SPEC, "duration": "30s"}
    assert stamps.stamp_for_update(check, bob, SPEC, SPEC) == check.stamp  # metadata only: no editor
    by_bob = stamps.stamp_for_update(check, bob, SPEC, new_spec)
    assert by_bob is not None
    assert (by_bob.author, by_bob.editors) == ("alice", ("bob",))
    assert by_bob.writers == {"alice", "bob"}
    by_alice = stamps.stamp_for_update(check, ALICE, SPEC, new_spec)
    assert by_alice is not None and by_alice.editors == ()
    unstamped = stamps.read_experiment_stamp(KEY, persisted(created()))
    assert stamps.stamp_for_update(unstamped, bob, SPEC, new_spec) is None


def test_restore_undoes_any_change_to_the_stamp() -> None:
    old = {AUTHOR: "alice", SIGNATURE: "v1:abc", "other": "x"}
    forged = {AUTHOR: "mallory", SIGNATURE: "v1:abc", EDITORS: "[]", "other": "y"}
    assert stamps.restore(forged, old, stamps.EXPERIMENT_STAMP) == {AUTHOR: "alice", EDITORS: None}
    assert stamps.restore(old, old, stamps.EXPERIMENT_STAMP) == {}


def test_spec_hash_is_canonical() -> None:
    one = {"b": 1, "a": {"y": [1, 2], "x": "é"}}
    two = {"a": {"x": "é", "y": [1, 2]}, "b": 1}
    assert stamps.spec_hash(one) == stamps.spec_hash(two)
    assert stamps.spec_hash(one) != stamps.spec_hash({**one, "b": 2})
    assert stamps.spec_hash(one).startswith("sha256:") and len(stamps.spec_hash(one)) == 71


def test_approval_stamps_verify_and_bind_the_spec_hash_and_the_experiment() -> None:
    spec = {"experiment": "kill", "specHash": stamps.spec_hash(SPEC), "comment": "ok"}
    stamp = stamps.ApprovalStamp("bob", ("sre-leads",), NOW, "uid-1")
    body = {"metadata": {"namespace": "shop", "name": "kill-abc"}, "spec": spec}
    body["metadata"]["annotations"] = stamps.approval_annotations(KEY, "shop", spec, stamp)
    assert stamps.read_approval_stamp(KEY, body) == (stamp, SignatureState.VALID)
    assert stamps.read_approval_stamp(None, body) == (stamp, SignatureState.UNCHECKED)
    assert stamps.read_approval_stamp(OTHER_KEY, body)[1] is SignatureState.INVALID
    other_hash = json.loads(json.dumps(body))
    other_hash["spec"]["specHash"] = stamps.spec_hash({"other": 1})
    assert stamps.read_approval_stamp(KEY, other_hash)[1] is SignatureState.INVALID
    other_namespace = json.loads(json.dumps(body))
    other_namespace["metadata"]["namespace"] = "payments"
    assert stamps.read_approval_stamp(KEY, other_namespace)[1] is SignatureState.INVALID
    assert stamps.read_approval_stamp(KEY, {"metadata": {}, "spec": spec}) == (None, SignatureState.MISSING)


def test_identity_from_userinfo() -> None:
    identity = Identity.from_userinfo(
        {"username": "bob", "uid": "u-2", "groups": ["sre-leads", "system:authenticated"], "extra": {"scope": ["a"]}}
    )
    assert identity == Identity("bob", ("sre-leads", "system:authenticated"), "u-2", {"scope": ("a",)})


def test_spec_hash_ignores_defaults_filled_in_but_not_what_the_experiment_does() -> None:
    spec = {
        "action": "pod-kill",
        "target": {"selector": {"matchLabels": {"app": "checkout"}}, "mode": "one"},
        "duration": "5m",
    }
    defaulted = {**spec, "dryRun": False, "target": {**spec["target"], "namespaces": []}}
    assert stamps.spec_hash(spec) == stamps.spec_hash(defaulted)
    assert stamps.spec_hash(spec) != stamps.spec_hash({**spec, "dryRun": True})
    assert stamps.spec_hash(spec) != stamps.spec_hash({**spec, "duration": "6m"})


def test_an_update_by_the_author_refreshes_her_groups_and_the_stamps_time() -> None:
    old = persisted(stamped(created(), stamps.stamp_for_create(ALICE, NOW)))
    check = stamps.read_experiment_stamp(KEY, old)
    later = NOW + timedelta(days=3)
    moved = Identity("alice", ("platform",))
    refreshed = stamps.stamp_for_update(check, moved, SPEC, SPEC, later)
    assert refreshed is not None
    assert (refreshed.author, refreshed.groups, refreshed.stamped_at) == ("alice", ("platform",), later)
    bob = Identity("bob", ("sre-leads",))
    assert stamps.stamp_for_update(check, bob, SPEC, SPEC, later) == check.stamp  # only the author refreshes


def test_a_stamps_groups_count_for_a_day_then_only_the_user_name_does() -> None:
    stamp = stamps.AuthorStamp("alice", ("dev",), ("bob",), NOW)
    fresh = stamps.recheck(stamp, NOW + stamps.GROUPS_TRUSTED_FOR)
    assert fresh.identities == (Identity("alice", ("dev",)), Identity("bob"))
    assert "editors are checked by user name alone" in fresh.caveat and "groups were last confirmed" not in fresh.caveat
    stale = stamps.recheck(stamp, NOW + stamps.GROUPS_TRUSTED_FOR + timedelta(seconds=1))
    assert stale.identities == (Identity("alice"), Identity("bob"))
    assert "alice's groups were last confirmed at" in stale.caveat and "more than 24h ago" in stale.caveat
    alone = stamps.recheck(stamps.AuthorStamp("alice", (), (), NOW), NOW + timedelta(days=30))
    assert alone.identities == (Identity("alice"),) and alone.caveat == ""
