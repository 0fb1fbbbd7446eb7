"""Leader election on a coordination.k8s.io/v1 Lease, so that one replica at a time starts runs, kills
and injects.

Every replica of `chaosguard run --leader-elect` runs kopf from the start (the admission webhooks, the
watches, and a driver per experiment that guards running runs and aborts them on a breach); the Lease
`chaosguard-leader` in the operator's namespace only decides which replica *leads* (`Leadership`):

- A standby takes the Lease when its holder has not renewed it for `leaseDurationSeconds`, counted
  on the standby's own monotonic clock from when it *saw* the last change (as client-go does), so
  that clock skew between nodes never shortens a lease; a released Lease (no holder) is taken at once.
- Every write carries the resourceVersion that was read (optimistic concurrency): of two
  candidates, one write wins and the other gets a 409 Conflict and stays a standby.
- The leader renews every `renew_period`; when a renewal fails it retries every `retry_period`, and
  when it has not renewed within `renew_deadline` (shorter than the lease duration), or finds
  another holder, it exits at once with EXIT_LOST_LEASE, without a graceful stop, so that it never
  acts on a lease another replica may already hold. Kubernetes restarts it, as a standby.
- On SIGTERM the leader stops leading at once, lets a kill or injection call in flight return, and
  releases the Lease (empty holderIdentity), so a standby, which already guards every run, takes
  over at once rather than after a lease duration.

kubernetes-client 37 ships `kubernetes.leaderelection` with a LeaseLock, but its loop is
synchronous and thread-based, works on the global default client, and never releases the lease;
the decision is pure (`decisions.lease.decide`, unit-tested) and this module does the I/O with asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn

from chaosguard.decisions.lease import (
    LEASE_NAME,
    Decision,
    ElectionConfig,
    LeaseRecord,
    Observation,
    Verdict,
    decide,
    observe,
    released,
    renewal_overdue,
)
from chaosguard.runtime.leadership import Leadership

__all__ = [
    "EXIT_LOST_LEASE",
    "LEASE_NAME",
    "Decision",
    "ElectionConfig",
    "LeaderElector",
    "LeaseConflict",
    "LeaseLock",
    "LeaseLost",
    "LeaseRecord",
    "Observation",
    "Verdict",
    "campaign",
    "decide",
    "default_identity",
    "observe",
    "record_from_spec",
    "released",
    "renewal_overdue",
    "spec_from_record",
]

logger = logging.getLogger("chaosguard.leader")

EXIT_LOST_LEASE = 3  # the exit status of a leader that could not renew its lease
# How long a stepping-down leader waits for its last kill or injection call to return before it
# releases the Lease (kopf's daemons get the same backoff to record what they did).
STEP_DOWN_GRACE = 5.0


def default_identity() -> str:
    """The pod's name (its hostname) and a random suffix: a restarted container is a new candidate."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- I/O: the Lease itself


class LeaseConflict(Exception):
    """A write lost the race (409): someone wrote the Lease since it was read."""


def _format_time(moment: datetime | None) -> str | None:
    # MicroTime: RFC 3339 with exactly six fractional digits, in UTC.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if moment else None


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def record_from_spec(spec: dict[str, Any]) -> LeaseRecord:
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        duration_seconds=spec.get("leaseDurationSeconds"),
        acquire_time=_parse_time(spec.get("acquireTime")),
        renew_time=_parse_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
    )


def spec_from_record(record: LeaseRecord) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.duration_seconds,
        "acquireTime": _format_time(record.acquire_time),
        "renewTime": _format_time(record.renew_time),
        "leaseTransitions": record.transitions,
    }
    return {key: value for key, value in spec.items() if value is not None}


class LeaseLock:
    """Reads and writes one Lease with the `kubernetes` client (get, create, update; nothing else)."""

    def __init__(self, api: Any, namespace: str, name: str, timeout: float) -> None:
        self.api = api  # a kubernetes.client.CoordinationV1Api
        self.namespace = namespace
        self.name = name
        self.timeout = timeout

    def read(self) -> tuple[LeaseRecord | None, str | None]:
        """The record and its resourceVersion, or (None, None) when there is no Lease."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=self.timeout
            )
        except ApiException as error:
            if error.status == 404:
                return None, None
            raise
        lease = json.loads(response.data)
        return record_from_spec(lease.get("spec") or {}), str(lease["metadata"]["resourceVersion"])

    def write(self, record: LeaseRecord, resource_version: str | None) -> str:
        """Creates the Lease (resource_version None) or replaces the version that was read."""
        from kubernetes.client.exceptions import ApiException

        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata}
        body["spec"] = spec_from_record(record)
        try:
            if resource_version is None:
                response = self.api.create_namespaced_lease(
                    self.namespace, body, _preload_content=False, _request_timeout=self.timeout
                )
            else:
                response = self.api.replace_namespaced_lease(
                    self.name, self.namespace, body, _preload_content=False, _request_timeout=self.timeout
                )
        except ApiException as error:
            if error.status == 409:
                raise LeaseConflict(f"the Lease {self.namespace}/{self.name} changed since it was read") from None
            raise
        return str(json.loads(response.data)["metadata"]["resourceVersion"])


# --------------------------------------------------------------------------- the elector


class LeaseLost(Exception):
    """The leader cannot be sure it still holds the lease."""


class LeaderElector:
    def __init__(
        self,
        lock: LeaseLock,
        config: ElectionConfig,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.lock = lock
        self.config = config
        self.monotonic = monotonic
        self.wall = wall
        self.leading = False
        self.holder = ""  # the holder as last seen
        self.observation: Observation | None = None
        self.last_attempt: float | None = None  # when the loop last asked the API server
        self.last_contact: float | None = None  # when the API server last answered
        self.last_renewal: float | None = None  # when the last successful write as leader was sent

    def healthy(self) -> bool:
        """Ready: the API server answered within the lease duration (leader and standby alike)."""
        return self.last_contact is not None and self.monotonic() - self.last_contact < self.config.lease_duration

    def alive(self) -> bool:
        """Live: the election loop is going round (even while the API server is away)."""
        slack = self.config.lease_duration + self.config.retry_period
        return self.last_attempt is None or self.monotonic() - self.last_attempt < slack

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        async with asyncio.timeout(self.lock.timeout):
            return await asyncio.to_thread(function, *args)

    async def attempt(self) -> Decision:
        """One look at the Lease, and the write it calls for; raises on API errors and conflicts."""
        sent = self.last_attempt = self.monotonic()
        record, version = await self._call(self.lock.read)
        self.last_contact = self.monotonic()
        self.observation = None if record is None else observe(self.observation, record, self.last_contact, version)
        decision = decide(self.observation, self.config.identity, self.config, self.monotonic(), self.wall())
        if decision.write is not None:
            written = await self._call(self.lock.write, decision.write, version)
            self.last_contact = self.monotonic()
            self.observation = Observation(decision.write, self.last_contact, written)
            self.last_renewal = sent
        if self.holder != decision.holder:
            logger.info("the leader is now %s (%s)", decision.holder or "nobody", decision.reason)
        self.holder = decision.holder
        return decision

    async def acquire(self, stopping: asyncio.Event) -> bool:
        """Stands by until this process holds the lease (True), or until `stopping` is set (False)."""
        logger.info(
            "standing by for the lease %s/%s as %s", self.config.namespace, self.config.name, self.config.identity
        )
        while not stopping.is_set():
            try:
                decision = await self.attempt()
            except LeaseConflict:
                decision = None  # another candidate wrote first; look again
            except Exception as error:
                logger.warning("cannot read or write the lease %s: %s", self.config.name, error)
                decision = None
            if decision is not None and decision.verdict is not Verdict.WAIT:
                self.leading = True
                logger.info("acquired the lease %s/%s: leading", self.config.namespace, self.config.name)
                return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.retry_period):
                    await stopping.wait()
        return False

    async def hold(self) -> NoReturn:
        """Renews the lease until it cannot: then raises LeaseLost (it never returns)."""
        config = self.config
        while True:
            assert self.last_renewal is not None
            await asyncio.sleep(max(0.0, self.last_renewal + config.renew_period - self.monotonic()))
            while True:
                remaining = self.last_renewal + config.renew_deadline - self.monotonic()
                if remaining <= 0:
                    raise LeaseLost(f"could not renew the lease within {config.renew_deadline:g} s")
                try:
                    async with asyncio.timeout(remaining):
                        decision = await self.attempt()
                except TimeoutError:
                    continue  # the deadline check above ends it
                except LeaseConflict:
                    decision = None  # look again: it may be our own write that raced
                except Exception as error:
                    logger.warning("cannot renew the lease %s: %s", config.name, error)
                    decision = None
                if decision is not None and decision.verdict is Verdict.RENEW:
                    break
                if decision is not None:
                    self.leading = False
                    raise LeaseLost(f"the lease is held by {decision.holder} now")
                await asyncio.sleep(max(0.0, min(config.retry_period, remaining)))

    async def release(self) -> None:
        """Steps down: writes an empty holder if we still hold the lease (best effort)."""
        self.leading = False
        try:
            record, version = await self._call(self.lock.read)
            if record is not None and record.holder == self.config.identity:
                await self._call(self.lock.write, released(record, self.wall()), version)
                logger.info("released the lease %s/%s", self.config.namespace, self.config.name)
        except Exception as error:
            logger.warning(
                "could not release the lease %s (a standby takes over when it expires): %s", self.config.name, error
            )


def _exit_now(code: int) -> NoReturn:
    logging.shutdown()  # flush every handler: the last lines say why
    os._exit(code)


async def campaign(
    elector: LeaderElector,
    leadership: Leadership,
    stopping: asyncio.Event,
    exit_now: Callable[[int], NoReturn] = _exit_now,
    step_down_grace: float = STEP_DOWN_GRACE,
) -> None:
    """Stands by, leads while it holds the Lease, and steps down when `stopping` is set.

    kopf runs beside this from the start, in every replica: it serves the webhooks and guards every
    running run whether this replica leads or not; `leadership` tells its drivers whether they may
    also start runs, kill and inject. On `stopping` (SIGTERM) the leader stops leading at once, lets
    an action already in flight (an eviction call) return and record itself, then releases the Lease
    so that a standby, which already guards every run, takes over at once. Losing the lease ends the
    process at once through `exit_now` (it comes back as a standby).
    """
    if not await elector.acquire(stopping):
        logger.info("stopped while standing by")
        return
    leadership.gain(elector.wall())
    holder: asyncio.Task[NoReturn] = asyncio.create_task(elector.hold(), name="leader lease renewal")
    waiter = asyncio.create_task(stopping.wait(), name="leader stop signal")
    await asyncio.wait({holder, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if holder.done() and not holder.cancelled() and isinstance(holder.exception(), LeaseLost):
        leadership.lose()
        logger.critical(
            "lost the leader lease (%s): exiting at once, so as never to act on a lease another replica may "
            "hold; the other replicas guard every running run meanwhile, and running faults end at their "
            "deadlines or are rolled back by the next leader",
            holder.exception(),
        )
        exit_now(EXIT_LOST_LEASE)
    leadership.lose()  # no kill or injection starts from here on
    if not await leadership.quiesce(step_down_grace):
        logger.warning("an action was still in flight %g s after the stop signal; releasing the lease", step_down_grace)
    holder.cancel()
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holder
    await elector.release()
