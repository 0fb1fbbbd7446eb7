"""container-restart's pure decisions: which pods are refused, as whom the signaller runs, and what the
kubelet's reports say became of a restart. (The script itself runs in a real PID namespace on the real
node: tests/e2e/test_container_restart.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from chaosguard.decisions.container_restart import (
    ACT_WITHIN_SECONDS,
    Outcome,
    SignallerExit,
    act_by,
    grace_seconds,
    judge,
    restart_refusal,
    signaller_command,
    signaller_security_context,
)


def pod(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"uid": "u1"},
        "spec": {"containers": [{"name": "app"}, {"name": "proxy"}], **spec},
        "status": {
            "containerStatuses": [
                {"name": "app", "restartCount": 2, "state": {"running": {"startedAt": "2026-12-07T00:00:00Z"}}},
                {"name": "proxy", "restartCount": 0, "state": {"running": {}}},
            ]
        },
    }
    return body


@pytest.mark.parametrize(
    ("spec", "container", "words"),
    [
        ({"restartPolicy": "Never"}, "app", "restartPolicy is Never"),
        ({"restartPolicy": "OnFailure"}, "app", "not after an exit 0 on SIGTERM"),
        ({"shareProcessNamespace": True}, "app", "shareProcessNamespace"),
        ({}, "db", "the pod has no container 'db' (its containers: app, proxy)"),
    ],
)
def test_pods_that_would_not_bring_the_container_back_are_refused(
    spec: dict[str, Any], container: str, words: str
) -> None:
    refusal = restart_refusal(pod(**spec), container)
    assert refusal is not None and words in refusal


def test_a_running_container_of_an_always_pod_may_be_restarted_and_a_waiting_one_not() -> None:
    assert restart_refusal(pod(restartPolicy="Always"), "proxy") is None
    waiting = pod()
    waiting["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    assert "is not running now" in str(restart_refusal(waiting, "app"))


def test_the_signaller_runs_as_the_containers_own_uid_with_no_capability_else_root_with_kill_alone() -> None:
    own = pod(securityContext={"runAsUser": 1000, "runAsGroup": 3000})
    own["spec"]["containers"][0]["securityContext"] = {"runAsUser": 65532}
    context = signaller_security_context(own, "app")
    assert context["runAsUser"] == 65532 and context["runAsGroup"] == 3000 and context["runAsNonRoot"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"} and context["allowPrivilegeEscalation"] is False
    assert signaller_security_context(own, "proxy")["runAsUser"] == 1000  # the pod's uid
    unnamed = signaller_security_context(pod(), "app")
    assert unnamed["runAsUser"] == 0 and unnamed["capabilities"] == {"drop": ["ALL"], "add": ["KILL"]}


def test_the_signaller_acts_only_briefly_and_never_past_the_deadline() -> None:
    assert act_by(1000.0, 5000.0) == 1000 + ACT_WITHIN_SECONDS
    assert act_by(1000.0, 1003.5) == 1003
    assert grace_seconds(pod()) == 30 and grace_seconds(pod(terminationGracePeriodSeconds=5)) == 5
    assert signaller_command(1015, 5)[-2:] == ["1015", "5"]
    with pytest.raises(ValueError):
        signaller_command(1015, 100000)


def restarted(pod_body: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    app = pod_body["status"]["containerStatuses"][0]
    app["restartCount"] = 3
    app["lastState"] = {"terminated": {"exitCode": 143, "reason": "Error"}}
    app["state"] = state
    return pod_body


def test_a_restart_is_done_only_once_restart_count_rose_and_the_container_runs_again() -> None:
    running = restarted(pod(), {"running": {"startedAt": "2026-12-07T00:01:00Z"}})
    verdict = judge(running, "u1", "app", {}, 2)
    assert verdict.outcome is Outcome.RESTARTED and verdict.running_since == "2026-12-07T00:01:00Z"
    assert "restartCount 2 → 3" in verdict.message and "exit code 143" in verdict.message
    backing_off = restarted(pod(), {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}})
    assert judge(backing_off, "u1", "app", {}, 2).outcome is Outcome.PENDING
    assert judge(pod(), "u1", "app", {}, 2).outcome is Outcome.PENDING  # the signaller has not reported
    assert judge(None, "u1", "app", {}, 2).outcome is Outcome.FAILED
    assert judge(pod(), "other", "app", {}, 2).outcome is Outcome.FAILED  # a new pod under the same name


def test_the_signallers_own_reasons_fail_the_restart_and_its_death_by_the_namespace_does_not() -> None:
    said = {"exitCode": int(SignallerExit.NO_HANDLER), "message": "not signalled: PID 1 (sh, uid 0) has no SIGTERM"}
    verdict = judge(pod(), "u1", "app", {"terminated": said}, 2)
    assert verdict.outcome is Outcome.FAILED and verdict.message.startswith("the app ignores SIGTERM")
    drained = {"exitCode": int(SignallerExit.STILL_RUNNING), "message": "not restarted: PID 1 (sh) handled"}
    assert "did not exit on SIGTERM" in judge(pod(), "u1", "app", {"terminated": drained}, 2).message
    # Killed with the namespace (PID 1 exited) after saying it was sending: the kubelet's report is still to come.
    killed = {"exitCode": 137, "message": "sending SIGTERM to PID 1 (sh, uid 0) at 1; waiting up to 30s"}
    assert judge(pod(), "u1", "app", {"terminated": killed}, 2).outcome is Outcome.PENDING
    assert judge(pod(), "u1", "app", {"terminated": {"exitCode": 1, "reason": "Error"}}, 2).outcome is Outcome.FAILED
