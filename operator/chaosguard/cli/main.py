"""The `chaosguard` command: run the operator, print CRDs, and check experiments before they ship.

`validate` works offline, for GitOps CI: every rule that can be judged without live pods.
`plan` asks the live cluster which pods would be hit now and which were left out, and why.
Exit codes: 0 admitted, 1 refused, 2 unreadable input.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from chaosguard.admission.judge import PROMETHEUS_URL_ENV
from chaosguard.api import crdgen
from chaosguard.api.errors import describe_validation_error
from chaosguard.api.models import Action, ChaosExperiment, ChaosPolicy
from chaosguard.api.urls import url_parts
from chaosguard.cli import apply as cli_apply
from chaosguard.cli import approvals as cli_approvals
from chaosguard.cli import ops as cli_ops
from chaosguard.cli import pause as cli_pause
from chaosguard.cli.offline import Document, UnreadableInput, judge, read_documents, split_documents
from chaosguard.decisions import platform_guards, windows
from chaosguard.decisions.injector_image import (
    DEFAULT_PULL_POLICY,
    INJECTOR_IMAGE_VARIABLE,
    INJECTOR_PULL_POLICY_VARIABLE,
    PULL_POLICIES,
    STRESSOR_IMAGE_VARIABLE,
    settings_problem,
)
from chaosguard.decisions.policy import (
    applicable_policies,
    combine,
    destination_refusals,
    static_refusals,
    target_namespaces,
    time_refusal,
)
from chaosguard.decisions.prometheus_access import endpoint_refusals
from chaosguard.decisions.stamps import ALLOW_UNVERIFIED_AUTHORS_ENV, unverified_authors_allowed
from chaosguard.runtime import runner, security

EXIT_ADMITTED, EXIT_REFUSED, EXIT_UNREADABLE = 0, 1, 2


def parse_time(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UnreadableInput(f"--at {text!r} is not an RFC 3339 time such as 2026-11-24T14:00:00+01:00") from None
    if moment.tzinfo is None:
        raise UnreadableInput(f"--at {text!r} needs a time zone offset, such as Z or +01:00")
    return moment


def load_policies(documents: Sequence[Document]) -> list[ChaosPolicy]:
    """Policies by name; a name given twice keeps its last definition, as the API server would."""
    policies: dict[str, ChaosPolicy] = {}
    for doc in documents:
        try:
            policy = ChaosPolicy.model_validate(doc.body)
        except ValidationError as error:
            lines = "; ".join(describe_validation_error(error))
            raise UnreadableInput(f"{doc.source}: ChaosPolicy is invalid: {lines}") from None
        policies[policy.metadata.name] = policy
    return list(policies.values())


def print_platform_guards(policies: Sequence[ChaosPolicy], namespaces: Sequence[str]) -> None:
    """The covering policies' guards that need Prometheus: listed, never reported as passed."""
    for line in platform_guards.describe(platform_guards.platform_guards(policies, namespaces)):
        print(f"  GUARD {line}: checked at run time")


def covering(doc: Document, policies: list[ChaosPolicy]) -> tuple[list[ChaosPolicy], list[str]]:
    """(the policies that cover an experiment document offline, its target namespaces); none if unreadable."""
    try:
        experiment = ChaosExperiment.model_validate(doc.body)
    except ValidationError:
        return [], []
    namespace = experiment.metadata.namespace or "default"
    namespaces = target_namespaces(experiment.spec, namespace)
    return applicable_policies(policies, [*namespaces, namespace], None), namespaces


def command_validate(args: argparse.Namespace) -> int:
    args.file = [*(args.file or []), *args.paths]
    if not args.file:
        print("ERROR name the files to check: chaosguard validate -f FILE (or FILE ...)", file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        documents = read_documents(args.file)
        experiments, inline_policies = split_documents(documents)
        _, policy_documents = split_documents(read_documents(args.policy or []))
        policies = load_policies([*inline_policies, *policy_documents])
        at = parse_time(args.at)
    except UnreadableInput as error:
        print(f"ERROR {error}", file=sys.stderr)
        return EXIT_UNREADABLE
    if not experiments and args.no_experiment_ok:
        return EXIT_ADMITTED  # e.g. pre-commit on a commit that changed only policies (checked above) or other YAML
    if not experiments:
        print("ERROR no ChaosExperiment found in " + ", ".join(args.file), file=sys.stderr)
        return EXIT_UNREADABLE
    refused = False
    for doc in experiments:
        name = f"{(doc.body.get('metadata') or {}).get('namespace', 'default')}/"
        name += str((doc.body.get("metadata") or {}).get("name", "?"))
        refusals = judge(doc, policies, at, args.prometheus_url or None, judge_endpoints=True)
        if refusals:
            refused = True
            print(f"{doc.source} {name}: refused")
            for refusal in refusals:
                print(f"  {refusal}")
        else:
            names = ", ".join(p.metadata.name for p in policies) or "none"
            print(f"{doc.source} {name}: admitted at {at.isoformat()} (policies: {names})")
        print_platform_guards(*covering(doc, policies))
    return EXIT_REFUSED if refused else EXIT_ADMITTED


def command_plan(args: argparse.Namespace) -> int:
    from chaosguard.clients.kube import Cluster
    from chaosguard.decisions.selection import choose, classify, requested_count

    try:
        experiments, _ = split_documents(read_documents(args.file))
        at = parse_time(args.at)
    except UnreadableInput as error:
        print(f"ERROR {error}", file=sys.stderr)
        return EXIT_UNREADABLE
    cluster = Cluster.connect(args.kubeconfig)
    labels = cluster.namespace_labels()
    all_policies = cluster.policies()
    refused = False
    for doc in experiments:
        try:
            experiment = ChaosExperiment.model_validate(doc.body)
        except ValidationError as error:
            print(f"{doc.source}: refused")
            for line in describe_validation_error(error):
                print(f"  REFUSED schema: {line}")
            refused = True
            continue
        namespace = experiment.metadata.namespace or "default"
        spec = experiment.spec
        namespaces = target_namespaces(spec, namespace)
        chosen = applicable_policies(all_policies, [*namespaces, namespace], labels)
        effective = combine(chosen)
        print(f"{namespace}/{experiment.metadata.name} ({spec.action.value}, mode {spec.target.mode.value}):")
        print_platform_guards(chosen, namespaces)
        refusals = static_refusals(spec, namespace, effective, labels)
        refusals += endpoint_refusals(spec, effective, args.prometheus_url or None)
        if spec.action.facts.destination_checks:
            guarded = cluster.guarded_addresses(args.operator_namespace or None)
            refusals += destination_refusals(spec, guarded, effective)
        time_problem = time_refusal(effective, at)
        for refusal in [*refusals, *([time_problem] if time_problem else [])]:
            print(f"  {refusal}")
            refused = True
        if spec.action is Action.NODE_DRAIN:
            from chaosguard.cli.nodeplan import print_node_plan

            operator_namespace = args.operator_namespace or None
            refused = (
                print_node_plan(cluster, spec, effective, labels, namespaces, args.seed, operator_namespace) or refused
            )
        else:
            pods = [pod for ns in namespaces if ns in labels for pod in cluster.pods(ns)]
            eligibility = classify(pods, spec.target.selector, effective, labels)
            count = requested_count(spec.target, len(eligibility.eligible))
            picked = choose(eligibility.eligible, count, random.Random(args.seed))
            print(f"  would hit {count} of {len(eligibility.eligible)} eligible pods now, for example:")
            for pod in picked:
                print(f"    HIT  {pod.key} ({pod.workload})")
            for pod in eligibility.eligible:
                if pod not in picked:
                    print(f"    ELIGIBLE {pod.key} ({pod.workload})")
            for exclusion in eligibility.excluded:
                print(f"    LEFT-OUT {exclusion.pod.key}: {exclusion.refusal.rule}: {exclusion.refusal.message}")
        groups, blackouts = list(effective.window_groups), effective.blackout_list()
        opens = windows.next_allowed_start(groups, blackouts, at)
        print(f"  next allowed start: {opens.isoformat() if opens else 'none within a year'}")
    return EXIT_REFUSED if refused else EXIT_ADMITTED


def command_crds(args: argparse.Namespace) -> int:
    crds = crdgen.all_crds()
    if args.check:
        stale = crdgen.stale_files(Path(args.check))
        if stale:
            names = ", ".join(str(path) for path in stale)
            print(f"CRDs out of date with the models: {names}; run `make crds`", file=sys.stderr)
            return 1
        return 0
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        for filename, crd in crds.items():
            (Path(args.out) / filename).write_text(crdgen.render(crd))
            print(f"wrote {Path(args.out) / filename}")
        return 0
    print("---\n".join(crdgen.render(crd) for crd in crds.values()), end="")
    return 0


def command_run(args: argparse.Namespace) -> int:
    # Checked before anything starts: a network fault must never be carried by a guessed image.
    problem = settings_problem(args.injector_image, args.injector_pull_policy, args.stressor_image)
    if problem:
        print(f"ERROR {problem}", file=sys.stderr)
        return EXIT_UNREADABLE
    # The fault kinds read them there, in this process.
    os.environ[INJECTOR_IMAGE_VARIABLE] = args.injector_image.strip()
    os.environ[INJECTOR_PULL_POLICY_VARIABLE] = args.injector_pull_policy
    os.environ[STRESSOR_IMAGE_VARIABLE] = args.stressor_image.strip()
    if args.kubeconfig:
        # Before kopf and the kubernetes client are imported: they read KUBECONFIG at import time.
        os.environ["KUBECONFIG"] = args.kubeconfig

    import kopf

    from chaosguard.runtime import handlers  # noqa: F401  (registers the handlers)

    if args.prometheus_url:
        parts = url_parts(args.prometheus_url)
        if isinstance(parts, str):
            print(f"ERROR --prometheus-url {args.prometheus_url!r} cannot be used: {parts}", file=sys.stderr)
            return EXIT_UNREADABLE
        # The webhook and the engine read it there, in this process.
        os.environ[PROMETHEUS_URL_ENV] = args.prometheus_url
    if args.allow_unverified_authors:
        # Read by the OperatorContext; the environment variable alone does the same (for manifests).
        os.environ[ALLOW_UNVERIFIED_AUTHORS_ENV] = "true"
    if unverified_authors_allowed(os.environ):
        print(
            "WARNING --allow-unverified-authors: experiments without a verified author stamp run with the "
            "operator's rights, so anyone who may create a ChaosExperiment may kill or impair pods they could "
            "not touch themselves (except where a ChaosPolicy requires approval)",
            file=sys.stderr,
        )
    options = security.options_from_args(args)
    problem = security.missing_key_source(options, os.environ.get("CHAOSGUARD_NAMESPACE") or None)
    if problem:
        print(f"ERROR {problem}", file=sys.stderr)
        return EXIT_UNREADABLE
    if options.webhook is not None:
        from chaosguard.runtime import webhooks  # noqa: F401  (registers the admission handlers)

    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_address)
    return runner.serve(args, kopf.Memo(security=options))


def add_operator_prometheus_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prometheus-url",
        default=os.environ.get(PROMETHEUS_URL_ENV, ""),
        help="the operator's --prometheus-url, to judge bearerTokenSecret as the operator will "
        f"(default: ${PROMETHEUS_URL_ENV})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chaosguard", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig")
    run.add_argument("--kubeconfig", help="path to a kubeconfig (default: in-cluster, then $KUBECONFIG)")
    run.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8080/healthz")
    run.add_argument("--metrics-port", type=int, default=None, help="serve the operator's metrics on this port")
    run.add_argument("--metrics-address", default="0.0.0.0", help="address for --metrics-port")
    run.add_argument("--verbose", action="store_true")
    run.add_argument(
        "--prometheus-url",
        default=os.environ.get(PROMETHEUS_URL_ENV, ""),
        help="the cluster's Prometheus: with no ChaosPolicy listing allowedPrometheusURLs, the only URL an "
        f"experiment's bearerTokenSecret is sent to (default: ${PROMETHEUS_URL_ENV})",
    )
    security.add_run_arguments(run)
    run.add_argument(
        "--allow-unverified-authors",
        action="store_true",
        help="give away safety promise 5: run experiments whose author the operator cannot verify (no admission "
        f"webhook stamp) with the operator's own rights; also ${ALLOW_UNVERIFIED_AUTHORS_ENV}=true. Default: "
        "refused, saying to turn the webhooks on",
    )
    run.add_argument(
        "--injector-image",
        default=os.environ.get(INJECTOR_IMAGE_VARIABLE, ""),
        help="the image the faults' ephemeral containers run (deploy/Dockerfile.injector: busybox, tc), e.g. "
        f"registry.example.com/chaosguard-injector:0.1.0; required (default: ${INJECTOR_IMAGE_VARIABLE})",
    )
    run.add_argument(
        "--stressor-image",
        default=os.environ.get(STRESSOR_IMAGE_VARIABLE, ""),
        help="the image the stress fault's stress-ng runs in (deploy/Dockerfile.injector, target stressor), e.g. "
        "registry.example.com/chaosguard-stressor:0.1.0; without it stress experiments are refused "
        f"(default: ${STRESSOR_IMAGE_VARIABLE})",
    )
    run.add_argument(
        "--injector-pull-policy",
        default=os.environ.get(INJECTOR_PULL_POLICY_VARIABLE) or DEFAULT_PULL_POLICY,
        help=f"the imagePullPolicy of those containers: {', '.join(PULL_POLICIES)} "
        f"(default: ${INJECTOR_PULL_POLICY_VARIABLE}, else {DEFAULT_PULL_POLICY})",
    )
    runner.add_run_arguments(run)
    run.set_defaults(handler=command_run)

    crds = sub.add_parser("crds", help="print the CRDs generated from the models")
    crds.add_argument("--out", help="write one file per CRD into this directory")
    crds.add_argument("--check", metavar="DIR", help="exit 1 if the CRDs in DIR differ from the models")
    crds.set_defaults(handler=command_crds)

    validate = sub.add_parser("validate", help="check experiments against policy offline (no cluster)")
    validate.add_argument("-f", "--file", action="append", help="YAML file or directory")
    validate.add_argument(
        "paths", nargs="*", metavar="FILE", help="more YAML files or directories (as pre-commit passes them)"
    )
    validate.add_argument(
        "--no-experiment-ok",
        action="store_true",
        help="exit 0 when the files hold no ChaosExperiment (policies in them are still checked)",
    )
    validate.add_argument("--policy", action="append", help="ChaosPolicy YAML file or directory")
    validate.add_argument("--at", help="judge time windows at this RFC 3339 time (default: now)")
    add_operator_prometheus_url(validate)
    validate.set_defaults(handler=command_validate)

    plan = sub.add_parser("plan", help="show which pods an experiment would hit right now")
    plan.add_argument("-f", "--file", action="append", required=True)
    plan.add_argument("--kubeconfig")
    plan.add_argument("--at", help="judge time windows at this RFC 3339 time (default: now)")
    plan.add_argument("--seed", default="plan", help="seed for the example choice")
    add_operator_prometheus_url(plan)
    plan.add_argument(
        "--operator-namespace",
        default="chaosguard-system",
        help="where chaosguard runs: network faults may not reach its pods unless a policy allows it",
    )
    plan.set_defaults(handler=command_plan)
    cli_approvals.register(sub)
    cli_ops.register(sub)
    cli_apply.register(sub)
    cli_pause.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result
