"""Which approvals count: pure decisions over plain data (the engine, the webhook and the CLI share them).

An approval counts toward a policy's `approval` requirement only if it is signed by the operator
(the approver was stamped by the admission webhook), it approves this very experiment (name and
UID; an approval bound to no UID never counts) and the exact spec it has now (specHash), its
approver did not write that spec (the author or an editor), the approver is one of the policy's
approvers (by user name or group), and it is younger than the policy's expiresAfter. Every policy
that requires approval must be satisfied on its own, by at least minApprovals distinct approvers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from chaosguard.api.durations import to_seconds
from chaosguard.api.models import ApprovalPolicy, ApprovalRecord
from chaosguard.decisions.stamps import SignatureState, read_approval_stamp


@dataclass(frozen=True)
class ApprovalView:
    """One ChaosApproval, as far as counting goes."""

    name: str
    experiment: str
    spec_hash: str
    approver: str = ""  # "" when unstamped
    groups: tuple[str, ...] = ()
    approved_at: datetime | None = None
    experiment_uid: str = ""
    signature: SignatureState = SignatureState.MISSING
    comment: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any], key: bytes | None) -> ApprovalView:
        spec: Mapping[str, Any] = body.get("spec") or {}
        stamp, state = read_approval_stamp(key, body)
        return cls(
            name=str((body.get("metadata") or {}).get("name") or ""),
            experiment=str(spec.get("experiment") or ""),
            spec_hash=str(spec.get("specHash") or ""),
            approver=stamp.approver if stamp else "",
            groups=stamp.groups if stamp else (),
            approved_at=stamp.approved_at if stamp else None,
            experiment_uid=stamp.experiment_uid if stamp else "",
            signature=state,
            comment=str(spec.get("comment") or ""),
        )


@dataclass(frozen=True)
class ExperimentView:
    name: str
    uid: str
    spec_hash: str
    writers: frozenset[str] = frozenset()  # the author and the editors of the current spec


@dataclass(frozen=True)
class Judgement:
    approval: ApprovalView
    counted: bool
    reason: str = ""  # why it does not count
    expires_at: datetime | None = None
    counts_for: tuple[str, ...] = ()  # the policies it counts toward

    def to_record(self) -> ApprovalRecord:
        return ApprovalRecord(
            name=self.approval.name,
            approver=self.approval.approver,
            approved_at=self.approval.approved_at,
            expires_at=self.expires_at,
            counted=self.counted,
            reason=self.reason,
        )


@dataclass(frozen=True)
class ApprovalCount:
    valid: list[Judgement] = field(default_factory=list)
    refused: list[Judgement] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # each unmet requirement, for people

    @property
    def satisfied(self) -> bool:
        return not self.missing

    @property
    def judgements(self) -> list[Judgement]:
        return sorted([*self.valid, *self.refused], key=lambda j: (j.approval.approved_at is None, j.approval.name))

    @property
    def next_expiry(self) -> datetime | None:
        times = [j.expires_at for j in self.valid if j.expires_at is not None]
        return min(times) if times else None


def describe_approvers(policy: ApprovalPolicy) -> str:
    parts = []
    if policy.approvers.users:
        parts.append("users " + ", ".join(policy.approvers.users))
    if policy.approvers.groups:
        parts.append("groups " + ", ".join(policy.approvers.groups))
    return " or ".join(parts) or "nobody (approvers is empty)"


def is_approver(policy: ApprovalPolicy, user: str, groups: Iterable[str]) -> bool:
    return user in policy.approvers.users or bool(set(groups) & set(policy.approvers.groups))


def _common_refusal(approval: ApprovalView, experiment: ExperimentView, preview: bool) -> str:
    if approval.signature is SignatureState.UNCHECKED and not preview:
        return "its approver stamp was not checked (no signing key)"
    if approval.signature is SignatureState.MISSING:
        return (
            "it carries no approver stamp: it was created while the admission webhook was not running; "
            "delete it and approve again"
        )
    if approval.signature is SignatureState.INVALID:
        return "its approver stamp does not verify (altered, or signed with another key); delete it and approve again"
    if not approval.experiment_uid:
        # Stamped while no experiment of that name existed: it must not count for one created later.
        return (
            f"it is bound to no experiment (stamped while no ChaosExperiment {experiment.name!r} existed); "
            "delete it and approve again"
        )
    if approval.experiment_uid != experiment.uid:
        return f"it approves an earlier experiment named {experiment.name!r} (uid {approval.experiment_uid})"
    if approval.approver in experiment.writers:
        return f"{approval.approver} wrote this experiment's spec and may not approve it; ask another approver"
    if approval.spec_hash != experiment.spec_hash:
        return (
            f"it approves an earlier version of the spec ({approval.spec_hash[:19]}…, now "
            f"{experiment.spec_hash[:19]}…); the spec was edited since, so approve again"
        )
    return ""


def count_valid(
    approvals: Iterable[ApprovalView],
    experiment: ExperimentView,
    policies: Sequence[tuple[ApprovalPolicy, str]],
    now: datetime,
    *,
    preview: bool = False,
) -> ApprovalCount:
    """Judges every approval of `experiment` against every (approval policy, its source) that requires one.

    `preview` (the CLI, which holds no key) judges unchecked signatures as if they verified; the operator never does.
    """
    mine = [a for a in approvals if a.experiment == experiment.name]
    valid: list[Judgement] = []
    refused: list[Judgement] = []
    approvers_for: dict[str, set[str]] = {source: set() for _, source in policies}
    for approval in mine:
        reason = _common_refusal(approval, experiment, preview)
        if reason:
            refused.append(Judgement(approval, False, reason))
            continue
        assert approval.approved_at is not None  # a verified stamp has one
        counts_for: list[str] = []
        expiries: list[datetime] = []
        expired: list[str] = []
        for policy, source in policies:
            if not is_approver(policy, approval.approver, approval.groups):
                continue
            expires_at = approval.approved_at + timedelta(seconds=to_seconds(policy.expires_after))
            if now >= expires_at:
                expired.append(f"expired at {expires_at.isoformat()} ({source} expiresAfter {policy.expires_after})")
                continue
            counts_for.append(source)
            expiries.append(expires_at)
            approvers_for[source].add(approval.approver)
        if counts_for:
            valid.append(Judgement(approval, True, "", min(expiries), tuple(counts_for)))
        elif expired:
            refused.append(Judgement(approval, False, "; ".join(expired)))
        elif policies:
            allowed = "; ".join(f"{source} allows {describe_approvers(policy)}" for policy, source in policies)
            refused.append(Judgement(approval, False, f"{approval.approver} is not an approver ({allowed})"))
        else:
            refused.append(Judgement(approval, False, "no ChaosPolicy requires approval of this experiment"))
    missing = []
    for policy, source in policies:
        have = len(approvers_for[source])
        if have < policy.min_approvals:
            missing.append(
                f"{source} requires {policy.min_approvals} approval(s) from {describe_approvers(policy)}, "
                f"not the author, of this exact spec; {have} valid"
            )
    return ApprovalCount(valid, refused, missing)
