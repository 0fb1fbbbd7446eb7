"""What the admission webhook decides, apart from kopf: one code path for the policy rules and the
permission checks, shared by the webhook (at `kubectl apply` time) and the engine (before a run).

Nobody can make the operator do what they could not do themselves: every target namespace of an
experiment is checked with a SubjectAccessReview for its author (and, on an edit of the spec, for
the user making it): pod-kill needs `delete pods` there, the network faults (latency, network, partition)
`patch pods/ephemeralcontainers`, node-drain `create pods/eviction` (the pods it evicts are all in target
namespaces) and `patch nodes` cluster-wide. Every Secret its steadyState names needs `get` on that Secret (the
operator reads it and sends it to Prometheus), and every Prometheus URL must be one the cluster's
owners allow (`decisions.prometheus_access`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from chaosguard.api.actions import Permission
from chaosguard.api.errors import describe_validation_error
from chaosguard.api.models import Action, ChaosApprovalSpec, ChaosExperimentSpec
from chaosguard.clients.kube import Cluster
from chaosguard.decisions.approvals import ApprovalView, ExperimentView, count_valid
from chaosguard.decisions.policy import (
    EffectivePolicy,
    Refusal,
    applicable_policies,
    combine,
    static_refusals,
    target_namespaces,
)
from chaosguard.decisions.prometheus_access import endpoint_refusals, named_secrets, secret_refusal
from chaosguard.decisions.stamps import Identity, StampCheck, read_experiment_stamp, spec_hash

AUTHOR_UNKNOWN = "author-unknown"
TARGET_PERMISSION = "target-permission"
PROMETHEUS_URL_ENV = "CHAOSGUARD_PROMETHEUS_URL"  # `chaosguard run --prometheus-url` sets it


def operator_prometheus_url() -> str | None:
    """The Prometheus the operator was configured with: the one URL a bearer token may go to when no
    ChaosPolicy lists allowedPrometheusURLs."""
    return os.environ.get(PROMETHEUS_URL_ENV, "").strip() or None


def needed_permission(action: Action) -> tuple[str, str, str]:
    """(verb, resource, subresource) the author must hold in every target namespace (the table of actions)."""
    permission = action.facts.permission
    return permission.verb, permission.resource, permission.subresource


def author_unknown(problem: str) -> Refusal:
    return Refusal(
        AUTHOR_UNKNOWN,
        f"the author is unknown: the admission webhook must be running ({problem}), and the operator does "
        "nothing for an author it cannot know; turn the webhooks on (Helm: webhook.enabled=true; or "
        "`chaosguard run --webhook-port ...`), then delete the experiment and create it again",
        "metadata.annotations",
    )


async def permission_refusals(
    cluster: Cluster, identities: Sequence[Identity], namespaces: Sequence[str], action: Action
) -> list[Refusal]:
    """A refusal for every (user, target namespace) where the user lacks the permission the fault needs,
    and for every (user, cluster-wide permission) of a kind that acts on cluster-scoped objects (node-drain:
    `patch nodes`), asked without a namespace."""
    facts = action.facts
    checks: list[tuple[Identity, str, Permission]] = [
        (identity, namespace, facts.permission) for identity in identities for namespace in namespaces
    ]
    checks += [(identity, "", permission) for identity in identities for permission in facts.cluster_permissions]
    answers = await asyncio.gather(
        *(
            asyncio.to_thread(
                cluster.may,
                identity.username,
                identity.groups,
                namespace,
                permission.verb,
                permission.resource,
                permission.subresource,
                uid=identity.uid,
                extra=identity.extra,
            )
            for identity, namespace, permission in checks
        )
    )
    refusals = []
    for (identity, namespace, permission), (allowed, _reason) in zip(checks, answers, strict=True):
        if allowed:
            continue
        if not namespace:
            refusals.append(
                Refusal(
                    TARGET_PERMISSION,
                    f"{identity.username} may not {permission} (cluster-wide), which action {action.value} needs, "
                    "and the operator only does what the experiment's author could do; ask for a ClusterRole "
                    f"granting `{permission}`, or use another action",
                    "spec.action",
                )
            )
            continue
        refusals.append(
            Refusal(
                TARGET_PERMISSION,
                f"{identity.username} may not {permission} in namespace {namespace!r}, and the operator only "
                f"does what the experiment's author could do; ask for `{permission}` in {namespace!r} "
                "or remove it from spec.target.namespaces",
                "spec.target.namespaces",
            )
        )
    return refusals


async def secret_refusals(
    cluster: Cluster, identities: Sequence[Identity], namespace: str, spec: ChaosExperimentSpec
) -> list[Refusal]:
    """A refusal for every (user, Secret named by the experiment) the user may not `get` themselves."""
    checks = [(identity, field, ref.name) for identity in identities for field, ref in named_secrets(spec)]
    answers = await asyncio.gather(
        *(
            asyncio.to_thread(
                cluster.may,
                identity.username,
                identity.groups,
                namespace,
                "get",
                "secrets",
                uid=identity.uid,
                extra=identity.extra,
                name=secret,
            )
            for identity, _field, secret in checks
        )
    )
    return [
        secret_refusal(identity.username, namespace, field, secret)
        for (identity, field, secret), (allowed, _reason) in zip(checks, answers, strict=True)
        if not allowed
    ]


async def effective_policy(
    cluster: Cluster, spec: ChaosExperimentSpec, namespace: str, operator_namespace: str | None
) -> tuple[EffectivePolicy, dict[str, dict[str, str]]]:
    labels, policies = await asyncio.gather(
        asyncio.to_thread(cluster.namespace_labels), asyncio.to_thread(cluster.policies)
    )
    chosen = applicable_policies(policies, [*target_namespaces(spec, namespace), namespace], labels)
    return combine(chosen, operator_namespace), labels


def _spec_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
    spec: Mapping[str, Any] = body.get("spec") or {}
    return spec


async def judge_experiment(
    cluster: Cluster,
    key: bytes | None,
    operator_namespace: str | None,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    requester: Identity,
) -> list[Refusal]:
    """Every reason to refuse this CREATE or UPDATE of a ChaosExperiment; metadata-only updates pass."""
    if old is not None and dict(_spec_of(old)) == dict(_spec_of(body)):
        return []
    if old is not None and spec_hash(_spec_of(old)) == spec_hash(_spec_of(body)):
        # Only spec.paused changed: whoever may patch the experiment may pause it, in or out of a window;
        # the operator judges a resume like a run's start before any new fault (decisions.pause).
        return []
    try:
        spec = ChaosExperimentSpec.model_validate(dict(_spec_of(body)))
    except ValidationError as error:
        return [Refusal("schema", line) for line in describe_validation_error(error, prefix="spec")]
    namespace = str((body.get("metadata") or {}).get("namespace") or "")
    effective, labels = await effective_policy(cluster, spec, namespace, operator_namespace)
    refusals = static_refusals(spec, namespace, effective, labels)
    check: StampCheck = read_experiment_stamp(key, body)
    identities = [requester]
    if check.stamp is None:
        refusals.append(author_unknown(check.problem))
    elif check.stamp.author != requester.username:
        identities.insert(0, check.stamp.identity)  # an edit: the author and the editor both need the rights
    refusals.extend(await permission_refusals(cluster, identities, target_namespaces(spec, namespace), spec.action))
    refusals.extend(endpoint_refusals(spec, effective, operator_prometheus_url()))
    refusals.extend(await secret_refusals(cluster, identities, namespace, spec))
    return refusals


async def judge_approval(
    cluster: Cluster,
    key: bytes | None,
    operator_namespace: str | None,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    now: datetime,
) -> list[str]:
    """Why this ChaosApproval would not count (refused at once rather than ignored later)."""
    if old is not None:
        return [] if dict(_spec_of(old)) == dict(_spec_of(body)) else ["a ChaosApproval cannot be changed"]
    try:
        approval_spec = ChaosApprovalSpec.model_validate(dict(_spec_of(body)))
    except ValidationError as error:
        return describe_validation_error(error, prefix="spec")
    namespace = str((body.get("metadata") or {}).get("namespace") or "")
    experiment = await asyncio.to_thread(cluster.experiment, namespace, approval_spec.experiment)
    if experiment is None:
        return [f"there is no ChaosExperiment {approval_spec.experiment!r} in namespace {namespace!r} to approve"]
    check = read_experiment_stamp(key, experiment)
    if check.stamp is None:
        unknown = author_unknown(check.problem).message
        return [f"ChaosExperiment {approval_spec.experiment} cannot be approved: {unknown}"]
    try:
        spec = ChaosExperimentSpec.model_validate(dict(_spec_of(experiment)))
    except ValidationError:
        return [f"ChaosExperiment {approval_spec.experiment} has an invalid spec; fix it before approving it"]
    effective, _ = await effective_policy(cluster, spec, namespace, operator_namespace)
    view = ExperimentView(
        name=approval_spec.experiment,
        uid=str(experiment["metadata"].get("uid") or ""),
        spec_hash=spec_hash(_spec_of(experiment)),
        writers=check.stamp.writers,
    )
    count = count_valid([ApprovalView.from_body(body, key)], view, effective.approvals, now)
    return [judgement.reason for judgement in count.refused]
