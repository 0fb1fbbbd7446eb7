"""The admission webhooks, served by the operator itself (kopf's webhook server, TLS) and registered by
kopf in the ValidatingWebhookConfiguration and MutatingWebhookConfiguration `chaosguard.dev`.

Importing this module registers the handlers, which kopf refuses to run without a webhook server:
`chaosguard run --webhook-port` imports it and configures the server (`security.prepare`).

- mutating, ChaosExperiment CREATE/UPDATE: stamps the author from the request's userInfo, signed;
  on UPDATE keeps the author and adds whoever changes the spec to the editors. Stamp annotations
  a user writes are overwritten, on CREATE and UPDATE alike.
- validating, ChaosExperiment CREATE/UPDATE of the spec: the policy rules (as `chaosguard
  validate`, with live namespace labels) and a SubjectAccessReview per target namespace.
- mutating, ChaosApproval CREATE: stamps the approver, the time and the experiment's UID, signed;
  refuses an approval of an experiment that does not exist (it would be bound to no UID).
- validating, ChaosApproval CREATE: refuses an approval that would not count, saying why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import kopf

from chaosguard.admission.judge import judge_approval, judge_experiment
from chaosguard.api.models import GROUP, VERSION
from chaosguard.decisions.pause import PAUSED_BY, pause_stamp
from chaosguard.decisions.stamps import (
    APPROVAL_STAMP,
    EXPERIMENT_STAMP,
    ApprovalStamp,
    Identity,
    annotation_changes,
    approval_annotations,
    experiment_annotations,
    read_experiment_stamp,
    restore,
    stamp_for_create,
    stamp_for_update,
)
from chaosguard.runtime.context import OperatorContext

OPERATIONS: list[Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]] = ["CREATE", "UPDATE"]


def _context(memo: kopf.Memo) -> OperatorContext:
    context: OperatorContext = memo.context
    if context.signing_key is None:  # security.prepare refuses to start webhooks without one
        raise kopf.AdmissionError("the operator has no signing key", code=500)
    return context


def _annotations(body: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((body or {}).get("metadata") or {}).get("annotations") or {})


def _apply(patch: kopf.Patch, changes: Mapping[str, str | None]) -> None:
    for key, value in changes.items():
        patch.metadata.annotations[key] = value


def _raw(body: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if body is None else {key: body[key] for key in body}


@kopf.on.mutate(GROUP, VERSION, "chaosexperiments", id="experiment-author", operations=OPERATIONS)
def stamp_experiment(
    body: kopf.Body, userinfo: kopf.UserInfo, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any
) -> None:
    old: kopf.Body | None = kwargs.get("old")
    operation = str(kwargs.get("operation") or "")
    context = _context(memo)
    assert context.signing_key is not None
    requester = Identity.from_userinfo(userinfo)
    raw, current = _raw(body) or {}, _annotations(body)
    if operation == "CREATE" or old is None:
        stamp = stamp_for_create(requester, datetime.now(UTC))
    else:
        previous = read_experiment_stamp(context.signing_key, _raw(old) or {})
        spec_before, spec_now = old.get("spec") or {}, raw.get("spec") or {}
        updated = stamp_for_update(previous, requester, spec_before, spec_now, datetime.now(UTC))
        if updated is None:  # never stamped by us: nobody can stamp it now, and nobody can forge one
            _apply(patch, restore(current, _annotations(old), EXPERIMENT_STAMP))
            return
        stamp = updated
    wanted = experiment_annotations(context.signing_key, raw.get("metadata") or {}, raw.get("spec") or {}, stamp)
    wanted[PAUSED_BY] = pause_stamp(_raw(old), raw, requester.username, _annotations(old))
    _apply(patch, annotation_changes(current, wanted))


@kopf.on.validate(GROUP, VERSION, "chaosexperiments", id="experiment-policy", operations=OPERATIONS)
async def validate_experiment(body: kopf.Body, userinfo: kopf.UserInfo, memo: kopf.Memo, **kwargs: Any) -> None:
    old: kopf.Body | None = kwargs.get("old")
    context = _context(memo)
    refusals = await judge_experiment(
        context.cluster,
        context.signing_key,
        context.operator_namespace,
        _raw(body) or {},
        _raw(old),
        Identity.from_userinfo(userinfo),
    )
    if refusals:
        raise kopf.AdmissionError("; ".join(str(refusal) for refusal in refusals), code=403)


@kopf.on.mutate(GROUP, VERSION, "chaosapprovals", id="approval-approver", operations=OPERATIONS)
async def stamp_approval(
    body: kopf.Body, userinfo: kopf.UserInfo, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any
) -> None:
    old: kopf.Body | None = kwargs.get("old")
    operation = str(kwargs.get("operation") or "")
    context = _context(memo)
    assert context.signing_key is not None
    current = _annotations(body)
    if operation != "CREATE" and old is not None:
        _apply(patch, restore(current, _annotations(old), APPROVAL_STAMP))
        return
    raw = _raw(body) or {}
    namespace = str((raw.get("metadata") or {}).get("namespace") or "")
    spec = raw.get("spec") or {}
    name = str(spec.get("experiment") or "")
    experiment = await asyncio.to_thread(context.cluster.experiment, namespace, name)
    uid = str((experiment or {}).get("metadata", {}).get("uid") or "")
    if not uid:
        # An approval is always bound to an existing experiment's UID: one stamped for a name alone
        # could count for whatever experiment is created under that name later.
        raise kopf.AdmissionError(
            f"there is no ChaosExperiment {name!r} in namespace {namespace!r} to approve; an approval is bound "
            "to an existing experiment, so create the experiment first, then approve it",
            code=403,
        )
    requester = Identity.from_userinfo(userinfo)
    stamp = ApprovalStamp(requester.username, requester.groups, context.clock.now(), uid)
    wanted: dict[str, str | None] = dict(approval_annotations(context.signing_key, namespace, spec, stamp))
    _apply(patch, annotation_changes(current, wanted))


@kopf.on.validate(GROUP, VERSION, "chaosapprovals", id="approval-rules", operations=OPERATIONS)
async def validate_approval(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    old: kopf.Body | None = kwargs.get("old")
    context = _context(memo)
    problems = await judge_approval(
        context.cluster,
        context.signing_key,
        context.operator_namespace,
        _raw(body) or {},
        _raw(old),
        context.clock.now(),
    )
    if problems:
        raise kopf.AdmissionError("this approval would not count: " + "; ".join(problems), code=403)
