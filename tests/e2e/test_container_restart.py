"""container-restart of real containers, with the operator running from its image under the installed RBAC,
in a namespace that enforces Pod Security restricted.

The target's PID 1 is a shell that traps SIGTERM, logs it and exits, as a well-behaved server does (the e2e
app, tests/e2e/app, traps SIGTERM but drains until the kubelet's SIGKILL, so it would never be restarted
this way; a shell with no trap at all is the app that ignores SIGTERM). The test sees from the kubelet's own
reports and the container's previous log: SIGTERM reached the app, the same pod (UID) runs the container
again with restartCount + 1, the policy's cap held a second pod back while the first restarted, an abort
ends a run with nothing left running in the pod, and an app that ignores SIGTERM fails the run with the
reason and is left running. It prints the time from the operator's call to the container Running again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import yaml

from localcluster.wait import wait_for
from tests.e2e.conftest import APP_IMAGE
from tests.e2e.test_latency import experiment_status, finished
from tests.support.example_flow import EXAMPLES, Kubectl, event_reasons

# PID 1 with a SIGTERM handler that exits: the signal reaches it, and the kubelet starts the container again.
HANDLES_TERM = """mkdir -p /tmp/www && echo ok >/tmp/www/ready
read -r up _ </proc/uptime; echo "started at uptime $up"
trap 'read -r up _ </proc/uptime; echo "received SIGTERM at uptime $up"; exit 143' TERM
httpd -f -p 8080 -h /tmp/www &
while :; do sleep 1 & wait $!; done"""
# PID 1 with no handler: the kernel drops SIGTERM sent to a namespace's init from inside the namespace.
IGNORES_TERM = """mkdir -p /tmp/www && echo ok >/tmp/www/ready
httpd -f -p 8080 -h /tmp/www &
while :; do sleep 1; done"""


def workload(name: str, script: str) -> str:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 4,  # the chart's default policy allows 25 % of a workload down: one pod
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    # Pod Security restricted: the signaller runs as this uid with no capability and passes too.
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "app",
                            "image": APP_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            **({"command": ["/bin/sh", "-c", script]} if script else {}),
                            "env": [{"name": "READY_AFTER_SECONDS", "value": "0"}],
                            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
                        }
                    ],
                },
            },
        },
    }
    return json.dumps(deployment)


def experiment(name: str, app: str, *, value: int = 1, duration: str = "40s") -> str:
    text = (EXAMPLES / "container-restart.yaml").read_text()
    body = yaml.safe_load(text)
    body["metadata"]["name"] = name
    body["spec"]["target"] = {"selector": {"matchLabels": {"app": app}}, "mode": "fixed", "value": value}
    body["spec"]["duration"] = duration
    return json.dumps(body)


def pods(kubectl: Kubectl, namespace: str, app: str) -> dict[str, dict[str, Any]]:
    items = json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"app={app}", "-o", "json"))["items"]
    return {p["metadata"]["uid"]: p for p in items if not p["metadata"].get("deletionTimestamp")}


def app_status(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(next(s for s in pod["status"]["containerStatuses"] if s["name"] == "app"))


def faults(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    status = experiment_status(kubectl, namespace, name)
    return list((status.get("currentRun") or status.get("lastRun") or {}).get("faults", []))


def restricted_namespace(kubectl: Kubectl, namespace: str, *apps: tuple[str, str]) -> None:
    kubectl("create", "namespace", namespace)
    kubectl(
        "label", "namespace", namespace, "chaosguard.dev/chaos=allowed", "pod-security.kubernetes.io/enforce=restricted"
    )
    for app, script in apps:
        kubectl("apply", "-n", namespace, "-f", "-", input=workload(app, script))
    for app, _ in apps:
        kubectl("rollout", "status", "-n", namespace, f"deployment/{app}", "--timeout=180s")


@pytest.fixture
def container_restart_allowed(kubectl: Kubectl) -> Iterator[None]:
    """The shipped default policy allows pod-kill and latency only: a cluster owner adds container-restart
    (and the test takes it out again, so later tests see the policy as shipped)."""
    kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))
    shipped = json.loads(kubectl("get", "chaospolicy", "default", "-o", "json"))["spec"]["allowedActions"]
    allowed = {"spec": {"allowedActions": [*shipped, "container-restart"]}}
    kubectl("patch", "chaospolicy", "default", "--type=merge", "-p", json.dumps(allowed))
    yield
    kubectl("patch", "chaospolicy", "default", "--type=merge", "-p", json.dumps({"spec": {"allowedActions": shipped}}))


def to_wall(uptime: float) -> float:
    """A kernel uptime reading as unix time (this machine's kernel runs the node's containers)."""
    with open("/proc/uptime") as clock:
        now_uptime, now = float(clock.read().split()[0]), time.time()
    return now - (now_uptime - uptime)


def unix(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@pytest.mark.usefixtures("installed_operator", "container_restart_allowed")
def test_container_restart_restarts_the_container_in_the_same_pod_under_the_cap_and_an_abort_ends_it(
    kubectl: Kubectl, e2e_namespace: str
) -> None:
    restricted_namespace(kubectl, e2e_namespace, ("handles", HANDLES_TERM))
    before = pods(kubectl, e2e_namespace, "handles")

    # Two pods asked for, one allowed: the first one's restart in flight counts as a pod down.
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=experiment("restart-two", "handles", value=2))
    seen: dict[str, float] = {}

    def restarted() -> dict[str, Any] | None:
        for uid, pod in pods(kubectl, e2e_namespace, "handles").items():
            status = app_status(pod)
            if status["restartCount"] > app_status(before[uid])["restartCount"] and "running" in status["state"]:
                seen.setdefault(uid, time.time())
                return pod
        return None

    pod = wait_for(restarted, timeout=90, interval=0.1, what="a container of handles restarted")
    uid = pod["metadata"]["uid"]
    running_again_at = seen[uid]
    done = wait_for(
        lambda: [f for f in faults(kubectl, e2e_namespace, "restart-two") if f["state"] == "Removed"],
        timeout=60,
        what="the restart recorded as done",
        describe=lambda: yaml.safe_dump(experiment_status(kubectl, e2e_namespace, "restart-two"))[:4000],
    )
    (record,) = done
    dump = yaml.safe_dump(experiment_status(kubectl, e2e_namespace, "restart-two"))[:4000]
    assert record["uid"] == uid and record["targetContainer"] == "app", dump
    assert "exited on SIGTERM with exit code 143" in record["message"] and "restartCount 0 → 1" in record["message"]
    # The same pod, its container started again by the kubelet; SIGTERM is what the app received.
    after = pods(kubectl, e2e_namespace, "handles")
    assert set(after) == set(before), "no pod was replaced"
    assert app_status(after[uid])["restartCount"] == app_status(before[uid])["restartCount"] + 1
    assert app_status(after[uid])["lastState"]["terminated"]["exitCode"] == 143
    previous = kubectl("logs", "-n", e2e_namespace, pod["metadata"]["name"], "-c", "app", "--previous")
    assert "received SIGTERM at uptime " in previous, (previous, app_status(after[uid]))
    others = [u for u in after if u != uid]
    assert all(app_status(after[u])["restartCount"] == app_status(before[u])["restartCount"] for u in others)
    # The signaller passed Pod Security restricted as the container's uid, with no capability.
    (signaller,) = after[uid]["spec"]["ephemeralContainers"]
    assert signaller["targetContainerName"] == "app" and signaller["securityContext"]["runAsUser"] == 65532
    assert signaller["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # The policy's cap (25 % of 4 pods) held the second chosen pod back.
    records = faults(kubectl, e2e_namespace, "restart-two")
    refused = [f for f in records if f["state"] == "Failed"]
    assert len(records) == 2 and len(refused) == 1 and "REFUSED max-percentage" in refused[0]["message"], dump
    # The app's own lines carry the kernel's uptime clock (the same for every container of this kernel, the
    # node's and kind's alike): when SIGTERM reached it, and when its next start began.
    current = kubectl("logs", "-n", e2e_namespace, pod["metadata"]["name"], "-c", "app")
    assert "started at uptime " in current, (current, app_status(after[uid]))
    sigterm_at = to_wall(float(previous.split("received SIGTERM at uptime ")[1].split()[0]))
    started_at = to_wall(float(current.split("started at uptime ")[1].split()[0]))
    called_at = unix(record["injectedAt"])
    assert called_at < sigterm_at < started_at < running_again_at + 1, (called_at, sigterm_at, started_at)
    print(
        f"\ncontainer-restart: operator's call -> SIGTERM in the app {sigterm_at - called_at:.2f}s, "
        f"-> the app started again {started_at - called_at:.2f}s, "
        f"-> seen Running by the API {running_again_at - called_at:.2f}s"
    )

    status = finished(kubectl, e2e_namespace, "restart-two")
    assert status["phase"] == "Completed", yaml.safe_dump(status)[:4000]
    assert {"ContainerRestartSignalled", "ContainerRestarted", "ContainerRestartSkipped"} <= set(
        event_reasons(kubectl, e2e_namespace, "ChaosExperiment", "restart-two")
    )

    # The same container again, minutes later: the kubelet's back-off holds its next start (CrashLoopBackOff).
    name = pod["metadata"]["name"]
    kubectl("label", "pod", "-n", e2e_namespace, name, "again=yes")
    body = json.loads(experiment("restart-again", "handles"))
    body["spec"]["target"]["selector"]["matchLabels"]["again"] = "yes"
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=json.dumps(body))
    (again,) = wait_for(
        lambda: [f for f in faults(kubectl, e2e_namespace, "restart-again") if f["state"] == "Removed"],
        timeout=120,
        what="the second restart recorded as done",
        describe=lambda: yaml.safe_dump(experiment_status(kubectl, e2e_namespace, "restart-again"))[:4000],
    )
    assert again["uid"] == uid and "restartCount 1 → 2" in again["message"], again
    assert "exited on SIGTERM with exit code 143" in again["message"], again
    # The hold from the kubelet's own report (whole seconds), not from the app's log lines: one CI run read a
    # previous log without its last line here (2026-12-07, not seen again in 6 runs beside two busy loops
    # nor in 128 restarts of scratch pods), and exit code 143 of PID 1 already says its handler ran.
    status = app_status(pods(kubectl, e2e_namespace, "handles")[uid])
    held = unix(status["state"]["running"]["startedAt"]) - unix(status["lastState"]["terminated"]["finishedAt"])
    print(f"container-restart: a second restart of the same container: exited -> started again {held:.0f}s")
    finished(kubectl, e2e_namespace, "restart-again")

    # An abort: the run ends at once; nothing of chaosguard's keeps running in the pod.
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=experiment("restart-abort", "handles", duration="3m"))
    wait_for(
        lambda: faults(kubectl, e2e_namespace, "restart-abort"),
        timeout=60,
        what="the second run's restart under way",
    )
    kubectl("annotate", "-n", e2e_namespace, "chaosexperiment", "restart-abort", "chaosguard.dev/abort=game over")
    status = finished(kubectl, e2e_namespace, "restart-abort", timeout=30)
    assert status["phase"] == "Aborted", yaml.safe_dump(status)[:4000]
    assert all(f["state"] in ("Removed", "Failed") for f in faults(kubectl, e2e_namespace, "restart-abort"))

    def all_back() -> dict[str, dict[str, Any]] | None:
        current = pods(kubectl, e2e_namespace, "handles")
        ephemeral_done = all(
            "terminated" in s["state"]
            for p in current.values()
            for s in p["status"].get("ephemeralContainerStatuses", [])
        )
        ready = all("running" in app_status(p)["state"] and app_status(p)["ready"] for p in current.values())
        return current if ephemeral_done and ready else None

    current = wait_for(all_back, timeout=60, what="every container running again and every signaller ended")
    assert set(current) == set(before), "no pod was replaced"

    for experiment_name in ("restart-two", "restart-again", "restart-abort"):
        kubectl("delete", "-n", e2e_namespace, "chaosexperiment", experiment_name, "--timeout=60s")
    assert set(pods(kubectl, e2e_namespace, "handles")) == set(before)


@pytest.mark.usefixtures("installed_operator", "container_restart_allowed")
def test_an_app_that_ignores_sigterm_is_not_restarted_and_the_run_fails_saying_why(
    kubectl: Kubectl, e2e_namespace: str
) -> None:
    restricted_namespace(kubectl, e2e_namespace, ("ignores", IGNORES_TERM), ("drains", ""))
    before = pods(kubectl, e2e_namespace, "ignores")
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=experiment("restart-ignored", "ignores"))
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=experiment("restart-drains", "drains"))
    status = finished(kubectl, e2e_namespace, "restart-ignored", timeout=90)
    dump = yaml.safe_dump(status)[:4000]
    assert status["phase"] == "Failed" and status["lastRun"]["reason"] == "RestartFailed", dump
    (record,) = status["lastRun"]["faults"]
    assert record["state"] == "Failed", dump
    assert "the app ignores SIGTERM (PID 1 has no handler for it)" in record["message"], dump
    assert "(signaller exit 11)" in record["message"] and "PID 1 (sh, uid 65532)" in record["message"], dump
    assert "ContainerRestartFailed" in event_reasons(kubectl, e2e_namespace, "ChaosExperiment", "restart-ignored")
    after = pods(kubectl, e2e_namespace, "ignores")
    assert set(after) == set(before)
    assert all(app_status(p)["restartCount"] == 0 and app_status(p)["ready"] for p in after.values()), "left running"

    # The e2e app (tests/e2e/app) handles SIGTERM but drains until the kubelet's SIGKILL: it gets the signal,
    # stops being Ready, and still runs the pod's grace period later, so it is not restarted either.
    status = finished(kubectl, e2e_namespace, "restart-drains", timeout=90)
    dump = yaml.safe_dump(status)[:4000]
    assert status["phase"] == "Failed" and status["lastRun"]["reason"] == "RestartFailed", dump
    (record,) = status["lastRun"]["faults"]
    assert "the app did not exit on SIGTERM within the pod's grace period" in record["message"], dump
    assert "handled SIGTERM but still ran 5s later" in record["message"] and "(signaller exit 12)" in record["message"]
    (drained,) = [p for p in pods(kubectl, e2e_namespace, "drains").values() if p["metadata"]["uid"] == record["uid"]]
    assert app_status(drained)["restartCount"] == 0
    log = kubectl("logs", "-n", e2e_namespace, drained["metadata"]["name"], "-c", "app")
    assert "received SIGTERM" in log and "draining" in log, log
