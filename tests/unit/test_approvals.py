"""count_valid: which approvals count, and why the others do not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from chaosguard.api.models import ApprovalPolicy
from chaosguard.decisions.approvals import ApprovalView, ExperimentView, count_valid
from chaosguard.decisions.stamps import SignatureState

NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
HASH = "sha256:" + "a" * 64
OLD_HASH = "sha256:" + "b" * 64
EXPERIMENT = ExperimentView(name="kill", uid="uid-1", spec_hash=HASH, writers=frozenset({"alice"}))
LEADS = ApprovalPolicy.model_validate(
    {"required": True, "approvers": {"groups": ["sre-leads"]}, "minApprovals": 1, "expiresAfter": "1h"}
)
POLICIES = [(LEADS, "ChaosPolicy/leads")]


def approval(
    approver: str = "bob",
    groups: tuple[str, ...] = ("sre-leads",),
    *,
    name: str | None = None,
    age: timedelta = timedelta(minutes=5),
    spec_hash: str = HASH,
    experiment: str = "kill",
    experiment_uid: str = "uid-1",
    signature: SignatureState = SignatureState.VALID,
) -> ApprovalView:
    return ApprovalView(
        name=name or f"kill-{approver}",
        experiment=experiment,
        spec_hash=spec_hash,
        approver=approver,
        groups=groups,
        approved_at=NOW - age,
        experiment_uid=experiment_uid,
        signature=signature,
    )


def reasons(*approvals: ApprovalView, policies: list[tuple[ApprovalPolicy, str]] = POLICIES) -> list[str]:
    return [j.reason for j in count_valid(approvals, EXPERIMENT, policies, NOW).refused]


def test_a_signed_approval_by_an_approver_of_the_current_spec_counts() -> None:
    count = count_valid([approval()], EXPERIMENT, POLICIES, NOW)
    assert count.satisfied
    assert [j.approval.approver for j in count.valid] == ["bob"]
    assert count.valid[0].counts_for == ("ChaosPolicy/leads",)
    assert count.valid[0].expires_at == NOW + timedelta(minutes=55)
    assert count.next_expiry == NOW + timedelta(minutes=55)


def test_nothing_counts_without_a_valid_signature() -> None:
    (missing,) = reasons(approval(signature=SignatureState.MISSING))
    assert "admission webhook was not running" in missing
    (invalid,) = reasons(approval(signature=SignatureState.INVALID))
    assert "does not verify" in invalid


def test_the_author_and_editors_cannot_approve() -> None:
    editor = ExperimentView("kill", "uid-1", HASH, frozenset({"alice", "carol"}))
    count = count_valid([approval("carol")], editor, POLICIES, NOW)
    assert not count.satisfied
    assert "carol wrote this experiment's spec" in count.refused[0].reason
    (own,) = reasons(approval("alice", ("sre-leads",)))
    assert "alice wrote this experiment's spec and may not approve it" in own


def test_an_edited_spec_voids_earlier_approvals() -> None:
    (reason,) = reasons(approval(spec_hash=OLD_HASH))
    assert "earlier version of the spec" in reason


def test_an_approval_of_an_earlier_experiment_of_the_same_name_does_not_count() -> None:
    (reason,) = reasons(approval(experiment_uid="uid-0"))
    assert "earlier experiment named 'kill'" in reason


def test_only_approvers_count_by_user_or_group() -> None:
    (reason,) = reasons(approval("mallory", ()))
    assert "mallory is not an approver (ChaosPolicy/leads allows groups sre-leads)" in reason
    by_user = ApprovalPolicy.model_validate({"required": True, "approvers": {"users": ["dave"]}})
    assert count_valid([approval("dave", ())], EXPERIMENT, [(by_user, "ChaosPolicy/u")], NOW).satisfied


def test_expired_approvals_do_not_count() -> None:
    (reason,) = reasons(approval(age=timedelta(hours=1)))
    assert "expired at 2026-11-24T14:00:00+00:00 (ChaosPolicy/leads expiresAfter 1h)" in reason
    assert count_valid([approval(age=timedelta(minutes=59, seconds=59))], EXPERIMENT, POLICIES, NOW).satisfied


def test_approvals_of_other_experiments_are_ignored() -> None:
    count = count_valid([approval(experiment="other")], EXPERIMENT, POLICIES, NOW)
    assert (count.valid, count.refused) == ([], [])
    assert count.missing == [
        "ChaosPolicy/leads requires 1 approval(s) from groups sre-leads, not the author, of this exact spec; 0 valid"
    ]


def test_distinct_approvers_count_toward_min_approvals() -> None:
    two = ApprovalPolicy.model_validate({"required": True, "approvers": {"groups": ["sre-leads"]}, "minApprovals": 2})
    policies = [(two, "ChaosPolicy/two")]
    twice = [approval("bob", name="a1"), approval("bob", name="a2")]
    assert not count_valid(twice, EXPERIMENT, policies, NOW).satisfied
    assert count_valid([*twice, approval("carol")], EXPERIMENT, policies, NOW).satisfied


def test_every_policy_must_be_satisfied_on_its_own() -> None:
    security = ApprovalPolicy.model_validate({"required": True, "approvers": {"users": ["sec"]}, "expiresAfter": "10m"})
    policies = [*POLICIES, (security, "ChaosPolicy/security")]
    count = count_valid([approval()], EXPERIMENT, policies, NOW)
    assert not count.satisfied
    assert [m.split(" ")[0] for m in count.missing] == ["ChaosPolicy/security"]
    both = count_valid([approval(), approval("sec", ())], EXPERIMENT, policies, NOW)
    assert both.satisfied
    # The shorter expiry of the policy that counts the approval is the one that matters.
    late = count_valid([approval(), approval("sec", (), age=timedelta(minutes=11))], EXPERIMENT, policies, NOW)
    assert not late.satisfied and "expired" in late.refused[0].reason


def test_without_policies_requiring_approval_nothing_is_missing() -> None:
    count = count_valid([approval()], EXPERIMENT, [], NOW)
    assert count.satisfied
    assert count.refused[0].reason == "no ChaosPolicy requires approval of this experiment"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["alice", "bob", "carol", "mallory"]),
            st.booleans(),
            st.sampled_from(list(SignatureState)),
            st.integers(min_value=0, max_value=7200),
        ),
        max_size=8,
    ),
    st.integers(min_value=1, max_value=3),
)
def test_counting_never_credits_the_author_an_unsigned_or_stale_approval(
    raw: list[tuple[str, bool, SignatureState, int]], needed: int
) -> None:
    policy = ApprovalPolicy.model_validate(
        {"required": True, "approvers": {"groups": ["sre-leads"]}, "minApprovals": needed, "expiresAfter": "1h"}
    )
    views = [
        approval(
            user,
            ("sre-leads",),
            name=f"a{index}",
            spec_hash=HASH if current else OLD_HASH,
            signature=signature,
            age=timedelta(seconds=age),
        )
        for index, (user, current, signature, age) in enumerate(raw)
    ]
    count = count_valid(views, EXPERIMENT, [(policy, "ChaosPolicy/p")], NOW)
    for judgement in count.valid:
        a = judgement.approval
        assert a.signature is SignatureState.VALID and a.approver != "alice" and a.spec_hash == HASH
        assert a.approved_at is not None and NOW - a.approved_at < timedelta(hours=1)
    assert len(count.valid) + len(count.refused) == len(views)
    assert count.satisfied == (len({j.approval.approver for j in count.valid}) >= needed)


def test_unchecked_signatures_count_only_in_a_preview() -> None:
    unchecked = approval(signature=SignatureState.UNCHECKED)
    assert not count_valid([unchecked], EXPERIMENT, POLICIES, NOW).satisfied
    assert count_valid([unchecked], EXPERIMENT, POLICIES, NOW, preview=True).satisfied


def test_an_approval_bound_to_no_experiment_never_counts() -> None:
    """The approval race: stamped while no experiment of that name existed (UID ""), it must not count
    for the experiment created under that name later, even with the same spec."""
    (reason,) = reasons(approval(experiment_uid=""))
    assert reason.startswith("it is bound to no experiment (stamped while no ChaosExperiment 'kill' existed)")
    nameless = ExperimentView(name="kill", uid="", spec_hash=HASH, writers=frozenset({"alice"}))
    assert not count_valid([approval(experiment_uid="")], nameless, POLICIES, NOW).satisfied
    assert not count_valid([approval()], nameless, POLICIES, NOW).satisfied
