"""Pod-kill through the path a user takes: `kubectl apply` of the examples, a real API server,
kwok-simulated pods, and the operator as a process. Everything is checked through the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    OperatorProcess,
    apply_yaml,
    create_policy,
    events_for,
    experiment_yaml,
    ready_pods,
    scoped_policy,
    status_of,
    wait_for_event,
    wait_for_phase,
    wait_for_ready_pods,
)
from localcluster.wait import wait_for

pytestmark = pytest.mark.controlplane
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def uids(api: client.ApiClient, namespace: str) -> set[str]:
    return {pod.metadata.uid for pod in ready_pods(api, namespace, "checkout")}


def recovery_from_pods(
    api: client.ApiClient, namespace: str, kill: dict[str, Any], desired: int = 5
) -> tuple[float, float]:
    """What the pods themselves say, as bounds: full strength came back when the desired-th pod
    became Ready, by its Ready condition's lastTransitionTime, which the API keeps in whole seconds
    (so the moment is in [t, t + 1 s)); one that was Ready before the kill counts from the kill."""
    killed_at = datetime.fromisoformat(kill["at"])
    since = sorted(
        condition.last_transition_time
        for pod in ready_pods(api, namespace, "checkout")
        for condition in pod.status.conditions
        if condition.type == "Ready"
    )
    moment = since[desired - 1]
    low, high = max(moment, killed_at), max(moment + timedelta(seconds=1), killed_at)
    return round((low - killed_at).total_seconds(), 3), round((high - killed_at).total_seconds(), 3)


def within(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]


def kills(status: dict[str, Any], result: str | None = None) -> list[dict[str, Any]]:
    run = status.get("lastRun") or status.get("currentRun") or {}
    return [k for k in run.get("kills", []) if result is None or k["result"] == result]


def test_percent_example_kills_exactly_what_policy_allows_and_records_recovery(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    shop: str,
    isolated_policies: list[str],
) -> None:
    create_policy(k8s, f"cap-{shop}", scoped_policy(shop, maxPercentage=40))
    isolated_policies.append(f"cap-{shop}")
    before = uids(k8s, shop)

    apply_yaml(control_plane, (EXAMPLES / "pod-kill-percent.yaml").read_text(), shop)
    status = wait_for_phase(k8s, shop, "checkout-pod-kill", "Completed", timeout=90)

    killed = kills(status, "Killed")
    assert len(killed) == 2, status  # 40 % of 5
    assert {k["uid"] for k in killed} <= before
    assert all(k["method"] == "eviction" for k in killed)
    wait_for_ready_pods(k8s, shop, "checkout", 5)
    for kill in killed:
        assert within(kill["recoveredAfterSeconds"], recovery_from_pods(k8s, shop, kill)), kill
    assert not {k["uid"] for k in killed} & uids(k8s, shop)
    assert status["lastRun"]["killsTotal"] == 2
    assert status["hits"] == 2  # the Targets column of `kubectl get chaosexperiments`
    columns = control_plane.kubectl("get", "chaosexperiment", "checkout-pod-kill", "-n", shop, "--no-headers").stdout
    assert columns.split()[:3] == ["checkout-pod-kill", "Completed", "pod-kill"] and columns.split()[3] == "2"
    assert status["observedGeneration"] == 1
    reasons = [event.reason for event in events_for(k8s, shop, "checkout-pod-kill")]
    assert reasons.count("PodKilled") == 2 and "RunCompleted" in reasons, reasons
    owner_events = events_for(k8s, shop, "checkout", kind="Deployment")
    assert sum(event.reason == "ChaosPodKilled" for event in owner_events) == 2


def test_dry_run_records_would_be_kills_and_touches_nothing(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    before = uids(k8s, shop)
    apply_yaml(control_plane, (EXAMPLES / "pod-kill-dry-run.yaml").read_text(), shop)
    status = wait_for_phase(k8s, shop, "checkout-dry-run", "Completed", timeout=60)
    assert [k["result"] for k in kills(status)] == ["WouldKill", "WouldKill"]
    assert uids(k8s, shop) == before


def test_cap_stops_kills_beyond_the_share_of_the_workload(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    slow_shop: str,
    isolated_policies: list[str],
) -> None:
    create_policy(k8s, f"cap-{slow_shop}", scoped_policy(slow_shop, maxPercentage=40))
    isolated_policies.append(f"cap-{slow_shop}")
    apply_yaml(control_plane, experiment_yaml("four", mode="fixed", value=4), slow_shop)
    status = wait_for_phase(k8s, slow_shop, "four", "Completed", timeout=60)
    assert sorted(k["result"] for k in kills(status)) == ["Capped", "Capped", "Killed", "Killed"]
    capped = kills(status, "Capped")[0]
    assert "max-percentage" in capped["message"] and "above the 40%" in capped["message"]


def test_a_run_aborted_a_second_after_a_kill_still_records_the_recovery_the_pods_report(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    slow_shop: str,
) -> None:
    """The replacement takes 8 s to become Ready; the run is aborted right after the kill. The
    recovery time must still arrive, and be the pods' own figure, not "never recovered"."""
    apply_yaml(control_plane, experiment_yaml("early-end", duration="5m"), slow_shop)
    wait_for(
        lambda: kills(status_of(k8s, slow_shop, "early-end"), "Killed"),
        timeout=60,
        what="the first kill",
    )
    control_plane.kubectl("annotate", "chaosexperiment", "early-end", "-n", slow_shop, "chaosguard.dev/abort=test")
    aborted = wait_for_phase(k8s, slow_shop, "early-end", "Aborted", timeout=30)
    [kill] = kills(aborted, "Killed")
    assert kill.get("recoveredAfterSeconds") is None  # the replacement is still starting
    recorded = wait_for(
        lambda: kills(status_of(k8s, slow_shop, "early-end"), "Killed")[0].get("recoveredAfterSeconds"),
        timeout=60,
        what="the recovery time of the workload, after the run ended",
    )
    assert within(recorded, recovery_from_pods(k8s, slow_shop, kill)), (recorded, kill)
    assert recorded >= 7, recorded  # at least the 8 s readiness delay, at the API's 1 s precision
    history = status_of(k8s, slow_shop, "early-end")["history"][-1]
    assert [k.get("recoveredAfterSeconds") for k in history["kills"] if k["result"] == "Killed"] == [recorded]


def test_two_experiments_racing_on_one_workload_never_add_up_past_the_cap(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    slow_shop: str,
    isolated_policies: list[str],
) -> None:
    create_policy(k8s, f"cap-{slow_shop}", scoped_policy(slow_shop, maxPercentage=40))
    isolated_policies.append(f"cap-{slow_shop}")
    apply_yaml(
        control_plane,
        experiment_yaml("racer-a", mode="fixed", value=2) + "---\n" + experiment_yaml("racer-b", mode="fixed", value=2),
        slow_shop,
    )
    results = [wait_for_phase(k8s, slow_shop, name, "Completed", timeout=60) for name in ("racer-a", "racer-b")]
    killed = [k for status in results for k in kills(status, "Killed")]
    decisions = [(k["result"], k.get("message", "")) for status in results for k in kills(status)]
    assert len(killed) == 2, decisions  # exactly what 40 % of 5 allows, whoever asked first
    # The other two were stopped by the cap, or were the very pods the other experiment had just taken.
    assert len(decisions) == 4 and {result for result, _ in decisions} <= {"Killed", "Capped", "Gone"}, decisions


def test_protected_pods_are_never_touched(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    shop: str,
    isolated_policies: list[str],
) -> None:
    protected = ready_pods(k8s, shop, "checkout")[0]
    client.CoreV1Api(k8s).patch_namespaced_pod(
        protected.metadata.name, shop, {"metadata": {"labels": {"chaosguard.dev/protected": "true"}}}
    )
    create_policy(
        k8s,
        f"protect-{shop}",
        scoped_policy(shop, protectedSelector={"matchLabels": {"chaosguard.dev/protected": "true"}}),
    )
    isolated_policies.append(f"protect-{shop}")
    apply_yaml(control_plane, experiment_yaml("all-but-protected", mode="all"), shop)
    status = wait_for_phase(k8s, shop, "all-but-protected", "Completed", timeout=60)
    killed = kills(status, "Killed")
    assert len(killed) == 4
    assert protected.metadata.uid not in {k["uid"] for k in killed}
    assert protected.metadata.uid in uids(k8s, shop)


@pytest.mark.parametrize(
    ("policy", "experiment", "rule"),
    [
        ({"excludedNamespaces": ["{ns}"]}, {}, "excluded-namespace"),
        ({"allowedActions": ["latency"]}, {}, "allowed-actions"),
        ({"maxDuration": "1m"}, {"duration": "5m"}, "max-duration"),
        ({"maxPercentage": 30}, {"mode": "all"}, "max-percentage"),
        ({"requireSteadyState": True}, {}, "require-steady-state"),
        ({"suspend": True}, {}, "suspended"),
        ({"blackouts": [{"start": "{hour_ago}", "end": "{in_an_hour}", "reason": "holiday freeze"}]}, {}, "blackout"),
        ({"windows": [{"cron": "{two_hours_ago_cron}", "duration": "1h"}]}, {}, "window"),
    ],
)
def test_policy_refusals_reject_with_the_rule_and_the_fix(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    shop: str,
    isolated_policies: list[str],
    policy: dict[str, Any],
    experiment: dict[str, Any],
    rule: str,
) -> None:
    create_policy(k8s, f"refuse-{shop}", scoped_policy(shop, **fill_placeholders(policy, shop)))
    isolated_policies.append(f"refuse-{shop}")
    before = uids(k8s, shop)
    apply_yaml(control_plane, experiment_yaml("refused", **experiment), shop)
    status = wait_for_phase(k8s, shop, "refused", "Rejected", timeout=30)
    assert f"REFUSED {rule}:" in status["message"], status["message"]
    admitted = next(c for c in status["conditions"] if c["type"] == "Admitted")
    assert admitted["status"] == "False"
    event = wait_for_event(k8s, shop, "refused", admitted["reason"])
    assert rule in event.message
    assert uids(k8s, shop) == before


def test_namespace_must_opt_in_when_policy_requires_it(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    shop: str,
    isolated_policies: list[str],
) -> None:
    client.CoreV1Api(k8s).patch_namespace(shop, {"metadata": {"labels": {"chaosguard.dev/chaos": None}}})
    create_policy(k8s, f"optin-{shop}", scoped_policy(shop, requireNamespaceOptIn=True))
    isolated_policies.append(f"optin-{shop}")
    apply_yaml(control_plane, experiment_yaml("not-opted-in"), shop)
    status = wait_for_phase(k8s, shop, "not-opted-in", "Rejected", timeout=30)
    assert "REFUSED namespace-opt-in" in status["message"]
    assert f"kubectl label namespace {shop} chaosguard.dev/chaos=allowed" in status["message"]


def test_builtin_exclusions_hold_with_no_policy(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess
) -> None:
    apply_yaml(control_plane, experiment_yaml("system-kill"), "kube-public")
    try:
        status = wait_for_phase(k8s, "kube-public", "system-kill", "Rejected", timeout=30)
        assert "REFUSED builtin-excluded-namespace" in status["message"]
    finally:
        control_plane.kubectl("delete", "chaosexperiment", "system-kill", "-n", "kube-public", "--wait=false")


def test_invalid_spec_the_api_server_cannot_judge_is_rejected_by_the_operator(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    bad_cron = experiment_yaml("bad-cron") + "  schedule:\n    cron: every tuesday\n"
    apply_yaml(control_plane, bad_cron, shop)
    status = wait_for_phase(k8s, shop, "bad-cron", "Rejected", timeout=30)
    assert "spec.schedule.cron" in status["message"] and "5-field cron" in status["message"]


def test_too_many_concurrent_experiments_wait_their_turn(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    shop: str,
    isolated_policies: list[str],
) -> None:
    create_policy(k8s, f"one-at-a-time-{shop}", scoped_policy(shop, maxConcurrentExperiments=1))
    isolated_policies.append(f"one-at-a-time-{shop}")
    apply_yaml(control_plane, experiment_yaml("first", duration="8s", dry_run=True), shop)
    wait_for_phase(k8s, shop, "first", "Running", timeout=30)
    apply_yaml(control_plane, experiment_yaml("second", duration="2s", dry_run=True), shop)
    waiting = wait_for(
        lambda: "max-concurrent-experiments" in status_of(k8s, shop, "second").get("message", ""),
        timeout=30,
        what="the second experiment to wait for the first",
        describe=lambda: str(status_of(k8s, shop, "second")),
    )
    assert waiting
    assert status_of(k8s, shop, "first")["phase"] == "Running"
    first = wait_for_phase(k8s, shop, "first", "Completed", timeout=60)
    second = wait_for_phase(k8s, shop, "second", "Completed", timeout=60)
    assert second["lastRun"]["startedAt"] >= first["lastRun"]["finishedAt"]


def test_suspending_policy_aborts_a_running_experiment(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    shop: str,
    isolated_policies: list[str],
) -> None:
    name = f"switch-{shop}"
    create_policy(k8s, name, scoped_policy(shop))
    isolated_policies.append(name)
    apply_yaml(control_plane, experiment_yaml("long-run", duration="2m", interval="2s"), shop)
    wait_for(
        lambda: (status_of(k8s, shop, "long-run").get("currentRun") or {}).get("killsTotal", 0) >= 1,
        timeout=30,
        what="the first kill",
    )
    client.CustomObjectsApi(k8s).patch_cluster_custom_object(
        "chaosguard.dev", "v1alpha1", "chaospolicies", name, {"spec": {"suspend": True}}
    )
    suspended_at = datetime.now(UTC)
    status = wait_for_phase(k8s, shop, "long-run", "Aborted", timeout=15)
    assert "REFUSED suspended" in status["message"]
    assert status["lastRun"]["reason"] == "Suspended"
    late = [k for k in kills(status, "Killed") if datetime.fromisoformat(k["at"]) > suspended_at]
    assert late == [], late


def test_restarted_operator_finishes_the_run_without_double_or_late_kills(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, (EXAMPLES / "pod-kill-interval.yaml").read_text(), shop)
    wait_for(
        lambda: (status_of(k8s, shop, "checkout-rolling-kill").get("currentRun") or {}).get("killsTotal", 0) >= 2,
        timeout=30,
        what="two kills before the restart",
    )
    chaos_operator.kill()
    chaos_operator.start()
    status = wait_for_phase(k8s, shop, "checkout-rolling-kill", "Completed", timeout=90)
    run = status["lastRun"]
    deadline = datetime.fromisoformat(run["deadline"])
    killed = kills(status, "Killed")
    assert len(killed) >= 3, run
    assert len({k["uid"] for k in killed}) == len(killed), "a pod was killed twice"
    assert all(datetime.fromisoformat(k["at"]) < deadline for k in run["kills"]), run["kills"]
    assert len({k["round"] for k in killed}) == len(killed), "a round killed twice"
    wait_for_ready_pods(k8s, shop, "checkout", 5)


# --------------------------------------------------------------------------- helpers


def fill_placeholders(policy: dict[str, Any], namespace: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    hour = (now.hour - 2) % 24
    values = {
        "{ns}": namespace,
        "{hour_ago}": (now.replace(microsecond=0) - timedelta(hours=1)).isoformat(),
        "{in_an_hour}": (now.replace(microsecond=0) + timedelta(hours=1)).isoformat(),
        "{two_hours_ago_cron}": f"0 {hour} * * *",
    }

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return values.get(value, value)
        if isinstance(value, list):
            return [fill(item) for item in value]
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        return value

    filled: dict[str, Any] = fill(policy)
    return filled


def test_a_disruption_budget_refusal_is_a_skip_never_a_forced_kill(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "checkout"},
        "spec": {"minAvailable": 5, "selector": {"matchLabels": {"app": "checkout"}}},
    }
    client.PolicyV1Api(k8s).create_namespaced_pod_disruption_budget(shop, budget)

    def budget_sees_five() -> bool:
        observed = client.PolicyV1Api(k8s).read_namespaced_pod_disruption_budget("checkout", shop).status
        return observed is not None and observed.current_healthy == 5

    wait_for(budget_sees_five, timeout=30, what="the disruption budget to see 5 healthy pods")
    before = uids(k8s, shop)
    apply_yaml(control_plane, experiment_yaml("budgeted", mode="fixed", value=2), shop)
    status = wait_for_phase(k8s, shop, "budgeted", "Completed", timeout=60)
    results = [k["result"] for k in kills(status)]
    assert results == ["SkippedDisruptionBudget", "SkippedDisruptionBudget"], kills(status)
    assert "PodDisruptionBudget" in kills(status)[0]["message"]
    assert uids(k8s, shop) == before


def test_plain_delete_when_budgets_are_not_respected_and_the_min_available_floor(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, slow_shop: str
) -> None:
    manifest = experiment_yaml("floor", mode="fixed", value=3).replace(
        "podKill: {gracePeriodSeconds: 1}",
        "podKill: {gracePeriodSeconds: 1, respectDisruptionBudgets: false, minAvailable: '60%'}",
    )
    apply_yaml(control_plane, manifest, slow_shop)
    status = wait_for_phase(k8s, slow_shop, "floor", "Completed", timeout=90)
    results = sorted(k["result"] for k in kills(status))
    # 60 % of 5 must stay Ready: two kills leave 3, the third would leave 2.
    assert results == ["Killed", "Killed", "SkippedMinAvailable"], kills(status)
    assert {k["method"] for k in kills(status, "Killed")} == {"delete"}
    assert "min-available" in kills(status, "SkippedMinAvailable")[0]["message"]


def test_an_end_whose_verdict_was_written_but_not_its_history_is_finished_by_the_next_operator(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    """An end is two writes (the verdict, then history and conditions). The status the first leaves, had the
    operator died before the second, is made here by hand while no operator runs; the next one completes it."""
    apply_yaml(control_plane, experiment_yaml("two-writes", duration="3s", interval="1s"), shop)
    ended = wait_for_phase(k8s, shop, "two-writes", "Completed", timeout=60)
    run_id = ended["lastRun"]["id"]
    chaos_operator.stop()
    try:
        unfinished = [c for c in ended["conditions"] if c["type"] != "Finished"]
        client.CustomObjectsApi(k8s).patch_namespaced_custom_object_status(
            "chaosguard.dev",
            "v1alpha1",
            shop,
            "chaosexperiments",
            "two-writes",
            {"status": {"history": [], "conditions": unfinished}},
        )
        assert status_of(k8s, shop, "two-writes")["history"] == []
    finally:
        chaos_operator.start()

    def finished() -> dict[str, Any] | None:
        status = status_of(k8s, shop, "two-writes")
        done = [c for c in status.get("conditions") or [] if c["type"] == "Finished" and c["status"] == "True"]
        return status if done and [past["id"] for past in status.get("history") or []] == [run_id] else None

    status = wait_for(finished, timeout=30, what="the next operator to put the run into history")
    assert status["lastRun"]["id"] == run_id and status["phase"] == "Completed"
