"""Day-2 commands against the live cluster: `report`, `status` and `abort`.

- `chaosguard report NAME` renders one run of an experiment as a game-day report (Markdown or HTML).
- `chaosguard status` lists experiments: phase, last run, next run.
- `chaosguard abort NAME` asks the operator to end the run in progress (annotation
  `chaosguard.dev/abort`, whose value is the reason); `chaosguard abort --all` is the big red switch:
  every ChaosPolicy gets `suspend: true`, plus a cluster-wide `chaosguard-emergency-stop` policy, so
  the operator aborts every running experiment and starts none. `--all --undo` reverts exactly
  what `--all` changed.

Installed as `chaosguard` and as the kubectl plugin `kubectl-chaosguard` (`kubectl chaosguard status`).
Exit codes: 0 done, 1 not found / refused / not done in time, 2 bad usage.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from chaosguard.api.durations import format_seconds
from chaosguard.api.models import ABORT_ANNOTATION, GROUP, VERSION
from chaosguard.cli import report

if TYPE_CHECKING:
    from chaosguard.clients.kube import Cluster

# The kubernetes client is imported inside the functions that talk to the cluster: `chaosguard run`
# must set KUBECONFIG before anything imports it (it reads the variable at import time), and the
# `chaosguard` command imports this module to register the subcommands.

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EMERGENCY_POLICY = "chaosguard-emergency-stop"
EMERGENCY_ANNOTATION = f"{GROUP}/emergency-stop"  # on every policy `abort --all` suspended
CREATED_ANNOTATION = f"{GROUP}/emergency-stop-created"  # on the emergency policy, when `abort --all` made it
MESSAGE_WIDTH = 60
DEFAULT_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.5
EXPERIMENTS, POLICIES = "chaosexperiments", "chaospolicies"


class CommandError(Exception):
    """Ends a command with a message for people and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- connection


def connect(kubeconfig: str | None, context: str | None) -> Cluster:
    """An explicit --kubeconfig or --context wins; otherwise in-cluster, then $KUBECONFIG or ~/.kube/config."""
    from kubernetes import client, config

    from chaosguard.clients.kube import Cluster, load_config

    try:
        if kubeconfig or context:
            config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
        else:
            load_config(None)
    except (config.ConfigException, OSError) as error:
        where = f"--kubeconfig {kubeconfig}" if kubeconfig else "$KUBECONFIG or ~/.kube/config"
        raise CommandError(
            f"no usable kubeconfig ({where}): {error}; pass --kubeconfig FILE, set KUBECONFIG, or pick one with "
            "--context",
            EXIT_USAGE,
        ) from None
    return Cluster(client.CoreV1Api(), client.AppsV1Api(), client.CustomObjectsApi())


def current_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace of the kubeconfig's context (as kubectl uses it), else the pod's own, else default."""
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
        namespace = ((chosen or {}).get("context") or {}).get("namespace")
        if namespace:
            return str(namespace)
    except (config.ConfigException, OSError, TypeError, ValueError):
        pass
    try:
        return Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip() or "default"
    except OSError:
        return "default"


def api_call(what: str, call: Callable[[], Any], not_found: str | None = None, missing_ok: bool = False) -> Any:
    """Runs one API call; failures become CommandErrors that name the object and the fix."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    from chaosguard.clients.kube import api_message

    try:
        return call()
    except ApiException as error:
        message = api_message(error)
        if error.status == 404 and missing_ok:
            return None
        if error.status == 404 and not_found is not None:
            raise CommandError(not_found) from None
        if error.status == 404 and "the server could not find the requested resource" in message:
            raise CommandError(
                f"{what}: the chaosguard CRDs are not installed in this cluster; install them with "
                "`kubectl apply -k crds/` (or the Helm chart)"
            ) from None
        if error.status in (401, 403):
            raise CommandError(
                f"{what}: refused by the API server ({error.status}): {message}; ask a cluster admin for the RBAC "
                "this needs, or use a kubeconfig that has it"
            ) from None
        raise CommandError(f"{what}: the API server answered {error.status}: {message}") from None
    except (Urllib3Error, OSError) as error:
        host = client.Configuration.get_default_copy().host
        raise CommandError(f"{what}: cannot reach the API server at {host}: {error}") from None


def get_experiment(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj = api_call(
        f"reading ChaosExperiment {namespace}/{name}",
        lambda: cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, EXPERIMENTS, name),
        not_found=(
            f"ChaosExperiment {namespace}/{name} not found; `chaosguard status -n {namespace}` lists the experiments "
            "there (or -A for every namespace)"
        ),
    )
    return cast(dict[str, Any], obj)


def list_experiments(cluster: Cluster, namespace: str | None) -> list[dict[str, Any]]:
    if namespace is None:
        raw = api_call(
            "listing ChaosExperiments",
            lambda: cluster.custom.list_cluster_custom_object(GROUP, VERSION, EXPERIMENTS),
        )
    else:
        raw = api_call(
            f"listing ChaosExperiments in {namespace}",
            lambda: cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, EXPERIMENTS),
        )
    items = cast(list[dict[str, Any]], (raw or {}).get("items", []))
    return sorted(items, key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"]["name"]))


def list_policies(cluster: Cluster) -> list[dict[str, Any]]:
    raw = api_call("listing ChaosPolicies", lambda: cluster.custom.list_cluster_custom_object(GROUP, VERSION, POLICIES))
    items = cast(list[dict[str, Any]], (raw or {}).get("items", []))
    return sorted(items, key=lambda i: str(i["metadata"]["name"]))


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _human(seconds: float) -> str:
    """`45s`, `3m20s`, `5h2m`, `12d3h`: short enough for a table column."""
    if seconds >= 2 * 86400:
        days, rest = divmod(int(seconds), 86400)
        return f"{days}d{rest // 3600}h" if rest >= 3600 else f"{days}d"
    if seconds >= 3600:
        return format_seconds(int(seconds) // 60 * 60)
    return format_seconds(int(seconds))


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return ""
    seconds = (now - moment).total_seconds()
    return "just now" if seconds < 1 else f"{_human(seconds)} ago"


def _in(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    seconds = (moment - now).total_seconds()
    when = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
    return f"{when} (due)" if seconds < 1 else f"{when} (in {_human(seconds)})"


# --------------------------------------------------------------------------- report


def render_report(
    experiment: dict[str, Any], run_id: str | None, output: str | None, fmt: str | None
) -> tuple[str, str, str]:
    """The report's text, its format (`fmt`, else html for an output named *.html, else markdown)
    and the id of the run it reports (the last one when `run_id` is None)."""
    fmt = fmt or ("html" if output and output.lower().endswith((".html", ".htm")) else "markdown")
    try:
        day = report.build(experiment, run_id)
    except report.ReportError as error:
        raise CommandError(str(error)) from None
    return (report.html_page(day, _now()) if fmt == "html" else report.markdown(day)), fmt, day.run.id


def command_report(args: argparse.Namespace) -> int:
    cluster = connect(args.kubeconfig, args.context)
    namespace = args.namespace or current_namespace(args.kubeconfig, args.context)
    experiment = get_experiment(cluster, namespace, args.name)
    text, fmt, run_id = render_report(experiment, args.run, args.output, args.format)
    if args.output and args.output != "-":
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as error:
            raise CommandError(f"cannot write {args.output}: {error.strerror}") from None
        print(f"wrote {args.output}: {fmt} report of run {run_id} of {namespace}/{args.name}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


# --------------------------------------------------------------------------- status


def hits_text(run: Mapping[str, Any], long: bool = False) -> str:
    """What a run did, in its own count: kills, injections, or both when it did both (an old record)."""
    killed, injected = int(run.get("killsTotal") or 0), int(run.get("injectionsTotal") or 0)
    kills = f"{killed} pod(s) were killed" if long else f"{killed} killed"
    injections = f"{injected} fault(s) were injected" if long else f"{injected} injected"
    if injected and not killed:
        return injections
    if injected:
        return f"{kills}, {injections}"
    return kills


def status_rows(items: Sequence[dict[str, Any]], now: datetime, wide: bool = False) -> list[list[str]]:
    """One row per experiment: namespace, name, action, phase, last run, next run, message."""
    rows = []
    for item in items:
        meta, spec, status = item.get("metadata") or {}, item.get("spec") or {}, item.get("status") or {}
        current, last = status.get("currentRun"), status.get("lastRun")
        if current:
            last_run = f"running {current.get('id', '?')} ({hits_text(current)})"
        elif last:
            finished = _ago(_parse_time(last.get("finishedAt")), now)
            last_run = f"{last.get('phase', '?')}/{last.get('reason') or '-'} {finished}, {hits_text(last)}".strip()
        else:
            last_run = "-"
        if current:
            deadline = _parse_time(current.get("deadline"))
            next_run = f"now, until {deadline.astimezone(UTC):%H:%M:%SZ}" if deadline else "now"
        else:
            next_run = _in(_parse_time(status.get("nextRunAt")), now)
        message = " ".join(str(status.get("message") or "").split())
        if not wide and len(message) > MESSAGE_WIDTH:
            message = message[: MESSAGE_WIDTH - 3] + "..."
        action = str(spec.get("action") or "?") + (" (dry run)" if spec.get("dryRun") else "")
        rows.append(
            [
                str(meta.get("namespace", "")),
                str(meta.get("name", "")),
                action,
                str(status.get("phase") or "New") + (" (paused)" if spec.get("paused") else ""),
                last_run,
                next_run,
                message or "-",
            ]
        )
    return rows


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "   ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines) + "\n"


def command_status(args: argparse.Namespace) -> int:
    cluster = connect(args.kubeconfig, args.context)
    namespace = None if args.all_namespaces else (args.namespace or current_namespace(args.kubeconfig, args.context))
    items = list_experiments(cluster, namespace)
    _warn_if_suspended(cluster, sys.stderr)
    if not items:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        print(f"No ChaosExperiments in {where}.", file=sys.stderr)
        return EXIT_OK
    headers = ["NAMESPACE", "NAME", "ACTION", "PHASE", "LAST RUN", "NEXT RUN", "MESSAGE"]
    sys.stdout.write(format_table(headers, status_rows(items, _now(), args.wide)))
    return EXIT_OK


def _warn_if_suspended(cluster: Cluster, out: TextIO) -> None:
    """A suspended policy explains why nothing runs; not being allowed to list policies is no error here."""
    try:
        policies = list_policies(cluster)
    except CommandError:
        return
    suspended = [p["metadata"]["name"] for p in policies if (p.get("spec") or {}).get("suspend")]
    if suspended:
        names = ", ".join(f"ChaosPolicy/{name}" for name in suspended)
        print(
            f"WARNING: chaos is suspended by {names}: running experiments are aborted and none starts. "
            "Undo an emergency stop with `chaosguard abort --all --undo`.",
            file=out,
        )


# --------------------------------------------------------------------------- abort


def command_abort(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.all and args.name:
        parser.error("give either NAME or --all, not both")
    if args.undo and not args.all:
        parser.error("--undo only goes with --all: `chaosguard abort --all --undo`")
    if args.all and args.namespace:
        parser.error(
            "--all is the cluster-wide emergency stop and takes no -n; to abort the runs of one namespace, abort "
            "each experiment by name"
        )
    if not args.all and not args.name:
        parser.error("name the experiment to abort (chaosguard abort NAME -n NAMESPACE), or stop everything with --all")
    cluster = connect(args.kubeconfig, args.context)
    if args.all:
        return undo_emergency_stop(cluster) if args.undo else emergency_stop(cluster, args.reason, _wait(args))
    namespace = args.namespace or current_namespace(args.kubeconfig, args.context)
    return abort_one(cluster, namespace, args.name, args.reason, _wait(args))


def _wait(args: argparse.Namespace) -> float | None:
    return None if args.no_wait else float(args.timeout)


def abort_one(cluster: Cluster, namespace: str, name: str, reason: str, wait: float | None) -> int:
    key = f"{namespace}/{name}"
    experiment = get_experiment(cluster, namespace, name)
    status = experiment.get("status") or {}
    run = status.get("currentRun")
    if not run:
        phase = status.get("phase") or "New"
        raise CommandError(
            f"ChaosExperiment {key} has no run in progress (phase {phase}), so there is nothing to abort. "
            f"To keep it from running (again): `kubectl delete chaosexperiment {name} -n {namespace}`; to stop all "
            "chaos at once: `chaosguard abort --all`"
        )
    patch = {"metadata": {"annotations": {ABORT_ANNOTATION: reason}}}
    api_call(
        f"annotating ChaosExperiment {key}",
        lambda: cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, EXPERIMENTS, name, patch),
        not_found=f"ChaosExperiment {key} was deleted meanwhile; nothing to abort",
    )
    print(f"abort requested for ChaosExperiment {key}, run {run.get('id')}: {reason or 'no reason given'}")
    if wait is None:
        print(
            f"the operator ends the run and removes the annotation {ABORT_ANNOTATION}; follow it with "
            f"`chaosguard status -n {namespace}`"
        )
        return EXIT_OK

    def finished() -> dict[str, Any] | None:
        current = get_experiment(cluster, namespace, name)
        annotations = current["metadata"].get("annotations") or {}
        running = (current.get("status") or {}).get("currentRun") or {}
        if ABORT_ANNOTATION in annotations or running.get("id") == run.get("id"):
            return None
        return current

    done = _poll(finished, wait)
    if done is None:
        raise CommandError(
            f"the operator has not acted on the abort of {key} within {format_seconds(wait)}: is it running? "
            f"(`kubectl get pods -A -l app.kubernetes.io/name=chaosguard`). The annotation {ABORT_ANNOTATION} stays "
            "set, so the run is aborted as soon as the operator is back; `chaosguard abort --all` stops everything."
        )
    last = (done.get("status") or {}).get("lastRun") or {}
    print(
        f"run {last.get('id')} {last.get('phase')} ({last.get('reason')}): {last.get('message')}; "
        f"{hits_text(last, long=True)}"
    )
    return EXIT_OK


def _poll(check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_SECONDS)


def emergency_stop(cluster: Cluster, reason: str, wait: float | None) -> int:
    """Suspends every ChaosPolicy and makes sure the cluster-wide emergency policy exists and is suspended."""
    stamp = f"{_now().isoformat(timespec='seconds')} by chaosguard abort --all: {reason or 'no reason given'}"
    policies = list_policies(cluster)
    suspended, already = [], []
    for policy in policies:
        name = policy["metadata"]["name"]
        if (policy.get("spec") or {}).get("suspend"):
            already.append(name)
            continue
        patch = {"metadata": {"annotations": {EMERGENCY_ANNOTATION: stamp}}, "spec": {"suspend": True}}
        api_call(
            f"suspending ChaosPolicy/{name}",
            functools.partial(cluster.custom.patch_cluster_custom_object, GROUP, VERSION, POLICIES, name, patch),
        )
        suspended.append(name)
    created = False
    if not any(p["metadata"]["name"] == EMERGENCY_POLICY for p in policies):
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ChaosPolicy",
            "metadata": {
                "name": EMERGENCY_POLICY,
                "annotations": {EMERGENCY_ANNOTATION: stamp, CREATED_ANNOTATION: "true"},
            },
            "spec": {"suspend": True},
        }
        api_call(
            f"creating ChaosPolicy/{EMERGENCY_POLICY}",
            lambda: cluster.custom.create_cluster_custom_object(GROUP, VERSION, POLICIES, body),
        )
        created = True
    print("EMERGENCY STOP: chaos is suspended in every namespace.")
    if suspended:
        print(f"  suspended: {', '.join(f'ChaosPolicy/{n}' for n in suspended)}")
    if already:
        print(f"  already suspended (left as they are): {', '.join(f'ChaosPolicy/{n}' for n in already)}")
    if created:
        print(f"  created ChaosPolicy/{EMERGENCY_POLICY} with suspend: true (it applies to every namespace)")
    print("The operator aborts every running experiment (reason Suspended) and starts none until this is undone.")
    running = [_key(e) for e in list_experiments(cluster, None) if (e.get("status") or {}).get("currentRun")]
    code = EXIT_OK
    if running and wait is not None:

        def all_stopped() -> bool:
            return not any(
                (e.get("status") or {}).get("currentRun") and _key(e) in running
                for e in list_experiments(cluster, None)
            )

        if _poll(all_stopped, wait):
            print(f"  aborted: {', '.join(running)}")
        else:
            still = [_key(e) for e in list_experiments(cluster, None) if (e.get("status") or {}).get("currentRun")]
            print(
                f"  still running after {format_seconds(wait)}: {', '.join(still)}; is the operator running? The "
                "suspension stays in place and takes effect as soon as it is.",
                file=sys.stderr,
            )
            code = EXIT_FAILED
    elif running:
        print(f"  running now, to be aborted: {', '.join(running)}")
    else:
        print("  no experiment was running")
    print("To undo: chaosguard abort --all --undo")
    for name in suspended:
        print(f'  (or by hand: kubectl patch chaospolicy {name} --type merge -p \'{{"spec":{{"suspend":false}}}}\')')
    if created:
        print(f"  (or by hand: kubectl delete chaospolicy {EMERGENCY_POLICY})")
    return code


def undo_emergency_stop(cluster: Cluster) -> int:
    """Reverts what `abort --all` changed, and nothing else: policies suspended before stay suspended."""
    policies = list_policies(cluster)
    resumed, deleted, kept = [], [], []
    for policy in policies:
        name = policy["metadata"]["name"]
        annotations = policy["metadata"].get("annotations") or {}
        if annotations.get(CREATED_ANNOTATION) == "true":
            api_call(
                f"deleting ChaosPolicy/{name}",
                functools.partial(cluster.custom.delete_cluster_custom_object, GROUP, VERSION, POLICIES, name),
                missing_ok=True,
            )
            deleted.append(name)
        elif EMERGENCY_ANNOTATION in annotations:
            patch = {"metadata": {"annotations": {EMERGENCY_ANNOTATION: None}}, "spec": {"suspend": False}}
            api_call(
                f"resuming ChaosPolicy/{name}",
                functools.partial(cluster.custom.patch_cluster_custom_object, GROUP, VERSION, POLICIES, name, patch),
            )
            resumed.append(name)
        elif (policy.get("spec") or {}).get("suspend"):
            kept.append(name)
    if not resumed and not deleted:
        print("No emergency stop to undo: no ChaosPolicy was suspended by `chaosguard abort --all`.")
    if deleted:
        print(f"deleted: {', '.join(f'ChaosPolicy/{n}' for n in deleted)}")
    if resumed:
        print(f"suspend: false again: {', '.join(f'ChaosPolicy/{n}' for n in resumed)}")
    if kept:
        names = ", ".join(f"ChaosPolicy/{n}" for n in kept)
        print(f"still suspended (they were before the emergency stop, or someone else set it): {names}")
    if resumed or deleted:
        print(
            "Aborted runs are not restarted: scheduled experiments run at their next trigger; re-apply one-shot "
            "experiments to run them again."
        )
    return EXIT_OK


def _key(item: dict[str, Any]) -> str:
    return f"{item['metadata'].get('namespace', '')}/{item['metadata']['name']}"


# --------------------------------------------------------------------------- wiring


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="path to a kubeconfig (default: in-cluster, then $KUBECONFIG)")
    parser.add_argument("--context", help="the kubeconfig context to use (default: its current context)")


def register(subparsers: Any) -> None:
    """Adds `report`, `status` and `abort` to the `chaosguard` command's subparsers."""
    rep = subparsers.add_parser(
        "report",
        help="a game-day report of one run (Markdown or self-contained HTML)",
        description="Renders one run of a ChaosExperiment as a game-day report: timeline, kills and recovery "
        "times, SLI samples, the abort reason, and what to look at next.",
    )
    rep.add_argument("name", metavar="NAME", help="the ChaosExperiment")
    rep.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
    rep.add_argument("--run", metavar="ID", help="the run id, e.g. r3-20261124T140000Z (default: the last run)")
    rep.add_argument("--format", choices=report.FORMATS, help="default: html for -o *.html, else markdown")
    rep.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE (default: standard output)")
    _connection_flags(rep)
    rep.set_defaults(handler=_handled(command_report))

    status = subparsers.add_parser("status", help="list experiments: phase, last run, next run")
    scope = status.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="only this namespace (default: the kubeconfig context's)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    status.add_argument("--wide", action="store_true", help="do not truncate messages")
    _connection_flags(status)
    status.set_defaults(handler=_handled(command_status))

    abort = subparsers.add_parser(
        "abort",
        help="end an experiment's run now, or stop all chaos (--all)",
        description="NAME: asks the operator to end the experiment's run in progress (a schedule goes on). "
        "--all: the big red switch: suspends every ChaosPolicy and adds a cluster-wide one, so every running "
        "experiment is aborted and none starts; --all --undo reverts exactly that.",
    )
    abort.add_argument("name", metavar="NAME", nargs="?", help="the ChaosExperiment whose run to abort")
    abort.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
    abort.add_argument("--all", action="store_true", help="emergency stop: suspend chaos in every namespace")
    abort.add_argument("--undo", action="store_true", help="with --all: revert the emergency stop")
    abort.add_argument("--reason", default="", help="why; recorded in the run's status and in Events")
    abort.add_argument("--no-wait", action="store_true", help="return once requested, without waiting for it")
    abort.add_argument("--timeout", type=float, default=DEFAULT_WAIT_SECONDS, help="seconds to wait (default 30)")
    _connection_flags(abort)
    abort.set_defaults(handler=_handled(lambda args: command_abort(args, abort)))


def _handled(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except CommandError as error:
            print(f"ERROR {error}", file=sys.stderr)
            return error.code

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chaosguard", description=__doc__.split("\n")[0])
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """These commands on their own (`python -m chaosguard.cli.ops`); `chaosguard` has them too."""
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
