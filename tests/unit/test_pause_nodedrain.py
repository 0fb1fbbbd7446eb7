"""A pause of a node-drain, in the records: the drain a resume puts back is a record of its own (replicas
tell a run's faults apart by node and carrier name), still the drain's and under the same run's mark, and
a clean-up from any replica may act on a node's record though a node is in no namespace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from chaosguard.api.models import ChaosExperimentSpec, FaultRecord, FaultState, PauseRecord, RunStatus
from chaosguard.decisions import pause
from chaosguard.decisions.nodes import NodeView, mark_of
from chaosguard.runtime.faults.base import placed_by_run
from chaosguard.runtime.faults.nodedrain import NODE_DRAIN, as_target

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SPEC = ChaosExperimentSpec.model_validate(
    {
        "action": "node-drain",
        "nodeDrain": {"nodeSelector": {"matchLabels": {"pool": "workers"}}, "mode": "one"},
        "target": {"selector": {"matchLabels": {"app": "checkout"}}},
        "duration": "5m",
    }
)
NODE = as_target(NodeView(name="worker-1", uid="n1", labels={"pool": "workers"}, ready=True, unschedulable=False))
NO_HOST = cast(Any, None)  # the record is formed from the run and the spec alone


def run(**fields: Any) -> RunStatus:
    return RunStatus(id="r1", started_at=NOW, deadline=NOW + timedelta(minutes=5), target_namespaces=["shop"], **fields)


def test_the_drain_a_resume_puts_back_is_a_record_of_its_own_under_the_same_mark() -> None:
    first = NODE_DRAIN.record(NO_HOST, SPEC, run(), NODE, 0)
    resumed = run(pauses=[PauseRecord(paused_at=NOW, resumed_at=NOW + timedelta(seconds=5))])
    again = NODE_DRAIN.record(NO_HOST, SPEC, resumed, NODE, 0)
    assert (first.uid, first.container) != (again.uid, again.container)
    assert again.container == "chaosguard-node-drain-r1-p1"
    assert first.kind == again.kind == "Drain"
    assert again.deadline == resumed.deadline  # a pause never extends the fault's life
    # The node's mark names the run, not the carrier: a pause's uncordon and the end's both find it.
    assert mark_of("shop/drain", resumed.id) == mark_of("shop/drain", run().id)


def test_a_drain_taken_out_by_a_pause_is_drained_again_on_resume_and_a_failed_one_is_not() -> None:
    paused = FaultRecord(
        namespace="", name="worker-1", uid="n1", container="chaosguard-node-drain-r1", removed_by="pause"
    )
    by_standby = FaultRecord(
        namespace="",
        name="worker-2",
        uid="n2",
        container="chaosguard-node-drain-r1",
        removed_by="pause (by a standby replica)",
    )
    refused = FaultRecord(
        namespace="", name="worker-3", uid="n3", container="chaosguard-node-drain-r1", state=FaultState.FAILED
    )
    assert pause.counted_records([paused, by_standby, refused]) == [refused]


def test_a_clean_up_acts_on_a_nodes_record_but_never_on_a_pod_outside_the_runs_namespaces() -> None:
    node = FaultRecord(
        namespace="", name="worker-1", uid="n1", container="chaosguard-node-drain-r1", state=FaultState.ACTIVE
    )
    inside = FaultRecord(namespace="shop", name="p", uid="p1", container="chaosguard-latency-r1")
    outside = FaultRecord(namespace="theirs", name="p", uid="p2", container="chaosguard-latency-r1")
    unknown = FaultRecord(namespace="", name="x", uid="x1", container="someone-elses")
    assert [placed_by_run(run(), f) for f in (node, inside, outside, unknown)] == [True, True, False, False]
