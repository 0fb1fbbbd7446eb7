"""The engine's own identity and approval gates: defence in depth behind the admission webhook.

- Author: an experiment runs only with a valid author stamp (signed by this operator, for this object
  and this exact spec): an operator that cannot know who wrote an experiment must not act for an
  unknown author. Only the cluster's owners can waive that, with `--allow-unverified-authors` (then
  anyone who may create a ChaosExperiment acts with the operator's rights), and never where a policy
  requires approvals. With a valid stamp, the author and every editor must still hold the fault's
  permission in every target namespace when a run starts (a SubjectAccessReview; see
  `stamps.recheck` for whose groups count), so a revoked RoleBinding stops the next game day.
  Likewise `get` on every Secret its steadyState names; with no author known, no Secret is read.
  Every Prometheus URL must be one the cluster's owners allow (`decisions.prometheus_access`).
- Approvals: after admission, an experiment that a policy requires approval for waits in
  AwaitingApproval until `approvals.count_valid` is satisfied, re-checked on every poll; and again
  right before every run starts (an approval may have expired meanwhile). The judgement of every
  approval is kept in status.approvals, and each change is an Event.
"""

from __future__ import annotations

from chaosguard.admission.judge import author_unknown, operator_prometheus_url, permission_refusals, secret_refusals
from chaosguard.api.models import ApprovalRecord, ChaosExperimentSpec, Phase
from chaosguard.clients import informers
from chaosguard.clients.kube import Cluster
from chaosguard.decisions.approvals import ApprovalCount, ApprovalView, ExperimentView, count_valid
from chaosguard.decisions.policy import Refusal, static_refusals, target_namespaces
from chaosguard.decisions.prometheus_access import endpoint_refusals, secrets_without_author
from chaosguard.decisions.stamps import read_experiment_stamp, recheck, spec_hash
from chaosguard.runtime.context import Driver, World

POLL_SECONDS = 2.0  # how often an experiment awaiting approval looks for new ones


def author_required(driver: Driver, world: World) -> bool:
    context = driver.context
    return bool(world.effective.approvals) or context.webhooks or not context.allow_unverified_authors


async def identity_refusal(driver: Driver, spec: ChaosExperimentSpec, world: World) -> Refusal | None:
    check = read_experiment_stamp(driver.context.signing_key, driver.body)
    urls = endpoint_refusals(spec, world.effective, operator_prometheus_url())
    if check.stamp is None:
        if author_required(driver, world):
            return author_unknown(check.problem)
        return urls[0] if urls else secrets_without_author(spec, check.problem)
    who = recheck(check.stamp, driver.now())
    refusals = await permission_refusals(
        driver.context.cluster, list(who.identities), target_namespaces(spec, driver.namespace), spec.action
    )
    refusals += urls
    refusals += await secret_refusals(driver.context.cluster, list(who.identities), driver.namespace, spec)
    if not refusals:
        return None
    first = refusals[0]
    return Refusal(first.rule, f"{first.message} ({who.caveat})" if who.caveat else first.message, first.field)


async def enter_awaiting(driver: Driver, spec: ChaosExperimentSpec) -> float:
    """Admitted by policy, now waiting for approvals (judged on the next step)."""
    driver.status.observed_generation = driver.generation
    driver.set_condition("Admitted", "True", "PolicyAllows", "every applicable policy allows this experiment")
    driver.status.phase = Phase.AWAITING_APPROVAL
    driver.status.next_run_at = None
    driver.status.message = "admitted; waiting for approvals"
    driver.set_condition("Approved", "False", "AwaitingApproval", driver.status.message)
    driver.save_before_waiting()
    driver.emit("Normal", "AwaitingApproval", driver.status.message)
    return 0.0


async def await_approvals(driver: Driver, spec: ChaosExperimentSpec) -> float:
    """One poll in AwaitingApproval: policy and author again, then the approvals."""
    world = await driver.world(spec)
    refusals = static_refusals(spec, driver.namespace, world.effective, world.namespace_labels)
    if refusals:
        await driver.reject("PolicyRefused", "; ".join(str(r) for r in refusals), refusals)
        return POLL_SECONDS
    refusal = await identity_refusal(driver, spec, world)
    if refusal is not None:
        await driver.reject(refusal.reason, str(refusal), [refusal])
        return POLL_SECONDS
    count = await judge(driver, world)
    if count.satisfied:
        await _approved(driver, spec, count)
        return 0.0
    await _waiting(driver, count)
    return POLL_SECONDS


async def approvals_hold(driver: Driver, spec: ChaosExperimentSpec, world: World) -> bool:
    """Right before a run starts: enough valid approvals now? If not, back to AwaitingApproval."""
    if not world.effective.approvals:
        return True
    count = await judge(driver, world)
    if count.satisfied:
        return True
    driver.status.phase = Phase.AWAITING_APPROVAL
    driver.status.next_run_at = None
    await _waiting(driver, count, force=True)
    driver.emit("Warning", "AwaitingApproval", f"not starting: {driver.status.message}")
    return False


async def judge(driver: Driver, world: World) -> ApprovalCount:
    """Counts the approvals; records each judgement in status and emits an Event for each change."""
    key = driver.context.signing_key
    check = read_experiment_stamp(key, driver.body)
    experiment = ExperimentView(
        name=driver.name,
        uid=str(driver.body["metadata"].get("uid") or ""),
        spec_hash=spec_hash(driver.body["spec"]),
        writers=check.stamp.writers if check.stamp is not None else frozenset(),
    )
    if driver.cache_is_live(informers.APPROVALS):
        items = driver.context.cache.approvals(driver.namespace)
    else:
        items = await driver.context.api.call(Cluster.approvals, driver.namespace)
    views = [ApprovalView.from_body(item, key) for item in items]
    count = count_valid(views, experiment, world.effective.approvals, driver.now())
    before = {record.name: record for record in driver.status.approvals}
    records = [judgement.to_record() for judgement in count.judgements]
    for record in records:
        _announce(driver, before.get(record.name), record)
    if [r.model_dump() for r in records] != [r.model_dump() for r in driver.status.approvals]:
        driver.status.approvals = records
        await driver.save()
    return count


def _announce(driver: Driver, before: ApprovalRecord | None, now: ApprovalRecord) -> None:
    if before is not None and (before.counted, before.reason) == (now.counted, now.reason):
        return
    who = f"approval {now.name} by {now.approver or 'an unknown approver'}"
    if now.counted:
        until = f" until {now.expires_at.isoformat()}" if now.expires_at else ""
        driver.emit("Normal", "ApprovalCounted", f"{who} counts{until}")
    elif before is not None and before.counted and now.reason.startswith("expired"):
        driver.emit("Warning", "ApprovalExpired", f"{who} no longer counts: {now.reason}")
    else:
        driver.emit("Warning", "ApprovalRejected", f"{who} does not count: {now.reason}")


async def _waiting(driver: Driver, count: ApprovalCount, force: bool = False) -> None:
    message = "waiting for approval: " + "; ".join(count.missing)
    if driver.status.message != message or force:
        driver.status.message = message
        driver.set_condition("Approved", "False", "AwaitingApproval", message)
        await driver.save()


async def _approved(driver: Driver, spec: ChaosExperimentSpec, count: ApprovalCount) -> None:
    approvers = ", ".join(sorted({j.approval.approver for j in count.valid}))
    approved = f"approved by {approvers}" if approvers else "no ChaosPolicy requires approval any more"
    driver.set_condition("Approved", "True", "Approved", approved)
    driver.status.message = f"{approved}; {driver.schedule_next(spec)}"
    driver.save_before_waiting()
    driver.emit("Normal", "Approved", driver.status.message)
