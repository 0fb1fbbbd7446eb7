"""The leader election's decision, pure: given the Lease as this candidate has observed it (and when, on
its own monotonic clock), whether to create, renew, take or wait; when a leader must give up; and the
record a stepping-down leader writes. `runtime.leader` does the I/O (the Lease, the timers) around it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime

LEASE_NAME = "chaosguard-leader"


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    identity: str
    name: str = LEASE_NAME
    lease_duration: float = 15.0  # a standby takes over once a holder has been silent this long
    renew_deadline: float = 10.0  # the leader gives up when it has not renewed for this long
    renew_period: float = 5.0  # the leader renews this often
    retry_period: float = 2.0  # standbys look, and a leader retries a failed renewal, this often

    def problems(self) -> list[str]:
        """What is wrong with these timings, for people (empty when they are safe)."""
        found = []
        if not self.namespace:
            found.append("leader election needs a namespace: --leader-election-namespace or $CHAOSGUARD_NAMESPACE")
        if not self.identity:
            found.append("leader election needs a non-empty identity")
        if self.lease_duration < 1 or self.lease_duration != int(self.lease_duration):
            found.append(f"--leader-election-lease-duration {self.lease_duration:g} must be a whole number >= 1")
        if self.retry_period <= 0:
            found.append(f"--leader-election-retry-period {self.retry_period:g} must be > 0")
        if not 0 < self.renew_period < self.renew_deadline:
            found.append(
                f"--leader-election-renew-period {self.renew_period:g} must be > 0 and shorter than the renew "
                f"deadline {self.renew_deadline:g}, so that a failed renewal is retried before the deadline"
            )
        if not self.renew_deadline < self.lease_duration:
            found.append(
                f"--leader-election-renew-deadline {self.renew_deadline:g} must be shorter than the lease duration "
                f"{self.lease_duration:g}: a leader must stop before a standby may take over"
            )
        return found


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease's spec that the election reads and writes."""

    holder: str = ""
    duration_seconds: int | None = None
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0


@dataclass(frozen=True)
class Observation:
    """A record (and its resourceVersion), and when (monotonic seconds, this process's clock) it was
    first seen as it is."""

    record: LeaseRecord
    at: float
    version: str | None = None


def observe(previous: Observation | None, current: LeaseRecord, now: float, version: str | None = None) -> Observation:
    """The clock of a lease restarts whenever it changes (its record, or its resourceVersion: every write
    counts, even one whose renewTime a stuck clock left the same); an unchanged lease keeps its time."""
    if previous is not None and previous.record == current and previous.version == version:
        return previous
    return Observation(current, now, version)


class Verdict(enum.Enum):
    CREATE = "create"  # no Lease yet: create it, holding it
    RENEW = "renew"  # we hold it: renew it
    TAKE = "take"  # free or expired: take it over
    WAIT = "wait"  # someone else holds it, and it has not expired


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    write: LeaseRecord | None  # what to write (CREATE, RENEW, TAKE)
    holder: str  # who holds the lease once this decision is carried out
    wait: float  # WAIT: seconds until it could expire (the caller looks again sooner, every retry period)
    reason: str


def decide(observed: Observation | None, identity: str, config: ElectionConfig, now: float, wall: datetime) -> Decision:
    """What a candidate does with the Lease as it is now.

    `observed` is None when there is no Lease; `now` is monotonic seconds (the same clock as
    `observed.at`), `wall` the time written into acquireTime/renewTime for people and other tools.
    """
    duration = int(config.lease_duration)
    if observed is None:
        record = LeaseRecord(identity, duration, wall, wall, 0)
        return Decision(Verdict.CREATE, record, identity, 0.0, "no lease yet")
    current = observed.record
    if current.holder == identity:
        renewed = replace(
            current, duration_seconds=duration, renew_time=wall, acquire_time=current.acquire_time or wall
        )
        return Decision(Verdict.RENEW, renewed, identity, 0.0, "we hold the lease")
    taken = LeaseRecord(identity, duration, wall, wall, current.transitions + 1)
    if not current.holder:
        return Decision(Verdict.TAKE, taken, identity, 0.0, "the lease is free (released by its last holder)")
    lasts = float(current.duration_seconds or duration)
    remaining = observed.at + lasts - now
    if remaining > 0:
        return Decision(
            Verdict.WAIT, None, current.holder, remaining, f"{current.holder} holds the lease (renewed in time)"
        )
    return Decision(
        Verdict.TAKE, taken, identity, 0.0, f"{current.holder} has not renewed the lease for {lasts:g} s or more"
    )


def renewal_overdue(last_renewal: float, now: float, config: ElectionConfig) -> bool:
    """True once the leader has gone `renew_deadline` without a successful renewal (counted from the
    moment the last successful renewal was *sent*: the API server may have applied it at any point
    after that, and a standby counts from when it saw it)."""
    return now - last_renewal >= config.renew_deadline


def released(record: LeaseRecord, wall: datetime) -> LeaseRecord:
    """The record a leader writes when it steps down: no holder, so the standby takes over at once."""
    return LeaseRecord("", 1, record.acquire_time, wall, record.transitions)
