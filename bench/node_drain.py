"""Time from a node drain's first eviction to the evicted pods' workload back at full Ready strength, on
kwok nodes of the local control plane with the operator running as a process.

Two kwok nodes carry a 4-replica Deployment (pause pods, no PodDisruptionBudget, no ChaosPolicy: all four
are evicted at once); each run applies examples/node-drain.yaml aimed at the node that carries the pods,
which move to the other one. The figure of a run is read from the operator's own record, as `chaosguard
report` shows it: the last evicted pod's recovery moment (its eviction time plus its recoveredAfterSeconds,
dated by the replacement pods' own Ready transitions, runtime.recovery) minus the first eviction's time.
kwok makes a replacement Ready as soon as it is bound, so the figure is the control plane's own path
(eviction, ReplicaSet controller, scheduler, kwok, the operator's watch) with no container start-up."""

from __future__ import annotations

import statistics
import tempfile
import uuid
from datetime import datetime
from pathlib import Path

from kubernetes import client

from localcluster.controlplane import ControlPlane, default_bin_dir
from localcluster.kwoknodes import Nodes, deploy_pinned
from localcluster.operator import OperatorProcess, install_crds, signing_key_file, status_of, wait_for_phase

RUNS = 10
REPLICAS = 4
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node-drain.yaml"
DRAINABLE = "chaosguard.dev/drainable"


def evict_to_recovered(status: dict[str, object]) -> float:
    run = status.get("lastRun")
    assert isinstance(run, dict), status
    evicted = [kill for kill in run["kills"] if kill["result"] == "Killed"]
    assert len(evicted) == REPLICAS and all(kill["recoveredAfterSeconds"] is not None for kill in evicted), run
    starts = [datetime.fromisoformat(kill["at"]) for kill in evicted]
    backs = [start.timestamp() + kill["recoveredAfterSeconds"] for start, kill in zip(starts, evicted, strict=True)]
    return max(backs) - min(start.timestamp() for start in starts)


def run() -> dict[str, tuple[float, str]]:
    workdir = Path(tempfile.mkdtemp(prefix="chaosguard-bench-"))
    figures: list[float] = []
    with ControlPlane(workdir, default_bin_dir()) as plane:
        install_crds(plane)
        api = plane.api_client()
        core = client.CoreV1Api(api)
        operator_namespace = f"chaosguard-{uuid.uuid4().hex[:6]}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=operator_namespace)))
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="bench")))
        nodes = Nodes(api)
        carrier = nodes.add("a")
        deploy_pinned(api, "bench", nodes, REPLICAS)
        spare = nodes.add("b")
        operator = OperatorProcess(
            plane.kubeconfig,
            workdir / "operator.log",
            {"CHAOSGUARD_NAMESPACE": operator_namespace},
            args=["--signing-key-file", str(signing_key_file(plane.kubeconfig))],
        ).start()
        try:
            for index in range(RUNS):
                core.patch_node(carrier, {"metadata": {"labels": {DRAINABLE: "true"}}})
                core.patch_node(spare, {"metadata": {"labels": {DRAINABLE: None}}})
                name = f"drain-{index}"
                text = EXAMPLE.read_text().replace("name: checkout-node-drain", f"name: {name}")
                plane.kubectl("apply", "-n", "bench", "-f", "-", input=text.replace("duration: 30s", "duration: 3s"))
                wait_for_phase(api, "bench", name, "Completed", timeout=90)
                figures.append(evict_to_recovered(status_of(api, "bench", name)))
                plane.kubectl("delete", "chaosexperiment", name, "-n", "bench")
                carrier, spare = spare, carrier
        finally:
            operator.stop()
    print(
        f"# node_drain_evict_to_recovered: {RUNS} drains of a {REPLICAS}-pod node (kwok); median "
        f"{statistics.median(figures):.3f}s, min {min(figures):.3f}s, max {max(figures):.3f}s"
    )
    return {"node_drain_evict_to_recovered_p50": (statistics.median(figures), "s")}
