from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from chaosguard.api.models import LabelSelector, TargetSpec
from chaosguard.decisions.policy import combine
from chaosguard.decisions.selection import (
    PodView,
    after_kill,
    choose,
    classify,
    kill_refusal,
    ready_moment,
    recovered_at,
    requested_count,
    workload_states,
)

from .helpers import pod, policy

OPTED_IN = {"shop": {"chaosguard.dev/chaos": "allowed"}, "kube-system": {}, "other": {}}
CHECKOUT = LabelSelector(matchLabels={"app": "checkout"})


def test_only_running_ready_owned_unprotected_pods_are_eligible() -> None:
    pods = [
        pod("ok"),
        pod("protected", labels={"app": "checkout", "chaosguard.dev/protected": "true"}),
        pod("pending", phase="Pending", ready=False),
        pod("unready", ready=False),
        pod("leaving", terminating=True),
        pod("bare", workload=None),
        pod("system", namespace="kube-system"),
        pod("not-opted", namespace="other"),
        pod("other-app", labels={"app": "cart"}),
    ]
    effective = combine(
        [
            policy(
                requireNamespaceOptIn=True,
                protectedSelector={"matchLabels": {"chaosguard.dev/protected": "true"}},
            )
        ]
    )
    result = classify(pods, CHECKOUT, effective, OPTED_IN)
    assert [p.name for p in result.eligible] == ["ok"]
    left_out = {exclusion.pod.name: exclusion.refusal.rule for exclusion in result.excluded}
    assert left_out == {
        "protected": "protected-pod",
        "pending": "not-running",
        "unready": "not-ready",
        "leaving": "terminating",
        "bare": "not-controller-owned",
        "system": "builtin-excluded-namespace",
        "not-opted": "namespace-opt-in",
    }


def test_requested_counts_per_mode() -> None:
    assert requested_count(TargetSpec(mode="one"), 10) == 1
    assert requested_count(TargetSpec(mode="all"), 10) == 10
    assert requested_count(TargetSpec(mode="fixed", value=3), 10) == 3
    assert requested_count(TargetSpec(mode="fixed", value=30), 10) == 10
    assert requested_count(TargetSpec(mode="fixed-percent", value=25), 10) == 2
    assert requested_count(TargetSpec(mode="fixed-percent", value=1), 10) == 1
    assert requested_count(TargetSpec(mode="one"), 0) == 0


def test_choice_is_reproducible_from_the_seed() -> None:
    pods = [pod(f"p{i}") for i in range(20)]
    first = choose(pods, 5, random.Random("uid/run-1/0"))
    assert first == choose(list(reversed(pods)), 5, random.Random("uid/run-1/0"))
    assert len({p.uid for p in first}) == 5


def test_cap_counts_pods_already_down_by_anyone() -> None:
    effective = combine([policy(maxPercentage=40)])
    pods = [pod(f"p{i}") for i in range(4)] + [pod("down", ready=False)]
    states = workload_states(pods, {"shop/Deployment/checkout": 5})
    state = states["shop/Deployment/checkout"]
    assert (state.desired, state.ready, state.down) == (5, 4, 1)
    assert kill_refusal(pods[0], state, effective, None) is None  # 2 of 5 down = 40 %
    refusal = kill_refusal(pods[1], after_kill(state), effective, None)
    assert refusal is not None and refusal.rule == "max-percentage"
    assert "3 of 5 pods" in refusal.message


def test_missing_replicas_count_as_down() -> None:
    effective = combine([policy(maxPercentage=20)])
    pods = [pod(f"p{i}") for i in range(4)]  # one of five already deleted, replacement not yet there
    state = workload_states(pods, {"shop/Deployment/checkout": 5})["shop/Deployment/checkout"]
    assert kill_refusal(pods[0], state, effective, None) is not None


def test_min_available_floor() -> None:
    effective = combine([])
    pods = [pod(f"p{i}") for i in range(4)]
    state = workload_states(pods, {"shop/Deployment/checkout": 4})["shop/Deployment/checkout"]
    assert kill_refusal(pods[0], state, effective, 3) is None
    refusal = kill_refusal(pods[0], after_kill(state), effective, "75%")
    assert refusal is not None and refusal.rule == "min-available"


namespaces = st.sampled_from(["shop", "kube-system", "other", "excluded"])
workloads = st.sampled_from(["Deployment/a", "Deployment/b", "StatefulSet/c", None])


@st.composite
def pod_views(draw: st.DrawFn, index: int) -> PodView:
    return PodView(
        namespace=draw(namespaces),
        name=f"pod-{index}",
        uid=f"uid-{index}",
        labels={"app": "checkout", **({"protected": "yes"} if draw(st.booleans()) else {})},
        phase=draw(st.sampled_from(["Running", "Running", "Running", "Pending", "Succeeded"])),
        ready=draw(st.booleans()),
        terminating=draw(st.booleans()),
        workload=draw(workloads),
    )


@st.composite
def populations(draw: st.DrawFn) -> list[PodView]:
    size = draw(st.integers(min_value=0, max_value=40))
    return [draw(pod_views(index)) for index in range(size)]


@settings(max_examples=300, deadline=None)
@given(
    pods=populations(),
    cap=st.integers(min_value=1, max_value=100),
    opt_in=st.booleans(),
    mode=st.sampled_from(["one", "fixed", "fixed-percent", "all"]),
    value=st.integers(min_value=1, max_value=100),
    extra_replicas=st.integers(min_value=0, max_value=5),
    seed=st.integers(),
)
def test_selection_never_takes_forbidden_pods_or_crosses_the_cap(
    pods: list[PodView], cap: int, opt_in: bool, mode: str, value: int, extra_replicas: int, seed: int
) -> None:
    effective = combine(
        [
            policy(
                maxPercentage=cap,
                excludedNamespaces=["excluded"],
                requireNamespaceOptIn=opt_in,
                protectedSelector={"matchLabels": {"protected": "yes"}},
            )
        ]
    )
    target = TargetSpec(mode=mode, value=None if mode in ("one", "all") else value)
    eligibility = classify(pods, CHECKOUT, effective, OPTED_IN)
    chosen = choose(eligibility.eligible, requested_count(target, len(eligibility.eligible)), random.Random(seed))
    live_by_key = {p.workload_key for p in pods if p.workload_key}
    desired = {key: sum(1 for p in pods if p.workload_key == key) + extra_replicas for key in live_by_key}
    states = workload_states(pods, desired)
    initially_down = {key: state.down for key, state in states.items()}

    for victim in chosen:
        assert victim.namespace not in ("kube-system", "excluded")
        assert not (opt_in and victim.namespace == "other")
        assert "protected" not in victim.labels
        assert victim.phase == "Running" and victim.ready and not victim.terminating and victim.workload
        key = victim.workload_key
        assert key is not None
        if kill_refusal(victim, states[key], effective, None) is None:
            states[key] = after_kill(states[key])

    for key, state in states.items():
        killed = state.down - initially_down[key]
        assert killed == 0 or state.down <= state.desired * cap // 100


# --------------------------------------------------------------------------- recovery from the pods' own times

KILLED_AT = datetime(2026, 11, 28, 12, 0, 0, 400000, tzinfo=UTC)


def ready_pod(name: str, since: datetime | None, seen: datetime | None = None, **changes: object) -> PodView:
    pod = PodView(
        namespace="shop",
        name=name,
        uid=f"uid-{name}",
        labels={"app": "checkout"},
        phase="Running",
        ready=True,
        terminating=False,
        workload="Deployment/checkout",
        ready_since=since,
        ready_seen_at=seen,
    )
    return replace(pod, **changes)  # type: ignore[arg-type]


def test_recovery_is_when_the_last_missing_pod_became_ready_by_its_own_clock() -> None:
    old = KILLED_AT - timedelta(hours=1)
    replacement = datetime(2026, 11, 28, 12, 0, 3, tzinfo=UTC)  # whole seconds, as the API stores them
    pods = [ready_pod("a", old), ready_pod("b", old), ready_pod("c", replacement)]
    assert recovered_at(pods, "shop/Deployment/checkout", 3, KILLED_AT) == replacement
    # a surge pod that came later does not push the moment back: three were Ready at `replacement`
    later = [*pods, ready_pod("d", replacement + timedelta(seconds=5))]
    assert recovered_at(later, "shop/Deployment/checkout", 3, KILLED_AT) == replacement


def test_no_recovery_while_short_of_the_desired_count_or_counting_unready_pods() -> None:
    old = KILLED_AT - timedelta(hours=1)
    pods = [
        ready_pod("a", old),
        ready_pod("b", old, ready=False),
        ready_pod("c", old, terminating=True),
        ready_pod("d", old, workload="Deployment/other"),
    ]
    assert recovered_at(pods, "shop/Deployment/checkout", 2, KILLED_AT) is None


def test_a_watch_sighting_refines_the_whole_second_but_never_leaves_it() -> None:
    since = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)  # truncated: before the kill at .4
    seen = since + timedelta(milliseconds=730)
    assert ready_moment(ready_pod("a", since, seen)) == seen
    assert recovered_at([ready_pod("a", since, seen)], "shop/Deployment/checkout", 1, KILLED_AT) == seen
    # a late sighting (a busy watch) is held to the second the kubelet reported
    assert ready_moment(ready_pod("a", since, since + timedelta(seconds=9))) == since + timedelta(seconds=1)
    # without a sighting the API's second is all there is, and never before the kill
    assert recovered_at([ready_pod("a", since)], "shop/Deployment/checkout", 1, KILLED_AT) == KILLED_AT
