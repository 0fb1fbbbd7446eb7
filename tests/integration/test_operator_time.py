"""Windows, blackouts and schedules with the operator's clock moved (CHAOSGUARD_CLOCK_OFFSET_SECONDS)
to a Tuesday afternoon in Berlin or into the holiday freeze, so nothing waits for the calendar."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from kubernetes import client

from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    OperatorProcess,
    apply_yaml,
    create_policy,
    events_for,
    experiment_yaml,
    scoped_policy,
    status_of,
    wait_for_event,
    wait_for_phase,
)
from localcluster.wait import wait_for
from tests.integration.test_operator_podkill import kills

pytestmark = pytest.mark.controlplane
BERLIN = ZoneInfo("Europe/Berlin")
HOLIDAY_FREEZE = {"start": "2026-12-20T00:00:00Z", "end": "2027-01-04T00:00:00Z", "reason": "holiday freeze"}


def test_tuesday_afternoon_runs_and_the_holiday_freeze_refuses(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    shop: str,
    isolated_policies: list[str],
    operator_at: Callable[[datetime], OperatorProcess],
) -> None:
    window = {"cron": "0 10 * * MON-THU", "duration": "6h", "timeZone": "Europe/Berlin"}
    create_policy(k8s, f"office-{shop}", scoped_policy(shop, windows=[window], blackouts=[HOLIDAY_FREEZE]))
    isolated_policies.append(f"office-{shop}")

    operator_at(datetime(2026, 11, 24, 14, 0, tzinfo=BERLIN))
    apply_yaml(control_plane, experiment_yaml("tuesday"), shop)
    assert len(kills(wait_for_phase(k8s, shop, "tuesday", "Completed", timeout=60), "Killed")) == 1

    operator_at(datetime(2026, 12, 22, 14, 0, tzinfo=BERLIN))
    apply_yaml(control_plane, experiment_yaml("holiday"), shop)
    status = wait_for_phase(k8s, shop, "holiday", "Rejected", timeout=60)
    assert "REFUSED blackout" in status["message"] and "holiday freeze" in status["message"]


def test_a_run_is_stopped_when_its_window_closes(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    shop: str,
    isolated_policies: list[str],
    operator_at: Callable[[datetime], OperatorProcess],
) -> None:
    window = {"cron": "0 10 * * MON-THU", "duration": "5h", "timeZone": "Europe/Berlin"}
    create_policy(k8s, f"closing-{shop}", scoped_policy(shop, windows=[window]))
    isolated_policies.append(f"closing-{shop}")
    closes = datetime(2026, 11, 24, 15, 0, tzinfo=BERLIN)

    operator_at(datetime(2026, 11, 24, 14, 59, 35, tzinfo=BERLIN))
    apply_yaml(control_plane, experiment_yaml("closing", duration="1m", interval="2s"), shop)
    status = wait_for_phase(k8s, shop, "closing", "Aborted", timeout=60)
    assert status["lastRun"]["reason"] == "Window"
    assert "the run was stopped" in status["message"] and "outside the allowed windows" in status["message"]
    assert kills(status, "Killed"), "the run should have killed before the window closed"
    assert all(datetime.fromisoformat(k["at"]) < closes for k in kills(status))


def test_a_game_day_runs_on_its_trigger_and_skips_a_trigger_outside_the_window(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    shop: str,
    isolated_policies: list[str],
    operator_at: Callable[[datetime], OperatorProcess],
) -> None:
    tuesdays_only = {"cron": "0 10 * * TUE", "duration": "6h", "timeZone": "Europe/Berlin"}
    create_policy(k8s, f"tuesdays-{shop}", scoped_policy(shop, windows=[tuesdays_only]))
    isolated_policies.append(f"tuesdays-{shop}")
    daily = experiment_yaml("gameday", duration="2s") + (
        '  schedule: {cron: "0 14 * * *", timeZone: Europe/Berlin, historyLimit: 3}\n'
    )

    operator_at(datetime(2026, 11, 24, 13, 59, 30, tzinfo=BERLIN))
    apply_yaml(control_plane, daily, shop)
    scheduled = wait_for_phase(k8s, shop, "gameday", "Scheduled", timeout=30)
    assert datetime.fromisoformat(scheduled["nextRunAt"]) == datetime(2026, 11, 24, 14, 0, tzinfo=BERLIN)
    after_first = wait_for(
        lambda: (s := status_of(k8s, shop, "gameday")).get("lastRun") and s["phase"] == "Scheduled" and s,
        timeout=60,
        what="the first scheduled run to finish",
    )
    assert after_first["lastRun"]["phase"] == "Completed"
    assert after_first["lastRun"]["trigger"] == "schedule"
    assert [run["id"] for run in after_first["history"]] == [after_first["lastRun"]["id"]]
    assert datetime.fromisoformat(after_first["nextRunAt"]) == datetime(2026, 11, 25, 14, 0, tzinfo=BERLIN)

    operator_at(datetime(2026, 11, 25, 13, 59, 40, tzinfo=BERLIN))  # Wednesday: outside the window
    skipped = wait_for_event(k8s, shop, "gameday", "RunSkipped", timeout=60)
    assert "REFUSED window" in skipped.message
    status = status_of(k8s, shop, "gameday")
    assert status["runsTotal"] == 1 and len(status["history"]) == 1
    assert datetime.fromisoformat(status["nextRunAt"]) == datetime(2026, 11, 26, 14, 0, tzinfo=BERLIN)
    assert [e.reason for e in events_for(k8s, shop, "gameday")].count("RunStarted") == 1
