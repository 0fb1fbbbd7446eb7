"""kopf wiring, deliberately thin: settings at start-up, one driver daemon per experiment, and the
finalizer's rollback on deletion. Everything that decides anything lives in the modules below."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any, cast

import kopf

from chaosguard.api.models import FINALIZER, GROUP, VERSION
from chaosguard.clients.informers import ClusterCache
from chaosguard.clients.prometheus import QueryBatcher
from chaosguard.runtime import faults, lanes, security
from chaosguard.runtime.clock import Clock
from chaosguard.runtime.context import OperatorContext
from chaosguard.runtime.engine import ExperimentDriver, RunEndedElsewhere
from chaosguard.runtime.guard import GuardScheduler
from chaosguard.runtime.lanes import ApiLanes
from chaosguard.runtime.leadership import Leadership

_EVENT_MESSAGE_LIMIT = 1000
CACHE_SYNC_TIMEOUT = 120.0


def post_event(body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, dict(body)), type=kind, reason=reason, message=message[:_EVENT_MESSAGE_LIMIT])


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Events are posted explicitly (engine.emit → kopf.event); log lines must not become a second copy.
    settings.posting.level = logging.CRITICAL + 1
    settings.watching.server_timeout = 120
    api = ApiLanes.connect(os.environ.get("KUBECONFIG"))
    cache = ClusterCache()
    cache.start()
    clock = Clock.from_environment()
    batcher = QueryBatcher()
    memo.context = OperatorContext(
        api=api,
        cache=cache,
        clock=clock,
        emit=post_event,
        batcher=batcher,
        # Its own thread, loop and QueryBatcher: kopf's loop, busy with every object's events, must
        # never delay a tick (the before- and after-checks, on kopf's loop, use `batcher`).
        guard=GuardScheduler.on_own_thread(clock.now),
        operator_namespace=os.environ.get("CHAOSGUARD_NAMESPACE") or None,
        leadership=memo.get("leadership") or Leadership.sole(clock.now()),
    )
    # No experiment is driven before the caches hold the whole cluster: an empty policy cache would
    # read as "nothing restricts chaos". (kopf starts the daemons only after the start-up handlers.)
    await cache.wait_synced(CACHE_SYNC_TIMEOUT)
    await security.prepare(settings, memo)  # the signing key; the webhook server with --webhook-port


@kopf.on.startup()
async def sweep_orphaned_faults(memo: kopf.Memo, logger: Any, **_: Any) -> None:
    # Runs after `configure` (kopf runs start-up handlers in the order they are declared).
    try:
        for action in await faults.sweep_orphans(memo.context.cluster, faults.injector_image()):
            logger.warning("orphaned latency fault: %s", action)
    except Exception as error:  # the sweep must never keep the operator from starting
        logger.exception("the start-up sweep for orphaned latency faults failed: %s", error)
    try:
        for action in await faults.nodedrain.sweep_marked_nodes(memo.context.cluster):
            logger.warning("orphaned node drain: %s", action)
    except Exception as error:  # likewise
        logger.exception("the start-up sweep for nodes left cordoned failed: %s", error)


# The backoff lets a step in flight (an eviction call, say) finish and record itself before kopf
# cancels the daemon, so the next leader never sees a kill that landed as "not done".
@kopf.daemon(GROUP, VERSION, "chaosexperiments", cancellation_backoff=5.0, cancellation_timeout=10.0)
async def drive_experiment(
    body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    await ExperimentDriver(memo.context, body, logger).run(stopped)


@kopf.on.event(GROUP, VERSION, "chaosexperiments")
async def wake_standby(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    # On the loop (kopf runs a sync handler on a thread, where neither the asyncio.Event nor the
    # loop's time may be touched). A standby's driver sleeps between looks; a run the leader starts
    # must be guarded here from its first tick, not from the standby's next look. Every run that ends
    # is noted too: the ends the leader writes tell a standby that it is alive (decisions.standby).
    context = getattr(memo, "context", None)
    if context is None:
        return
    metadata = body.get("metadata") or {}
    key = f"{metadata.get('namespace')}/{metadata.get('name')}"
    if kwargs.get("type") == "DELETED":
        context.run_ends.forget(key)
    else:
        current = ((body.get("status") or {}).get("currentRun") or {}).get("id")
        context.run_ends.observe(key, str(current) if current else None, asyncio.get_running_loop().time())
    for waiting in (context.wakeups.get(key), context.abort_waits.get(key)):
        if waiting is not None:
            waiting.set()


@kopf.on.delete(GROUP, VERSION, "chaosexperiments")
async def roll_back_on_delete(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    # kopf has stopped the driver daemon, so no further fault starts; faults still in go now.
    # (A pod-kill leaves nothing to undo: the workload's controller replaces what was killed.)
    # Every replica runs this (a standby too, so a deletion while no replica leads still rolls back);
    # clean-up containers are added once per fault however many replicas get here.
    driver = ExperimentDriver(memo.context, body, logger)
    with lanes.urgent(), contextlib.suppress(RunEndedElsewhere):
        await driver.roll_back_faults("deletion")
    if memo.context.leadership.leading:
        phase = (body.get("status") or {}).get("phase")
        post_event(body, "Normal", "Deleted", f"experiment deleted while {phase or 'new'}; its faults are rolled back")


@kopf.on.cleanup()
async def shut_down(memo: kopf.Memo, **_: Any) -> None:
    context = getattr(memo, "context", None)
    if context is None:
        return
    await context.guard.close()  # stops its thread, after closing its QueryBatcher on its own loop
    await context.batcher.aclose()
    await asyncio.to_thread(context.cache.stop)  # joins the watch threads
    context.api.close()
