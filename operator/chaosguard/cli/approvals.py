"""`chaosguard approve` and `chaosguard approvals`: approving an experiment's exact spec, and seeing which
approvals count and why the others do not.

`approve` creates a ChaosApproval with the sha256 of the experiment's spec as it is now, as the user
of the current kubeconfig; the operator's admission webhook stamps who that is (nobody can approve
in someone else's name) and refuses at once an approval that would not count. `approvals` shows
the operator's own verdict on each approval (status.approvals); for approvals it has not judged
yet, a preview from the same rules (it cannot check signatures: only the operator holds the key).
Exit codes: 0 done, 1 refused, 2 unreadable input or no such experiment.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK, EXIT_REFUSED, EXIT_UNREADABLE = 0, 1, 2


def register(subparsers: Any) -> None:
    approve = subparsers.add_parser("approve", help="approve an experiment's current spec, as the kubeconfig user")
    approve.add_argument("name", help="the ChaosExperiment")
    approve.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    approve.add_argument("--comment", default="", help="why, for the record")
    approve.add_argument("--kubeconfig")
    approve.set_defaults(handler=command_approve)

    approvals = subparsers.add_parser("approvals", help="list an experiment's approvals: which count, and why not")
    approvals.add_argument("name", help="the ChaosExperiment")
    approvals.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    approvals.add_argument("--kubeconfig")
    approvals.set_defaults(handler=command_approvals)


def _namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return str(args.namespace)
    from kubernetes import config

    try:
        _, current = config.list_kube_config_contexts(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError, TypeError):
        return "default"
    return str((current or {}).get("context", {}).get("namespace") or "default")


def command_approve(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException

    from chaosguard.api.models import API_VERSION
    from chaosguard.clients.kube import Cluster, api_message
    from chaosguard.decisions.stamps import APPROVER, spec_hash

    namespace = _namespace(args)
    cluster = Cluster.connect(args.kubeconfig)
    experiment = cluster.experiment(namespace, args.name)
    if experiment is None:
        print(f"ERROR there is no ChaosExperiment {args.name!r} in namespace {namespace!r}", file=sys.stderr)
        return EXIT_UNREADABLE
    digest = spec_hash(experiment.get("spec") or {})
    body = {
        "apiVersion": API_VERSION,
        "kind": "ChaosApproval",
        "metadata": {"generateName": f"{args.name}-", "namespace": namespace},
        "spec": {"experiment": args.name, "specHash": digest, "comment": args.comment},
    }
    try:
        created = cluster.create_approval(namespace, body)
    except ApiException as error:
        print(f"REFUSED {api_message(error)}", file=sys.stderr)
        return EXIT_REFUSED
    name = created["metadata"]["name"]
    approver = (created["metadata"].get("annotations") or {}).get(APPROVER)
    if approver is None:
        print(
            f"created ChaosApproval {namespace}/{name}, but it carries no approver stamp: the admission webhook "
            "is not running, so it will not count",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    print(f"approved {namespace}/{args.name} (spec {digest[:19]}…) as {approver}: ChaosApproval {namespace}/{name}")
    return EXIT_OK


def command_approvals(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException

    from chaosguard.api.models import ChaosExperiment, ChaosExperimentStatus
    from chaosguard.clients.kube import Cluster
    from chaosguard.decisions.approvals import ApprovalView, ExperimentView, count_valid
    from chaosguard.decisions.policy import applicable_policies, combine, target_namespaces
    from chaosguard.decisions.stamps import AUTHOR, claimed_writers, spec_hash

    namespace = _namespace(args)
    cluster = Cluster.connect(args.kubeconfig)
    body = cluster.experiment(namespace, args.name)
    if body is None:
        print(f"ERROR there is no ChaosExperiment {args.name!r} in namespace {namespace!r}", file=sys.stderr)
        return EXIT_UNREADABLE
    status = ChaosExperimentStatus.model_validate(body.get("status") or {})
    digest = spec_hash(body.get("spec") or {})
    writers = claimed_writers(body)  # as stamped, unverified (no key here): for the preview only
    author = (body["metadata"].get("annotations") or {}).get(AUTHOR, "unknown")
    phase = status.phase.value if status.phase else "new"
    print(f"{namespace}/{args.name}: spec {digest[:19]}…, author {author}, phase {phase}")
    if status.message:
        print(f"  {status.message}")
    policies: list[Any] = []
    try:
        experiment = ChaosExperiment.model_validate(body)
        labels = cluster.namespace_labels()
        namespaces = [*target_namespaces(experiment.spec, namespace), namespace]
        policies = list(combine(applicable_policies(cluster.policies(), namespaces, labels)).approvals)
    except (ApiException, ValueError):
        policies = []  # not allowed to read policies or namespaces: the operator's verdicts only
    views = [ApprovalView.from_body(item, None) for item in cluster.approvals(namespace)]
    view = ExperimentView(args.name, str(body["metadata"].get("uid") or ""), digest, writers)
    preview = {j.approval.name: j for j in count_valid(views, view, policies, _now(), preview=True).judgements}
    judged = {record.name: record for record in status.approvals}
    mine = [v for v in views if v.experiment == args.name]
    if not mine:
        print("  no approvals yet: `chaosguard approve " + args.name + f" -n {namespace}`")
    for approval in sorted(mine, key=lambda a: a.name):
        record = judged.get(approval.name)
        at = approval.approved_at.isoformat() if approval.approved_at else "unstamped"
        if record is not None:
            verdict = f"COUNTS until {record.expires_at.isoformat()}" if record.counted and record.expires_at else ""
            verdict = verdict or ("COUNTS" if record.counted else f"DOES NOT COUNT: {record.reason}")
        else:
            judgement = preview.get(approval.name)
            guess = "would count" if judgement and judgement.counted else "would not count"
            guess += f": {judgement.reason}" if judgement and judgement.reason else ""
            verdict = f"not judged by the operator yet; {guess}"
        print(f"  {approval.name}  by {approval.approver or '?'} at {at}  {verdict}")
    return EXIT_OK


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
