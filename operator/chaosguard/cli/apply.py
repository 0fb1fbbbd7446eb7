"""`chaosguard apply -f EXPERIMENT.yaml --wait`: runs one experiment for CI and says how it went.

It applies the experiment (or follows one already applied, `--name`), follows it to the end of its
run and exits with a code a pipeline can act on:

    0  the run Completed
    1  the run was Aborted or Failed (an SLI breach, an abort, a workload that did not recover)
    2  the experiment was refused (by policy, by the API server's schema or its admission webhook)
       or the input is invalid: the `REFUSED <rule>: ...` lines are the ones `chaosguard validate` prints;
       also when the command cannot do its part (no cluster, no rights, a file it cannot write)
    3  it did not end within --timeout; a run still in progress then is aborted (fail-safe: nobody
       watches a run after CI gave up on it)

On a terminal it shows live progress (phase, kills and faults, each SLI's latest value against its
threshold); otherwise one line per event. Ctrl-C asks whether to abort the run (the same request as
`chaosguard abort`); `--abort-on-interrupt`, a SIGTERM, or no terminal to ask on abort without asking.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO, cast

from chaosguard.api.durations import DurationError, format_seconds, to_seconds
from chaosguard.api.models import GROUP, VERSION
from chaosguard.cli import junit
from chaosguard.cli import ops as cli_ops
from chaosguard.cli.offline import UnreadableInput, judge, read_documents, split_documents

if TYPE_CHECKING:
    from chaosguard.clients.kube import Cluster

EXIT_COMPLETED, EXIT_ABORTED, EXIT_REFUSED, EXIT_TIMED_OUT = 0, 1, 2, 3
DEFAULT_TIMEOUT = "30m"
POLL_SECONDS = 1.0
ABORT_WAIT_SECONDS = 30.0
ABORTED = "aborted"
RUN_ENDS = {"Completed": EXIT_COMPLETED, "Aborted": EXIT_ABORTED, "Failed": EXIT_ABORTED}


class Interrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM while following; `ask` is False when nobody can be asked."""

    def __init__(self, ask: bool) -> None:
        super().__init__("interrupted")
        self.ask = ask


# --------------------------------------------------------------------------- pure: what the status says


@dataclass(frozen=True)
class Baseline:
    """What was there before this command: only a run not in `earlier_runs` counts (a run the applied
    spec change aborts is not this command's), and a refusal only once the operator judged `generation`."""

    generation: int
    earlier_runs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Outcome:
    code: int
    verdict: str  # Completed | Aborted | Failed | Rejected | Invalid | TimedOut
    summary: str
    lines: tuple[str, ...] = ()  # the REFUSED lines, or the abort's evidence
    run_id: str = ""
    seconds: float = 0.0


def refusal_lines(message: str) -> list[str]:
    """The operator joins its refusals with '; ' (engine.reject), each starting with REFUSED; an
    admission webhook's denial puts its own words before the first."""
    if "REFUSED " in message:
        message = message[message.index("REFUSED ") :]
    parts = [part.strip() for part in message.split("; REFUSED ")]
    lines = [part if index == 0 else f"REFUSED {part}" for index, part in enumerate(parts) if part]
    return [line if line.startswith("REFUSED ") else f"REFUSED policy: {line}" for line in lines]


def _seconds_between(start: object, end: object) -> float:
    begun, ended = cli_ops._parse_time(start), cli_ops._parse_time(end)
    return (ended - begun).total_seconds() if begun and ended else 0.0


def decide(experiment: Mapping[str, Any], baseline: Baseline) -> Outcome | None:
    """The outcome the experiment's status shows, or None while it is not over."""
    status = experiment.get("status") or {}
    generation = int(status.get("observedGeneration") or 0)
    if status.get("phase") == "Rejected" and generation >= baseline.generation:
        lines = tuple(refusal_lines(str(status.get("message") or "")))
        return Outcome(EXIT_REFUSED, "Rejected", "refused by the operator", lines)
    last, current = status.get("lastRun") or {}, status.get("currentRun") or {}
    if not last.get("id") or last["id"] in baseline.earlier_runs or current.get("id") == last["id"]:
        return None
    phase = str(last.get("phase") or "Failed")
    summary = f"run {last['id']} {phase} ({last.get('reason') or '-'}): {last.get('message') or ''}".rstrip(": ")
    evidence = tuple(_abort_evidence(last.get("abort") or {}))
    seconds = _seconds_between(last.get("startedAt"), last.get("finishedAt"))
    return Outcome(RUN_ENDS.get(phase, EXIT_ABORTED), phase, summary, evidence, str(last["id"]), seconds)


def _abort_evidence(abort: Mapping[str, Any]) -> list[str]:
    if not abort:
        return []
    rule = f"{abort.get('operator', '')} {abort.get('threshold', '')}".strip()
    lines = [f"SLI {abort.get('condition')}: {abort.get('value') or 'no value'} (healthy while {rule or '?'})"]
    if abort.get("query"):
        lines.append(f"query: {abort['query']}")
    if abort.get("series"):
        lines.append(f"series: {abort['series']}")
    if abort.get("message"):
        lines.append(str(abort["message"]))
    return lines


@dataclass
class Seen:
    """What has been reported already, so that each event is printed once."""

    phase: str = ""
    run_id: str = ""
    kills: set[tuple[str, int, str]] = field(default_factory=set)
    recoveries: set[tuple[str, int]] = field(default_factory=set)
    faults: dict[str, str] = field(default_factory=dict)
    sli: dict[str, str] = field(default_factory=dict)
    paused: str = ""  # the Paused condition's status as last reported


def _conditions(experiment: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    steady = (experiment.get("spec") or {}).get("steadyState") or {}
    return {str(c.get("name")): c for c in steady.get("conditions") or []}


def _latest_samples(run: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Each SLI's latest sample, from the run's summaries (status.currentRun.slis)."""
    return {str(sli["name"]): sli for sli in run.get("slis") or [] if sli.get("name") and sli.get("status")}


def _sli_text(name: str, sample: Mapping[str, Any], condition: Mapping[str, Any] | None) -> str:
    if condition:
        rule = f"{condition.get('operator')} {condition.get('threshold')}"
    elif sample.get("operator"):  # a ChaosPolicy's guard: the summary says what it holds the SLI to
        rule = f"{sample['operator']} {sample.get('threshold')}"
    else:
        rule = "?"
    return f"{name}={sample.get('value') or 'no value'} (healthy while {rule}: {sample.get('status', '?')})"


def new_events(seen: Seen, experiment: Mapping[str, Any]) -> list[str]:
    """Lines for what changed since `seen` (which is updated): phase, run, kills, recoveries,
    faults and SLI verdicts. Quiet output prints exactly these; the terminal adds a live line."""
    status = experiment.get("status") or {}
    lines: list[str] = []
    phase = str(status.get("phase") or "Pending")
    if phase != seen.phase:
        seen.phase = phase
        message = " ".join(str(status.get("message") or "").split())
        lines.append(f"phase {phase}" + (f": {message}" if message and phase != "Rejected" else ""))
    paused: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Paused"), {})
    if paused.get("status", seen.paused) != seen.paused:
        seen.paused = str(paused["status"])
        lines.append(f"{'paused' if seen.paused == 'True' else 'resumed'}: {paused.get('message', '')}")
    run = status.get("currentRun") or status.get("lastRun") or {}
    if run.get("id") and run["id"] != seen.run_id:
        seen.run_id = str(run["id"])
        deadline = f", deadline {run['deadline']}" if run.get("deadline") else ""
        lines.append(f"run {run['id']} ({run.get('trigger', 'apply')}){deadline}")
    for kill in run.get("kills") or []:
        key = (str(kill.get("uid")), int(kill.get("round") or 0), str(kill.get("result")))
        pod = f"{kill.get('namespace')}/{kill.get('name')}"
        if key not in seen.kills:
            seen.kills.add(key)
            how = f" by {kill['method']}" if kill.get("method") else ""
            note = f": {kill['message']}" if kill.get("message") and kill.get("result") != "Killed" else ""
            lines.append(f"kill {pod} ({kill.get('workload') or '-'}): {kill.get('result')}{how}{note}")
        if kill.get("recoveredAfterSeconds") is not None and key[:2] not in seen.recoveries:
            seen.recoveries.add(key[:2])
            after = float(kill["recoveredAfterSeconds"])
            lines.append(f"recovered {kill.get('workload') or pod}: full Ready strength {after:.1f}s after {pod}")
    for fault in run.get("faults") or []:
        pod, state = f"{fault.get('namespace')}/{fault.get('name')}", str(fault.get("state"))
        if seen.faults.get(pod) != state:
            seen.faults[pod] = state
            why = f" (by {fault['removedBy']})" if fault.get("removedBy") else ""
            lines.append(f"fault {pod}: {state}{why}")
    conditions = _conditions(experiment)
    for name, sample in _latest_samples(run).items():
        verdict = str(sample.get("status"))
        if seen.sli.get(name) != verdict:
            seen.sli[name] = verdict
            lines.append("SLI " + _sli_text(name, sample, conditions.get(name)))
    return lines


def live_line(experiment: Mapping[str, Any], elapsed: float, now: datetime) -> str:
    """One line, redrawn in place on a terminal: where the run stands right now."""
    status = experiment.get("status") or {}
    run = status.get("currentRun") or {}
    parts = [f"{format_seconds(elapsed) if elapsed >= 1 else '0s'}", str(status.get("phase") or "Pending")]
    if (experiment.get("spec") or {}).get("paused"):
        parts.append("PAUSED (no fault in, no round; the deadline counts)")
    if run:
        killed = sum(1 for k in run.get("kills") or [] if k.get("result") == "Killed")
        active = sum(1 for f in run.get("faults") or [] if f.get("state") in ("Injecting", "Active"))
        parts.append(f"{killed} killed, {active} faults active")
        deadline = cli_ops._parse_time(run.get("deadline"))
        if deadline is not None:
            parts.append(f"ends in {format_seconds(max(0.0, (deadline - now).total_seconds()))}")
        conditions = _conditions(experiment)
        parts += [_sli_text(n, s, conditions.get(n)) for n, s in _latest_samples(run).items()]
    return " | ".join(parts)


# --------------------------------------------------------------------------- the terminal


class Console:
    """Event lines always; on a terminal also a live line, cleared before each event line."""

    def __init__(self, out: TextIO, started: float) -> None:
        self.out = out
        self.started = started
        self.live = out.isatty()
        self.drawn = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def event(self, line: str) -> None:
        self._clear()
        self.out.write(f"[{self.elapsed():6.1f}s] {line}\n")
        self.out.flush()

    def draw(self, line: str) -> None:
        if self.live:
            self.out.write("\r\x1b[K" + line)
            self.out.flush()
            self.drawn = True

    def _clear(self) -> None:
        if self.drawn:
            self.out.write("\r\x1b[K")
            self.drawn = False


# --------------------------------------------------------------------------- applying


@dataclass(frozen=True)
class Applied:
    namespace: str
    name: str
    baseline: Baseline
    created: bool  # by this command (so an interrupt before its first run may delete it)


def _print_refusal(source: str, key: str, lines: Sequence[str]) -> None:
    """The format of `chaosguard validate`: the source, the experiment, then one REFUSED line per rule."""
    print(f"{source} {key}: refused")
    for line in lines:
        print(f"  {line}")


def _refused(verdict: str, summary: str, lines: Sequence[str] = ()) -> Outcome:
    return Outcome(EXIT_REFUSED, verdict, summary, tuple(lines))


@dataclass(frozen=True)
class Loaded:
    source: str
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["metadata"].get("name") or "?")


def _load(args: argparse.Namespace) -> Loaded | Outcome:
    """The one ChaosExperiment of -f, checked offline like `chaosguard validate`; or why not."""
    try:
        experiments, _ = split_documents(read_documents([args.file]))
    except UnreadableInput as error:
        return _refused("Invalid", str(error))
    if len(experiments) != 1:
        return _refused(
            "Invalid",
            f"{args.file} holds {len(experiments)} ChaosExperiments; `chaosguard apply` runs exactly one (split the "
            "file, and run one `chaosguard apply` per experiment)",
        )
    doc = experiments[0]
    metadata = doc.body.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        return _refused("Invalid", f"{args.file}: metadata.name is missing; give the experiment a name")
    if args.namespace and metadata.get("namespace") not in (None, args.namespace):
        return _refused(
            "Invalid", f"{args.file}: metadata.namespace is {metadata['namespace']} but -n says {args.namespace}"
        )
    refusals = judge(doc, [], datetime.now(UTC))
    if refusals:
        return _refused(
            "Invalid" if refusals[0].rule == "schema" else "Rejected", "refused", [str(r) for r in refusals]
        )
    return Loaded(doc.source, doc.body)


def _apply(cluster: Cluster, namespace: str, loaded: Loaded) -> Applied | Outcome:
    from kubernetes.client.exceptions import ApiException

    from chaosguard.clients.kube import api_message

    body, name = loaded.body, loaded.name
    body["metadata"]["namespace"] = namespace
    key = f"{namespace}/{name}"
    custom = cluster.custom
    existing = cast(
        dict[str, Any] | None,
        cli_ops.api_call(
            f"reading ChaosExperiment {key}",
            lambda: custom.get_namespaced_custom_object(GROUP, VERSION, namespace, cli_ops.EXPERIMENTS, name),
            missing_ok=True,
        ),
    )
    try:
        if existing is None:
            stored = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, cli_ops.EXPERIMENTS, body)
        else:  # like `kubectl apply` of the whole file: the spec becomes exactly the file's
            metadata = {**existing["metadata"], **body["metadata"]}
            replacement = {**body, "metadata": metadata, "status": existing.get("status")}
            stored = custom.replace_namespaced_custom_object(
                GROUP, VERSION, namespace, cli_ops.EXPERIMENTS, name, replacement
            )
    except ApiException as error:
        if error.status not in (400, 403, 409, 422):
            answer = f"the API server answered {error.status}: {api_message(error)}"
            raise cli_ops.CommandError(f"applying ChaosExperiment {key}: {answer}") from None
        message = api_message(error)
        lines = refusal_lines(message) if "REFUSED " in message else [f"REFUSED api-server: {message}"]
        return _refused("Rejected", f"the API server refused it ({error.status})", lines)
    generation = int(cast(dict[str, Any], stored)["metadata"].get("generation") or 1)
    before = (existing or {}).get("status") or {}
    last = before.get("lastRun") or {}
    if existing is not None and generation == int(existing["metadata"].get("generation") or 1):
        print(f"chaosexperiment.{GROUP}/{name} unchanged")
        if not (existing.get("spec") or {}).get("schedule") and not before.get("currentRun") and last:
            return _refused(
                "Invalid",
                f"{key} is unchanged and its run {last.get('id')} already ended ({last.get('phase')}), so nothing "
                f"new will run. Report that run: `chaosguard apply --name {name} -n {namespace} --wait`; run it "
                f"again: `kubectl delete chaosexperiment {name} -n {namespace}`, then apply again",
            )
    else:
        print(f"chaosexperiment.{GROUP}/{name} {'created' if existing is None else 'configured'}")
    earlier = {str(run["id"]) for run in (last, before.get("currentRun") or {}) if run.get("id")}
    return Applied(namespace, name, Baseline(generation, frozenset(earlier)), existing is None)


def _follow_existing(cluster: Cluster, namespace: str, name: str) -> Applied:
    """--name: the run in progress or the next one; an experiment that is done reports its last run."""
    experiment = cli_ops.get_experiment(cluster, namespace, name)
    status = experiment.get("status") or {}
    waiting = bool(status.get("currentRun")) or status.get("phase") not in ("Completed", "Aborted", "Failed")
    last_id = (status.get("lastRun") or {}).get("id") if waiting else None
    generation = int(experiment["metadata"].get("generation") or 1)
    return Applied(namespace, name, Baseline(generation, frozenset({last_id} if last_id else ())), created=False)


# --------------------------------------------------------------------------- following


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(ask=signum == signal.SIGINT and sys.stdin.isatty())


def _follow(cluster: Cluster, applied: Applied, console: Console, deadline: float, seen: Seen) -> Outcome | None:
    """Polls until the experiment's outcome shows, or `deadline` passes (None)."""
    problem = ""
    while True:
        try:
            experiment = cli_ops.get_experiment(cluster, applied.namespace, applied.name)
        except cli_ops.CommandError as error:  # the run goes on without us: keep trying until the deadline
            if str(error) != problem:
                problem = str(error)
                console.event(f"cannot read the experiment, retrying: {problem}")
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS)
            continue
        problem = ""
        for line in new_events(seen, experiment):
            console.event(line)
        outcome = decide(experiment, applied.baseline)
        if outcome is not None:
            return outcome
        if time.monotonic() >= deadline:
            return None
        console.draw(live_line(experiment, console.elapsed(), datetime.now(UTC)))
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def _ask_to_abort(applied: Applied) -> bool:
    """Ctrl-C on a terminal: abort (y) or go on following (n). A second Ctrl-C or a closed stdin: abort."""
    sys.stdout.write(f"\nCtrl-C: abort the run of {applied.namespace}/{applied.name}? [y/N] ")
    sys.stdout.flush()
    try:
        answer = sys.stdin.readline()
    except (Interrupted, KeyboardInterrupt):
        return True
    if not answer:
        return True
    return answer.strip().lower() in ("y", "yes")


def _stop(cluster: Cluster, applied: Applied, reason: str) -> str:
    """Ends what this command started: the run in progress (as `chaosguard abort` does), or an
    experiment this command created whose run has not started yet (deleted: it must not run unwatched).
    Says what it did, or why it could not (the abort request stays for the operator to act on)."""
    try:
        return _stop_or_raise(cluster, applied, reason)
    except cli_ops.CommandError as error:
        print(f"ERROR {error}", file=sys.stderr)
        return f"could not stop it: {error}"


def _stop_or_raise(cluster: Cluster, applied: Applied, reason: str) -> str:
    experiment = cli_ops.get_experiment(cluster, applied.namespace, applied.name)
    status = experiment.get("status") or {}
    if status.get("currentRun"):
        cli_ops.abort_one(cluster, applied.namespace, applied.name, reason, ABORT_WAIT_SECONDS)
        return ABORTED
    if applied.created and decide(experiment, applied.baseline) is None:
        cli_ops.api_call(
            f"deleting ChaosExperiment {applied.namespace}/{applied.name}",
            lambda: cluster.custom.delete_namespaced_custom_object(
                GROUP, VERSION, applied.namespace, cli_ops.EXPERIMENTS, applied.name
            ),
            missing_ok=True,
        )
        print(f"deleted ChaosExperiment {applied.namespace}/{applied.name}: its run had not started")
        return "deleted"
    return "nothing to stop"


def _timed_out(cluster: Cluster, applied: Applied, timeout: float) -> Outcome:
    what = _stop(cluster, applied, f"chaosguard apply: --timeout {format_seconds(timeout)} passed")
    summary = f"did not end within --timeout {format_seconds(timeout)}; {what}"
    return Outcome(EXIT_TIMED_OUT, "TimedOut", summary, seconds=timeout)


def run_to_end(cluster: Cluster, applied: Applied, args: argparse.Namespace, timeout: float) -> Outcome:
    started = time.monotonic()
    console, seen = Console(sys.stdout, started), Seen()
    deadline = started + timeout
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, _on_signal)
    try:
        while True:
            try:
                outcome = _follow(cluster, applied, console, deadline, seen)
                return outcome or _timed_out(cluster, applied, timeout)
            except Interrupted as interrupt:
                console.event("interrupted")
                if not args.abort_on_interrupt and interrupt.ask and not _ask_to_abort(applied):
                    console.event("not aborted; following on (Ctrl-C again to be asked again)")
                    continue
                for signum in previous:  # the abort is under way and bounded: a second Ctrl-C must not cut it short
                    signal.signal(signum, signal.SIG_IGN)
                what = _stop(cluster, applied, "interrupted (Ctrl-C) in chaosguard apply")
                console.event(f"{what} on interrupt")
                if what == ABORTED:  # the run's own record says how it ended
                    outcome = _follow(cluster, applied, console, time.monotonic() + ABORT_WAIT_SECONDS, seen)
                    if outcome is not None:
                        return outcome
                return Outcome(EXIT_ABORTED, "Aborted", f"interrupted; {what}", seconds=console.elapsed())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        console._clear()


# --------------------------------------------------------------------------- outputs


def junit_case(applied: Applied, outcome: Outcome, output: str = "") -> junit.Case:
    classname = f"{applied.namespace}.{applied.name}"
    name = outcome.run_id or f"{applied.name} ({outcome.verdict})"
    detail = "\n".join([outcome.summary, *outcome.lines])
    if outcome.code == EXIT_COMPLETED:
        return junit.Case(classname, name, outcome.seconds, output=output)
    problem = "error" if outcome.code == EXIT_REFUSED else "failure"
    message = outcome.summary if outcome.code != EXIT_REFUSED else "; ".join(outcome.lines) or outcome.summary
    return junit.Case(classname, name, outcome.seconds, problem, outcome.verdict, message, detail, output)


def _write(path: str, text: str, what: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as error:
        raise cli_ops.CommandError(f"cannot write {what} {path}: {error.strerror}", EXIT_REFUSED) from None
    print(f"wrote {path}: {what}", file=sys.stderr)


def _timeout_seconds(text: str) -> float:
    try:
        seconds = to_seconds(text)
    except DurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("--timeout must be more than 0, e.g. 10m")
    return seconds


def command_apply(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if bool(args.file) == bool(args.name):
        parser.error("give either -f EXPERIMENT.yaml (apply it) or --name NAME (follow one already applied)")
    if not args.wait and (args.junit or args.report or args.name):
        parser.error("--name, --junit and --report follow the run to its end: add --wait")
    name = args.name or Path(args.file).stem
    namespace = args.namespace or "-"
    try:
        loaded = _load(args) if args.file else None
        if isinstance(loaded, Outcome):
            return _finish(None, Applied(namespace, name, Baseline(0), False), loaded, args)
        cluster = cli_ops.connect(args.kubeconfig, args.context)
        if loaded is not None:
            name = loaded.name
            namespace = loaded.body["metadata"].get("namespace") or args.namespace
            namespace = namespace or cli_ops.current_namespace(args.kubeconfig, args.context)
            applied = _apply(cluster, namespace, loaded)
        else:
            namespace = args.namespace or cli_ops.current_namespace(args.kubeconfig, args.context)
            applied = _follow_existing(cluster, namespace, name)
        if isinstance(applied, Outcome):
            return _finish(None, Applied(namespace, name, Baseline(0), False), applied, args)
        if not args.wait:
            return EXIT_COMPLETED
        return _finish(cluster, applied, run_to_end(cluster, applied, args, args.timeout), args)
    except cli_ops.CommandError as error:  # no cluster, no rights, a file it cannot write: never a run's verdict
        print(f"ERROR {error}", file=sys.stderr)
        return EXIT_REFUSED


def _finish(cluster: Cluster | None, applied: Applied, outcome: Outcome, args: argparse.Namespace) -> int:
    _report_outcome(args.file or "ChaosExperiment", applied, outcome)
    if args.junit:
        _write(args.junit, junit.render([junit_case(applied, outcome)], datetime.now(UTC)), "JUnit XML")
    if args.report and cluster is not None and outcome.run_id:
        experiment = cli_ops.get_experiment(cluster, applied.namespace, applied.name)
        text, fmt, _ = cli_ops.render_report(experiment, outcome.run_id, args.report, None)
        _write(args.report, text, f"{fmt} game-day report of run {outcome.run_id}")
    elif args.report:
        print(f"no report written to {args.report}: no run ended ({outcome.verdict})", file=sys.stderr)
    return outcome.code


def _report_outcome(source: str, applied: Applied, outcome: Outcome) -> None:
    key = f"{applied.namespace}/{applied.name}"
    if outcome.code == EXIT_REFUSED:
        if outcome.lines:
            _print_refusal(source, key, outcome.lines)
        else:
            print(f"ERROR {outcome.summary}", file=sys.stderr)
        return
    print(f"{key}: {outcome.verdict}: {outcome.summary}")
    for line in outcome.lines:
        print(f"  {line}")


def register(subparsers: Any) -> None:
    apply = subparsers.add_parser(
        "apply",
        help="apply an experiment and (--wait) follow its run to the end, for CI: exit 0/1/2/3",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    apply.add_argument("-f", "--file", metavar="EXPERIMENT.yaml", help="the ChaosExperiment to apply")
    apply.add_argument("--name", help="follow this ChaosExperiment, already applied, instead of applying one")
    apply.add_argument("-n", "--namespace", help="its namespace (default: the file's, then the kubeconfig context's)")
    apply.add_argument("--wait", action="store_true", help="follow the run to its end; the exit code says how it went")
    apply.add_argument(
        "--timeout",
        type=_timeout_seconds,
        default=_timeout_seconds(DEFAULT_TIMEOUT),
        metavar="DURATION",
        help=f"give up after this long, e.g. 10m (default {DEFAULT_TIMEOUT}); a run in progress is then aborted",
    )
    apply.add_argument("--junit", metavar="FILE", help="write a JUnit XML file (one test case per run)")
    apply.add_argument("--report", metavar="FILE", help="write the game-day report (FILE.html: HTML, else Markdown)")
    apply.add_argument(
        "--abort-on-interrupt", action="store_true", help="Ctrl-C aborts the run at once instead of asking"
    )
    cli_ops._connection_flags(apply)
    apply.set_defaults(handler=lambda args: command_apply(args, apply))
