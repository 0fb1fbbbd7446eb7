"""Who may pause, through the admission webhook and RBAC: anyone who may patch the experiment, not only
its author, even when the spec as a whole would no longer be admitted; the webhook stamps who did (and
they do not become an editor); a resume is judged like a run's start, so one the policies now refuse
ends the run instead of acting. The operator serves its webhooks, as in a real install."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from chaosguard.decisions.pause import PAUSED_BY
from localcluster.controlplane import ControlPlane
from localcluster.operator import OperatorProcess, events_for, status_of, wait_for_event, wait_for_phase
from localcluster.wait import wait_for
from tests.integration.test_admission import (  # noqa: F401 (fixtures)
    EXPERIMENTS,
    annotations_of,
    cli,
    experiment_yaml,
    grant,
    kubectl_apply,
    operators,
    policy,
    rule,
    team,
    webhooks,
)


def test_someone_who_may_only_patch_it_pauses_it_and_a_resume_the_policies_now_refuse_ends_the_run(
    webhooks: OperatorProcess,  # noqa: F811
    control_plane: ControlPlane,
    k8s: client.ApiClient,
    team: str,  # noqa: F811
    policy: Any,  # noqa: F811
) -> None:
    grant(k8s, team, "carol", rule(EXPERIMENTS, ["patch"]))  # an approver in shop, with no right over pods
    text = experiment_yaml("alice-long", team, dry_run=True, duration="1h")
    assert kubectl_apply(control_plane, text, "alice").returncode == 0
    wait_for_phase(k8s, team, "alice-long", "Running")
    policy(maxDuration="30m")  # from now on, the policies would refuse this spec

    edit = control_plane.kubectl(
        "patch", "chaosexperiment", "alice-long", "-n", team, "--type=merge", "-p",
        json.dumps({"spec": {"duration": "2h"}}), user="carol", check=False,
    )  # fmt: skip
    assert edit.returncode != 0, "an edit is judged in full"
    paused = cli(control_plane, "carol", "pause", "alice-long", "-n", team)
    assert paused.returncode == 0, paused.stderr
    annotations = annotations_of(k8s, team, "alice-long")
    assert annotations[PAUSED_BY] == "carol" and "chaosguard.dev/editors" not in annotations
    assert "paused by carol" in wait_for_event(k8s, team, "alice-long", "Paused").message
    assert status_of(k8s, team, "alice-long")["phase"] == "Running"

    resumed = cli(control_plane, "carol", "resume", "alice-long", "-n", team)
    assert resumed.returncode == 0, resumed.stderr
    status = wait_for_phase(k8s, team, "alice-long", "Aborted", timeout=30)
    run = status["lastRun"]
    assert run["reason"] == "ResumeRefused" and "max-duration" in run["message"], run
    assert "was not resumed" in resumed.stdout, resumed.stdout
    wait_for(
        lambda: "Resumed" in [e.reason for e in events_for(k8s, team, "alice-long")],
        timeout=15,
        what="the Resumed Event",
    )
