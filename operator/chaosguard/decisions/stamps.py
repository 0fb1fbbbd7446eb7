"""Who wrote an experiment and who approved it, stamped by the admission webhook and signed by the operator.

The webhook copies the identity the API server authenticated (the admission request's userInfo)
into annotations, and signs them with an HMAC key that only the operator holds. Nothing a user
writes into those annotations is ever believed: the webhook overwrites it, and the engine checks
the signature before it lets an experiment run or an approval count.

An experiment's stamp binds the author (and groups), the users who edited the spec since, the
object (namespace, name or generateName, and its UID once it has one) and the sha256 of the spec
as admitted. So a stamp copied onto another object does not verify, and neither does an edit made
while the webhook was not running. On CREATE the API server has not assigned the UID yet (mutating
admission runs before it), so the first stamp is bound to the creation instead: it verifies only
while the object's creationTimestamp is within CREATE_SKEW of the stamp; every later UPDATE that
passes the webhook (the operator's own finalizer patch, moments later) re-signs it with the UID.

An approval's stamp binds the approver (and groups), the time of approval, the experiment (name and
UID) and the spec hash approved. Pure: no I/O; the key is an argument.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from chaosguard.api.models import GROUP, ChaosExperimentSpec

AUTHOR = f"{GROUP}/author"
AUTHOR_GROUPS = f"{GROUP}/author-groups"
EDITORS = f"{GROUP}/editors"
STAMPED_AT = f"{GROUP}/stamped-at"
SIGNATURE = f"{GROUP}/signature"
APPROVER = f"{GROUP}/approver"
APPROVER_GROUPS = f"{GROUP}/approver-groups"
APPROVED_AT = f"{GROUP}/approved-at"
EXPERIMENT_UID = f"{GROUP}/experiment-uid"

EXPERIMENT_STAMP = (AUTHOR, AUTHOR_GROUPS, EDITORS, STAMPED_AT, SIGNATURE)
APPROVAL_STAMP = (APPROVER, APPROVER_GROUPS, APPROVED_AT, EXPERIMENT_UID, SIGNATURE)

#: How far a UID-less (creation) stamp may be from the object's creationTimestamp: the webhook's
#: 30 s timeout plus clock skew between the operator and the API server.
CREATE_SKEW = timedelta(seconds=120)
#: How long the groups in an author stamp are believed. Groups come from the authenticator (an OIDC
#: token, a client certificate) at the moment of the request, and no API can ask for them later: a
#: SubjectAccessReview judges exactly the groups it is given. So a stamp's groups are true when it is
#: made and go stale; after this age the author's rights are re-checked by user name alone, and the
#: author refreshes them by updating the experiment (any update the author makes re-stamps them).
GROUPS_TRUSTED_FOR = timedelta(hours=24)
_VERSION = "v1"
#: The cluster owners' opt-out from requiring a verified author (`chaosguard run --allow-unverified-authors`).
ALLOW_UNVERIFIED_AUTHORS_ENV = "CHAOSGUARD_ALLOW_UNVERIFIED_AUTHORS"


def unverified_authors_allowed(environ: Mapping[str, str]) -> bool:
    """Whether the owners gave away the author check, in this process's environment (no I/O: it is passed)."""
    return environ.get(ALLOW_UNVERIFIED_AUTHORS_ENV, "").strip().lower() in ("1", "true", "yes")


def canonical_json(value: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def spec_hash(spec: Mapping[str, Any]) -> str:
    """`sha256:<hex>` of the canonical JSON of the spec, the form ChaosApproval.spec.specHash takes.

    Canonical means: as the operator reads it (the model), without the fields left at their defaults,
    so that a default the API server fills in (say, for a field a newer CRD adds) changes nothing,
    while any change to what the experiment does changes the hash. A spec the model refuses is
    hashed as it is. `paused` is left out: a pause changes when the experiment acts, not what it does,
    so it keeps the run, its approvals and the author's stamp (see decisions.pause).
    """
    try:
        normal = ChaosExperimentSpec.model_validate(dict(spec)).model_dump(
            by_alias=True, mode="json", exclude_defaults=True, exclude={"paused"}
        )
    except ValidationError:
        normal = {key: value for key, value in spec.items() if key != "paused"}
    return "sha256:" + hashlib.sha256(canonical_json(normal)).hexdigest()


def sign(key: bytes, payload: Mapping[str, Any]) -> str:
    return f"{_VERSION}:" + hmac.new(key, canonical_json(dict(payload)), hashlib.sha256).hexdigest()


def signature_matches(key: bytes, payload: Mapping[str, Any], signature: str) -> bool:
    return hmac.compare_digest(sign(key, payload), signature)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


@dataclass(frozen=True)
class Identity:
    """An authenticated user as the API server saw them (admission userInfo)."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_userinfo(cls, userinfo: Mapping[str, Any]) -> Identity:
        extra = {str(k): tuple(str(v) for v in (values or [])) for k, values in (userinfo.get("extra") or {}).items()}
        return cls(
            username=str(userinfo.get("username") or ""),
            groups=tuple(str(g) for g in userinfo.get("groups") or []),
            uid=str(userinfo.get("uid") or ""),
            extra=extra,
        )

    def __str__(self) -> str:
        return self.username


# --------------------------------------------------------------------------- experiments


@dataclass(frozen=True)
class AuthorStamp:
    author: str
    groups: tuple[str, ...]
    editors: tuple[str, ...]
    stamped_at: datetime

    @property
    def writers(self) -> frozenset[str]:
        """Everyone who wrote part of the current spec: none of them may approve it."""
        return frozenset((self.author, *self.editors))

    @property
    def identity(self) -> Identity:
        return Identity(self.author, self.groups)


@dataclass(frozen=True)
class StampCheck:
    stamp: AuthorStamp | None
    problem: str = ""  # why there is no valid stamp

    @property
    def valid(self) -> bool:
        return self.stamp is not None


def _experiment_payload(metadata: Mapping[str, Any], spec: Mapping[str, Any], stamp: AuthorStamp) -> dict[str, Any]:
    return {
        "kind": "ChaosExperiment",
        "namespace": str(metadata.get("namespace") or ""),
        "name": str(metadata.get("name") or ""),
        "generateName": str(metadata.get("generateName") or ""),
        "uid": str(metadata.get("uid") or ""),
        "specHash": spec_hash(spec),
        "author": stamp.author,
        "groups": list(stamp.groups),
        "editors": list(stamp.editors),
        "stampedAt": format_time(stamp.stamped_at),
    }


def experiment_annotations(
    key: bytes, metadata: Mapping[str, Any], spec: Mapping[str, Any], stamp: AuthorStamp
) -> dict[str, str | None]:
    """The stamp annotations for an experiment (None: remove the annotation)."""
    return {
        AUTHOR: stamp.author,
        AUTHOR_GROUPS: json.dumps(list(stamp.groups)),
        EDITORS: json.dumps(list(stamp.editors)) if stamp.editors else None,
        STAMPED_AT: format_time(stamp.stamped_at),
        SIGNATURE: sign(key, _experiment_payload(metadata, spec, stamp)),
    }


def read_experiment_stamp(key: bytes | None, body: Mapping[str, Any]) -> StampCheck:
    """The experiment's author stamp if it is present and its signature verifies for this very object and spec."""
    metadata: Mapping[str, Any] = body.get("metadata") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    if AUTHOR not in annotations or SIGNATURE not in annotations:
        return StampCheck(None, "the experiment carries no author stamp (it was created without the admission webhook)")
    if key is None:
        return StampCheck(None, "the operator has no signing key to verify the author stamp with")
    groups = _string_list(annotations.get(AUTHOR_GROUPS, "[]"))
    editors = _string_list(annotations.get(EDITORS, "[]"))
    stamped_at = parse_time(annotations.get(STAMPED_AT, ""))
    if groups is None or editors is None or stamped_at is None:
        return StampCheck(None, "the author stamp is malformed")
    stamp = AuthorStamp(annotations[AUTHOR], tuple(groups), tuple(editors), stamped_at)
    signature = annotations[SIGNATURE]
    spec: Mapping[str, Any] = body.get("spec") or {}
    if signature_matches(key, _experiment_payload(metadata, spec, stamp), signature):
        return StampCheck(stamp)
    created = parse_time(str(metadata.get("creationTimestamp") or ""))
    if created is not None and abs(created - stamped_at) <= CREATE_SKEW:
        at_creation = {**metadata, "uid": ""}
        candidates = [at_creation]
        generate_name = str(metadata.get("generateName") or "")
        if generate_name and str(metadata.get("name") or "").startswith(generate_name):
            candidates.append({**at_creation, "name": ""})
        for candidate in candidates:
            if signature_matches(key, _experiment_payload(candidate, spec, stamp), signature):
                return StampCheck(stamp)
    return StampCheck(
        None,
        "the author stamp does not verify: the spec or the stamp was changed without the admission webhook, "
        "or the stamp was copied from another object",
    )


def _string_list(text: str) -> list[str] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return value


def claimed_writers(body: Mapping[str, Any]) -> frozenset[str]:
    """The author and editors as the annotations claim them, unverified: for display only (the CLI has no key)."""
    annotations: Mapping[str, str] = (body.get("metadata") or {}).get("annotations") or {}
    editors = _string_list(annotations.get(EDITORS, "[]")) or []
    return frozenset(name for name in (annotations.get(AUTHOR, ""), *editors) if name)


def stamp_for_create(identity: Identity, now: datetime) -> AuthorStamp:
    return AuthorStamp(identity.username, identity.groups, (), now)


def stamp_for_update(
    old: StampCheck,
    requester: Identity,
    old_spec: Mapping[str, Any],
    new_spec: Mapping[str, Any],
    now: datetime | None = None,
) -> AuthorStamp | None:
    """The author stays; whoever changes the spec (other than the author) joins the editors; any update
    the author makes (at `now`) refreshes the author's groups and the stamp's time. None: the old object
    had no valid stamp, and an update cannot create one (delete and create it again)."""
    if old.stamp is None:
        return None
    stamp = old.stamp
    if requester.username == stamp.author and now is not None:
        return AuthorStamp(stamp.author, requester.groups, stamp.editors, now)
    if spec_hash(old_spec) != spec_hash(new_spec) and requester.username not in stamp.writers:
        return AuthorStamp(stamp.author, stamp.groups, (*stamp.editors, requester.username), stamp.stamped_at)
    return stamp


@dataclass(frozen=True)
class Recheck:
    """Who must still hold the fault's permission when a run starts, as far as the operator can know it now."""

    identities: tuple[Identity, ...]
    caveat: str = ""  # for a refusal: whose groups were left out of the check, and how to bring them back


def recheck(stamp: AuthorStamp, now: datetime) -> Recheck:
    """The author with the groups the API server saw while the stamp is younger than GROUPS_TRUSTED_FOR,
    else by user name alone; every editor by user name alone (an edit's groups are not kept)."""
    fresh = now - stamp.stamped_at <= GROUPS_TRUSTED_FOR
    author = stamp.identity if fresh else Identity(stamp.author)
    editors = tuple(Identity(editor) for editor in stamp.editors if editor != stamp.author)
    caveats = []
    if not fresh and stamp.groups:
        hours = int(GROUPS_TRUSTED_FOR.total_seconds() // 3600)
        caveats.append(
            f"{stamp.author}'s groups were last confirmed at {format_time(stamp.stamped_at)}, more than {hours}h "
            f"ago, so only rights granted to the user {stamp.author} count; {stamp.author} refreshes them by "
            "updating the experiment (e.g. `kubectl annotate chaosexperiment NAME chaosguard.dev/refresh=<now> "
            "--overwrite`) while the admission webhook runs"
        )
    if editors:
        caveats.append(
            "editors are checked by user name alone (the groups of an edit are not kept): grant them the "
            "permission by name, or delete the experiment and create it again"
        )
    return Recheck((author, *editors), "; ".join(caveats))


def annotation_changes(current: Mapping[str, str], wanted: Mapping[str, str | None]) -> dict[str, str | None]:
    """Only the annotations that differ (None: remove), for a merge patch."""
    return {k: v for k, v in wanted.items() if current.get(k) != v and not (v is None and k not in current)}


def restore(current: Mapping[str, str], old: Mapping[str, str], keys: Sequence[str]) -> dict[str, str | None]:
    """Undo any change a request makes to the stamp annotations `keys`: what the old object had, nothing more."""
    return annotation_changes(current, {key: old.get(key) for key in keys})


# --------------------------------------------------------------------------- approvals


class SignatureState(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    MISSING = "missing"
    UNCHECKED = "unchecked"  # the reader holds no key (the CLI): the operator checks it


@dataclass(frozen=True)
class ApprovalStamp:
    approver: str
    groups: tuple[str, ...]
    approved_at: datetime
    experiment_uid: str


def _approval_payload(namespace: str, spec: Mapping[str, Any], stamp: ApprovalStamp) -> dict[str, Any]:
    return {
        "kind": "ChaosApproval",
        "namespace": namespace,
        "experiment": str(spec.get("experiment") or ""),
        "experimentUid": stamp.experiment_uid,
        "specHash": str(spec.get("specHash") or ""),
        "approver": stamp.approver,
        "groups": list(stamp.groups),
        "approvedAt": format_time(stamp.approved_at),
    }


def approval_annotations(key: bytes, namespace: str, spec: Mapping[str, Any], stamp: ApprovalStamp) -> dict[str, str]:
    return {
        APPROVER: stamp.approver,
        APPROVER_GROUPS: json.dumps(list(stamp.groups)),
        APPROVED_AT: format_time(stamp.approved_at),
        EXPERIMENT_UID: stamp.experiment_uid,
        SIGNATURE: sign(key, _approval_payload(namespace, spec, stamp)),
    }


def read_approval_stamp(key: bytes | None, body: Mapping[str, Any]) -> tuple[ApprovalStamp | None, SignatureState]:
    """The approval's stamp as written, and whether its signature verifies (UNCHECKED without a key)."""
    metadata: Mapping[str, Any] = body.get("metadata") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    if APPROVER not in annotations or SIGNATURE not in annotations:
        return None, SignatureState.MISSING
    groups = _string_list(annotations.get(APPROVER_GROUPS, "[]"))
    approved_at = parse_time(annotations.get(APPROVED_AT, ""))
    if groups is None or approved_at is None:
        return None, SignatureState.INVALID
    stamp = ApprovalStamp(annotations[APPROVER], tuple(groups), approved_at, annotations.get(EXPERIMENT_UID, ""))
    if key is None:
        return stamp, SignatureState.UNCHECKED
    payload = _approval_payload(str(metadata.get("namespace") or ""), body.get("spec") or {}, stamp)
    state = SignatureState.VALID if signature_matches(key, payload, annotations[SIGNATURE]) else SignatureState.INVALID
    return stamp, state
