"""`chaosguard pause NAME` and `chaosguard resume NAME`: set or clear spec.paused, then wait for the operator.

The command patches the spec, so the API server's RBAC decides who may (whoever may patch the
experiment), the admission webhook records who did, Git sees the change, and the pause holds across
operator restarts and leader changes. Pausing takes the run's faults out and stops its rounds (the
deadline still counts; a schedule skips its slots); resuming is judged by the operator like a run's start.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Mapping
from typing import Any

from chaosguard.api.durations import format_seconds
from chaosguard.api.models import GROUP, VERSION
from chaosguard.cli.ops import (
    DEFAULT_WAIT_SECONDS,
    EXIT_OK,
    EXPERIMENTS,
    CommandError,
    _connection_flags,
    _handled,
    _poll,
    api_call,
    connect,
    current_namespace,
    get_experiment,
)

LIVE_FAULT_STATES = ("Active", "Injecting")


def pause_outcome(experiment: Mapping[str, Any], paused: bool) -> str | None:
    """What the operator made of the pause (`paused` True) or the resume, once it acted; None until then."""
    status = experiment.get("status") or {}
    condition: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Paused"), {})
    run = status.get("currentRun") or {}
    if paused and run:
        pauses = run.get("pauses") or []
        live = [f for f in run.get("faults") or [] if f.get("state") in LIVE_FAULT_STATES]
        if not pauses or pauses[-1].get("resumedAt") or live:
            return None
        removed = [f for f in run.get("faults") or [] if str(f.get("removedBy", "")).startswith("pause")]
        taken = f"; {len(removed)} fault(s) taken out" if removed else "; no fault was in"
        return f"{condition.get('message') or status.get('message')}{taken}"
    if paused:
        return status.get("message") if condition.get("status") == "True" else None
    if run and str(status.get("message", "")).startswith("resume waits"):
        return str(status["message"])
    if condition.get("status") == "True":
        return None
    if not run:  # no run to resume (a schedule, a finished one), or the resume was refused: the status says
        return str(status.get("message") or condition.get("message") or "resumed")
    return str(condition.get("message") or status.get("message") or "resumed")


def set_paused(args: argparse.Namespace, paused: bool) -> int:
    cluster = connect(args.kubeconfig, args.context)
    namespace = args.namespace or current_namespace(args.kubeconfig, args.context)
    name, verb = args.name, "pause" if paused else "resume"
    key = f"{namespace}/{name}"
    experiment = get_experiment(cluster, namespace, name)
    if bool((experiment.get("spec") or {}).get("paused")) == paused:
        print(f"ChaosExperiment {key} is already {'paused' if paused else 'not paused'}; nothing to {verb}")
        return EXIT_OK
    patch = {"spec": {"paused": paused}}
    api_call(
        f"patching spec.paused of ChaosExperiment {key}",
        lambda: cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, EXPERIMENTS, name, patch),
        not_found=f"ChaosExperiment {key} was deleted meanwhile; nothing to {verb}",
    )
    print(f"spec.paused set to {str(paused).lower()} on ChaosExperiment {key}")
    if args.no_wait:
        return EXIT_OK
    wait = float(args.timeout)
    outcome = _poll(lambda: pause_outcome(get_experiment(cluster, namespace, name), paused), wait)
    if outcome is None:
        raise CommandError(
            f"the operator has not acted on the {verb} of {key} within {format_seconds(wait)}: is it running? "
            f"(`kubectl get pods -A -l app.kubernetes.io/name=chaosguard`). spec.paused stays "
            f"{str(paused).lower()}, so the operator acts on it as soon as it is back"
        )
    print(outcome)
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Adds `pause` and `resume` to the `chaosguard` command's subparsers."""
    for verb, paused, text in (
        (
            "pause",
            True,
            "take a run's faults out and stop its rounds (its deadline still counts); a schedule "
            "skips its slots until resumed",
        ),
        (
            "resume",
            False,
            "let a paused experiment act again; the operator re-checks policy, the author's "
            "rights and the steady state before any new fault",
        ),
    ):
        command = subparsers.add_parser(verb, help=text.split(";")[0], description=f"{verb.capitalize()}: {text}.")
        command.add_argument("name", metavar="NAME", help="the ChaosExperiment")
        command.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
        command.add_argument("--no-wait", action="store_true", help="return once set, without waiting for it")
        command.add_argument("--timeout", type=float, default=DEFAULT_WAIT_SECONDS, help="seconds to wait (default 30)")
        _connection_flags(command)
        command.set_defaults(handler=_handled(functools.partial(set_paused, paused=paused)))
