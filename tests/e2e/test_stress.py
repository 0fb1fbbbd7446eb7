"""The stress fault on the real node, with the operator running from its image under the shipped RBAC,
in a namespace that enforces Pod Security restricted.

`kubectl apply` of a guarded CPU stress puts stress-ng (the injector image's) into one pod as an
unprivileged ephemeral container: the pod's own cgroup shows the CPU use going up (read on this
machine, `localcluster.pod_cpu`). Then the SLI breaches: the run is aborted, the clean-up container
creates the stop file in the pod's shared /dev/shm, the stressor reports that it stopped, the pod's
CPU use falls back, and nothing of chaosguard's is left running in the pod, whose app never restarted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.pod_cpu import PodCgroup, pod_cgroup, pod_memory_bytes
from localcluster.prometheus import MetricsTarget, PrometheusServer, instant_query, prometheus_available
from localcluster.wait import wait_for
from tests.e2e.conftest import APP_IMAGE, E2ECluster, check_ran_from_the_injector_image
from tests.e2e.test_latency import experiment_status
from tests.e2e.test_network_faults import default_policy_restored
from tests.support.example_flow import EXAMPLES, Kubectl, event_reasons

__all__ = ["default_policy_restored"]  # a fixture this module uses

GUARD_INTERVAL = 1.0
BUSY = 0.3  # CPUs: one stress-ng worker at 100 % on this shared 2-core machine shows well above this
IDLE = 0.1  # CPUs: the e2e app at rest
WORKLOAD = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: stressapp}}
spec:
  replicas: 4  # one pod is the target: the shipped default policy allows 40 % of a workload
  selector: {{matchLabels: {{app: stressapp}}}}
  template:
    metadata: {{labels: {{app: stressapp}}}}
    spec:
      terminationGracePeriodSeconds: 2
      securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
        - name: app
          image: {APP_IMAGE}
          imagePullPolicy: IfNotPresent
          env: [{{name: READY_AFTER_SECONDS, value: "0"}}]
          readinessProbe: {{httpGet: {{path: /ready, port: 8080}}, periodSeconds: 1}}
          resources: {{limits: {{memory: 128Mi}}}}
          securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
"""


def stress_experiment(name: str, prometheus_url: str, app: str) -> str:
    return f"""
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: {name}}}
spec:
  action: stress
  stress: {{cpu: {{workers: 1, load: 100}}, memory: {{size: 25%}}}}
  target: {{selector: {{matchLabels: {{app: stressapp}}}}, mode: fixed, value: 1}}
  duration: 3m
  steadyState:
    prometheus: {{url: "{prometheus_url}", timeout: 500ms}}
    interval: {GUARD_INTERVAL:g}s
    conditions:
      - {{name: error-ratio, query: 'demo_error_ratio{{app="{app}"}}', operator: "<", threshold: 0.05}}
"""


def allow_stress(kubectl: Kubectl) -> None:
    """The shipped default policy with stress added to its allowedActions, and a cap on its load."""
    shipped = (EXAMPLES / "policy-default.yaml").read_text()
    assert "allowedActions: [pod-kill, latency]" in shipped
    allowed = shipped.replace("[pod-kill, latency]", "[pod-kill, latency, stress]\n  maxStressLoad: 100")
    kubectl("apply", "-f", "-", input=allowed)


@pytest.fixture
def stress_prometheus(tmp_path: Path) -> Iterator[tuple[MetricsTarget, PrometheusServer]]:
    from localcluster.realnode import NODE_IP

    if not prometheus_available():
        pytest.skip("Debian's prometheus is not installed (make system-deps)")
    with MetricsTarget() as target, PrometheusServer(tmp_path / "prometheus", [target], host=NODE_IP) as server:
        yield target, server


def restricted_stress_target(kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "namespace", namespace)
    kubectl(
        "label", "namespace", namespace, "chaosguard.dev/chaos=allowed", "pod-security.kubernetes.io/enforce=restricted"
    )
    kubectl("apply", "-n", namespace, "-f", "-", input=WORKLOAD)
    kubectl("rollout", "status", "-n", namespace, "deployment/stressapp", "--timeout=120s")
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod", "-l", "app=stressapp", "--timeout=120s")


def pod(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", "pod", name, "-n", namespace, "-o", "json")))


def ephemeral_states(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s["state"] for s in body["status"].get("ephemeralContainerStatuses", [])}


def running_stress(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    """The run's one stress fault, once Active and its stressor running."""

    def ready() -> dict[str, Any] | None:
        faults = (experiment_status(kubectl, namespace, name).get("currentRun") or {}).get("faults", [])
        active = [f for f in faults if f["state"] == "Active"]
        if len(active) != 1:
            return None
        states = ephemeral_states(pod(kubectl, namespace, active[0]["name"]))
        return active[0] if "running" in states.get(active[0]["container"], {}) else None

    return wait_for(
        ready,
        timeout=90,
        interval=0.5,
        what="the stressor to run",
        describe=lambda: yaml.safe_dump(experiment_status(kubectl, namespace, name))[:3000],
    )


def busy_cgroup(uid: str) -> PodCgroup:
    cgroup = pod_cgroup(uid)
    assert cgroup is not None, f"no cgroup of pod {uid} on this machine"
    return cgroup


@pytest.mark.usefixtures("installed_operator", "default_policy_restored")
def test_a_cpu_stress_heats_the_pods_cgroup_and_an_sli_breach_stops_it(
    kubectl: Kubectl,
    e2e_cluster: E2ECluster,
    e2e_namespace: str,
    stress_prometheus: tuple[MetricsTarget, PrometheusServer],
) -> None:
    if not e2e_cluster.real_node:
        pytest.skip("reads the pod's cgroup and runs Prometheus on this machine: only on the real node here")
    target, prometheus = stress_prometheus
    app, query = e2e_namespace, f'demo_error_ratio{{app="{e2e_namespace}"}}'
    target.set_error_ratio(0.001, app=app)
    kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))
    allow_stress(kubectl)
    restricted_stress_target(kubectl, e2e_namespace)

    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=stress_experiment("hot", prometheus.url, app))
    fault = running_stress(kubectl, e2e_namespace, "hot")
    cgroup = busy_cgroup(fault["uid"])
    busy = wait_for(lambda: (rate := cgroup.cpu_rate()) > BUSY and rate, timeout=60, what="the pod's CPU use to go up")
    assert "memory 25%" in fault["impairment"] and f"({32 * 2**20} bytes)" in fault["message"], fault
    # The 32Mi the stressor holds is charged to the pod (the e2e app alone uses a few MiB).
    held = wait_for(
        lambda: (charged := pod_memory_bytes(fault["uid"]) or 0) >= 32 * 2**20 and charged,
        timeout=30,
        what="the pod's memory cgroup to be charged the stressor's 32Mi",
    )
    assert experiment_status(kubectl, e2e_namespace, "hot")["phase"] == "Running"  # guarded, and healthy

    target.set_error_ratio(0.5, app=app)
    wait_for(
        lambda: any(value == 0.5 for _, value in instant_query(prometheus.url, query)),
        timeout=30,
        interval=0.02,
        what="Prometheus to answer the breaching value",
    )
    queryable = time.monotonic()
    status = wait_for(
        lambda: (s := experiment_status(kubectl, e2e_namespace, "hot")).get("phase") == "Aborted" and s,
        timeout=30,
        interval=0.05,
        what="the run to be aborted",
    )
    aborted = time.monotonic() - queryable
    wait_for(lambda: cgroup.cpu_rate(0.2) < IDLE, timeout=30, interval=0.0, what="the pod's CPU use to fall back")
    stopped = time.monotonic() - queryable
    wait_for(
        lambda: (pod_memory_bytes(fault["uid"]) or 0) <= held - 24 * 2**20,
        timeout=30,
        what="the stressor's memory to be given back",
    )
    print(
        f"\n# e2e: stress busy {busy:.2f} CPU, pod memory {held / 2**20:.0f} MiB; "
        f"breach queryable -> Aborted {aborted:.2f} s, -> CPU gone {stopped:.2f} s"
    )

    dump = yaml.safe_dump(status)[:4000]
    run = status["lastRun"]
    assert run["reason"] == "SLIBreached" and run["abort"]["condition"] == "error-ratio", dump
    (removed,) = run["faults"]
    assert removed["state"] == "Removed" and "clear container" in removed["removedBy"], dump
    body = wait_for(
        lambda: (
            (b := pod(kubectl, e2e_namespace, fault["name"]))
            and all("terminated" in s for s in ephemeral_states(b).values())
            and b
        ),
        timeout=30,
        what="every ephemeral container of the pod to have ended",
    )
    states = ephemeral_states(body)
    stressor = states[fault["container"]]["terminated"]
    assert stressor["exitCode"] == 0 and stressor["message"].startswith("stopped: a clean-up container"), states
    (cleaner,) = [s["terminated"] for name, s in states.items() if name.startswith("chaosguard-clear1-")]
    assert cleaner["exitCode"] == 0 and cleaner["message"].startswith("stop requested: /dev/shm/"), states
    assert body["status"]["containerStatuses"][0]["restartCount"] == 0, body["status"]
    # stress-ng came from the stressor image; its clean-up, like every other carrier, from the small injector.
    check_ran_from_the_injector_image(body, stressor=fault["container"])
    reasons = event_reasons(kubectl, e2e_namespace, "ChaosExperiment", "hot")
    assert "StressInjected" in reasons and "SLIBreached" in reasons and "StressRemoved" in reasons, reasons


PAUSABLE = """
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {name: pausable}
spec:
  action: stress
  stress: {cpu: {workers: 1, load: 100}}
  target: {selector: {matchLabels: {app: stressapp}}, mode: fixed, value: 1}
  duration: 3m
"""
PAUSE_WITHIN = 5.0 + 1.0  # the default guard interval + 1 s


def set_paused(kubectl: Kubectl, namespace: str, paused: bool) -> None:
    patch = json.dumps({"spec": {"paused": paused}})
    kubectl("patch", "chaosexperiment", "pausable", "-n", namespace, "--type=merge", "-p", patch)


@pytest.mark.usefixtures("installed_operator", "default_policy_restored")
def test_a_pause_cools_the_pod_and_a_resume_heats_it_again_with_a_stressor_of_its_own(
    kubectl: Kubectl, e2e_cluster: E2ECluster, e2e_namespace: str
) -> None:
    if not e2e_cluster.real_node:
        pytest.skip("reads the pod's cgroup on this machine: only on the real node here")
    kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))
    allow_stress(kubectl)
    restricted_stress_target(kubectl, e2e_namespace)
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=PAUSABLE)
    first = running_stress(kubectl, e2e_namespace, "pausable")
    cgroup = busy_cgroup(first["uid"])
    wait_for(lambda: cgroup.cpu_rate() > BUSY, timeout=60, what="the pod's CPU use to go up")

    asked = time.monotonic()
    set_paused(kubectl, e2e_namespace, True)
    wait_for(lambda: cgroup.cpu_rate(0.2) < IDLE, timeout=30, interval=0.0, what="the pod's CPU use to fall back")
    cooled = time.monotonic() - asked
    run = experiment_status(kubectl, e2e_namespace, "pausable")["currentRun"]
    assert [f["removedBy"].startswith("pause (clear container") for f in run["faults"]] == [True], run["faults"]

    set_paused(kubectl, e2e_namespace, False)
    resumed_at = time.monotonic()
    second = running_stress(kubectl, e2e_namespace, "pausable")
    assert second["container"] == f"{first['container']}-p1" and second["uid"] == first["uid"], second
    # The pause's stop file is still in the pod's /dev/shm: the new stressor watches its own and keeps on.
    wait_for(lambda: cgroup.cpu_rate() > BUSY, timeout=60, what="the pod's CPU use to go up again")
    heated = time.monotonic() - resumed_at
    assert "running" in ephemeral_states(pod(kubectl, e2e_namespace, second["name"]))[second["container"]]

    kubectl("annotate", "chaosexperiment", "pausable", "-n", e2e_namespace, "chaosguard.dev/abort=drill over")
    wait_for(
        lambda: experiment_status(kubectl, e2e_namespace, "pausable").get("phase") == "Aborted",
        timeout=30,
        what="the run to be aborted",
    )
    wait_for(lambda: cgroup.cpu_rate(0.2) < IDLE, timeout=30, interval=0.0, what="the pod's CPU use to fall back")
    print(f"\n# e2e: pause -> pod CPU idle {cooled:.2f} s; resume -> busy again {heated:.2f} s")
    assert cooled <= PAUSE_WITHIN, cooled
    body = wait_for(
        lambda: (
            (b := pod(kubectl, e2e_namespace, first["name"]))
            and all("terminated" in s for s in ephemeral_states(b).values())
            and b
        ),
        timeout=30,
        what="every ephemeral container of the pod to have ended",
    )
    states = {name: state["terminated"] for name, state in ephemeral_states(body).items()}
    for stressor in (first["container"], second["container"]):
        assert states[stressor]["message"].startswith("stopped: a clean-up container"), states
    cleaners = sorted(m["message"] for name, m in states.items() if name.startswith("chaosguard-clear"))
    assert len(cleaners) == 2 and cleaners[1].strip().endswith("-p1"), cleaners  # one stop file per stressor
    assert body["status"]["containerStatuses"][0]["restartCount"] == 0, body["status"]
