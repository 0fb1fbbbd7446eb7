"""The table of actions: every action has a row, nothing about a kind is defaulted, and the parts that
used to decide by "anything but pod-kill" read the row instead."""

from __future__ import annotations

import pytest

from chaosguard.admission.judge import needed_permission
from chaosguard.api import actions
from chaosguard.api.actions import ACTIONS, Action, UnknownAction, facts_of
from chaosguard.api.models import FaultRecord
from chaosguard.runtime.faults import describe_injector_exit, fault_for, registered
from chaosguard.runtime.faults.base import UnknownFaultKind


def test_every_action_has_a_row_and_a_registered_kind() -> None:
    assert {action.value for action in Action} <= set(ACTIONS)
    assert {action.value for action in Action} <= set(registered())
    for action in Action:
        assert fault_for(action).facts is facts_of(action)


def test_an_action_without_a_row_or_kind_is_an_error_not_a_default() -> None:
    with pytest.raises(UnknownAction, match="volcano"):
        facts_of("volcano")
    with pytest.raises(UnknownFaultKind, match="volcano"):
        fault_for("volcano")


def test_the_model_and_admission_read_the_table() -> None:
    assert [a for a in Action if a.is_network_fault] == [Action.LATENCY, Action.NETWORK, Action.PARTITION]
    assert needed_permission(Action.POD_KILL) == ("delete", "pods", "")
    assert needed_permission(Action.PARTITION) == ("patch", "pods", "ephemeralcontainers")
    assert Action.POD_KILL.repeats and not Action.LATENCY.repeats
    assert [a for a in Action if a.facts.destination_checks] == [Action.NETWORK, Action.PARTITION]


def test_a_fault_record_of_no_known_kind_is_not_called_latency() -> None:
    record = FaultRecord(namespace="shop", name="a", uid="u", container="chaosguard-volcano-r1")
    assert record.kind == "Fault"
    assert FaultRecord(namespace="shop", name="a", uid="u", container="chaosguard-stress-r1").kind == "Stress"
    assert FaultRecord(namespace="shop", name="a", uid="u", container="chaosguard-partition-r1").kind == "Partition"


def test_an_injector_exit_is_explained_in_the_terms_of_its_kind() -> None:
    terminated = {"exitCode": 4, "message": "Error: Specified qdisc kind is unknown."}
    assert "sch_netem" in describe_injector_exit(terminated, "Latency")
    assert "sch_netem" not in describe_injector_exit(terminated, "Fault")
    assert "tc could not add the fault" in describe_injector_exit(terminated, "Fault")


def test_a_registered_row_is_found_and_a_shipped_row_cannot_be_removed() -> None:
    row = actions.ActionFacts(
        action="test-only",
        spec_block="testOnly",
        spec_block_required=False,
        permission=actions.Permission("get", "pods"),
        record_kind="TestOnly",
        counts="injections",
        reasons=actions.EventReasons("a", "b", "c", "d"),
    )
    actions.register(row)
    try:
        assert facts_of("test-only") is row
        assert actions.by_record_kind("TestOnly") is row
        with pytest.raises(ValueError):
            actions.register(row)
    finally:
        actions.unregister("test-only")
    with pytest.raises(ValueError):
        actions.unregister(Action.LATENCY.value)


def test_the_cli_counts_injections_apart_from_kills() -> None:
    from chaosguard.cli.ops import hits_text

    assert hits_text({"killsTotal": 2}) == "2 killed"
    assert hits_text({"killsTotal": 0, "injectionsTotal": 3}) == "3 injected"
    assert hits_text({"injectionsTotal": 3}, long=True) == "3 fault(s) were injected"
