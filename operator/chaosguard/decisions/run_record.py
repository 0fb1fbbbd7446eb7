"""The run record in an experiment's status is the operator's record, never an authority.

Whoever may write `chaosexperiments/status` could otherwise hand the operator a run it never
started (a deadline minutes away, a round due now) or a fault entry naming any pod in the cluster
for it to "clean up". So every status write of a run seals it: an HMAC, with the operator's
signing key, over what decides what the operator does with that run (its id, start and deadline,
the hash of the spec it started with, the namespaces it may act in, the pods it targeted, the
faults it placed and the pods it killed). A run the operator resumes, or whose faults it would
remove, must carry a seal that verifies for this very experiment (its UID); anything else is a
record someone else wrote. Fields the seal leaves out (states, messages, SLI samples) only
describe: no decision to kill, inject or touch a pod reads them.

Pure: no I/O; the key is an argument. `seal_run` and `run_seal_problem` are what the engine and a
standby replica call.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chaosguard.api.models import RunStatus
from chaosguard.decisions.stamps import format_time, sign, signature_matches


def _moment(value: datetime | None) -> str:
    return format_time(value) if value is not None else ""


def _payload(experiment_uid: str, run: RunStatus) -> dict[str, Any]:
    return {
        "kind": "ChaosExperimentRun",
        "experimentUid": experiment_uid,
        "id": run.id,
        "startedAt": _moment(run.started_at),
        "deadline": _moment(run.deadline),
        "specHash": run.spec_hash,
        "targetNamespaces": list(run.target_namespaces),
        "targets": [[t.namespace, t.name, t.uid] for t in run.targets],
        "faults": [[f.namespace, f.name, f.uid, f.container, f.kind] for f in run.faults],
        "kills": [k.uid for k in run.kills],
    }


def seal_run(key: bytes, experiment_uid: str, run: RunStatus) -> str:
    """The seal of `run` as it is now, for the experiment with this UID."""
    return sign(key, _payload(experiment_uid, run))


def run_seal_problem(key: bytes | None, experiment_uid: str, run: RunStatus) -> str | None:
    """None when `run` is the operator's own record for this experiment; else what is wrong, for people."""
    if key is None:
        return (
            f"the operator has no signing key, so it cannot tell its own record of run {run.id} from one someone "
            "else wrote; give it one (CHAOSGUARD_NAMESPACE for the Secret chaosguard-signing-key, or "
            "--signing-key-file)"
        )
    if not experiment_uid:
        return f"run {run.id} belongs to an experiment without a UID, so its record cannot be verified"
    if not run.seal:
        return (
            f"the record of run {run.id} in status carries no seal: the operator did not write it (a status "
            "write by someone else, or a record from a version of chaosguard that did not seal its runs)"
        )
    if not signature_matches(key, _payload(experiment_uid, run), run.seal):
        return (
            f"the record of run {run.id} in status does not verify: its id, times, spec hash, namespaces, "
            "targets, faults or kills were changed by someone other than the operator, or it was sealed "
            "with another signing key or for another experiment"
        )
    return None
