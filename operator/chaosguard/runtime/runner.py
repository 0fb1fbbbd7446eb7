"""`chaosguard run` in production: log format, probes, and (with --leader-elect) leader election.

kopf runs at once in every replica: its watches, the admission webhooks and one driver per experiment,
which guards running runs and aborts them on a breach. Without --leader-elect the process also leads
(admits, starts runs, kills, injects) from the start. With it, it leads only while it holds the Lease
(chaosguard.runtime.leader); meanwhile it is a standby that serves the webhooks and guards every run, so
a leader's death leaves no run unwatched and the cluster never without admission. SIGTERM makes the
leader stop leading, let a call in flight return, and release the Lease (a standby leads at once), while
kopf stops gracefully (daemons are cancelled; see handlers.drive_experiment's cancellation_timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from chaosguard.runtime import leader, logs, metrics
from chaosguard.runtime.leadership import Leadership
from chaosguard.runtime.probes import Endpoint, Probes, parse_endpoint

logger = logging.getLogger("chaosguard.runner")

EXIT_BAD_OPTIONS = 2


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--readiness",
        default=None,
        help="serve readiness here, e.g. http://0.0.0.0:8081/readyz (ready: kopf started, so the webhooks are "
        "served and running runs guarded; with --leader-elect also: the API server answers the election)",
    )
    run.add_argument("--log-format", choices=logs.FORMATS, default="text", help="text (default) or json lines")
    election = run.add_argument_group("leader election (for more than one replica)")
    election.add_argument(
        "--leader-elect",
        action="store_true",
        help=f"lead (start runs, kill, inject) only while holding the Lease {leader.LEASE_NAME}; every replica "
        "serves the webhooks and guards running runs",
    )
    election.add_argument(
        "--leader-election-namespace",
        default=None,
        help="namespace of the Lease (default: $CHAOSGUARD_NAMESPACE, the operator's own)",
    )
    election.add_argument(
        "--leader-election-identity",
        default=None,
        help="this candidate's holderIdentity (default: hostname and a random suffix)",
    )
    election.add_argument("--leader-election-lease-duration", type=float, default=15.0, metavar="SECONDS")
    election.add_argument("--leader-election-renew-deadline", type=float, default=10.0, metavar="SECONDS")
    election.add_argument("--leader-election-renew-period", type=float, default=5.0, metavar="SECONDS")
    election.add_argument("--leader-election-retry-period", type=float, default=2.0, metavar="SECONDS")


def election_config(args: argparse.Namespace) -> leader.ElectionConfig:
    return leader.ElectionConfig(
        namespace=args.leader_election_namespace or os.environ.get("CHAOSGUARD_NAMESPACE") or "",
        identity=args.leader_election_identity or leader.default_identity(),
        lease_duration=args.leader_election_lease_duration,
        renew_deadline=args.leader_election_renew_deadline,
        renew_period=args.leader_election_renew_period,
        retry_period=args.leader_election_retry_period,
    )


def _endpoints(args: argparse.Namespace) -> tuple[Endpoint | None, Endpoint | None]:
    readiness = parse_endpoint(args.readiness, "--readiness") if args.readiness else None
    liveness = parse_endpoint(args.liveness, "--liveness") if args.liveness else None
    if readiness and liveness and readiness.port == liveness.port:
        raise ValueError(f"--readiness and --liveness need different ports (both use {readiness.port})")
    return readiness, liveness


def serve(args: argparse.Namespace, memo: Any) -> int:
    """Runs the operator until it is stopped; the process's exit status."""
    logs.configure(args.log_format, args.verbose)
    metrics.time_garbage_collections()
    try:
        readiness, _liveness = _endpoints(args)  # liveness is kopf's own endpoint; checked here for the port
    except ValueError as error:
        print(f"ERROR {error}", file=sys.stderr)
        return EXIT_BAD_OPTIONS
    if not args.leader_elect:
        return asyncio.run(_standalone(args, memo, readiness))
    config = election_config(args)
    problems = config.problems()
    if problems:
        for problem in problems:
            print(f"ERROR {problem}", file=sys.stderr)
        return EXIT_BAD_OPTIONS
    return asyncio.run(_elected(args, memo, config, readiness))


async def _kopf(args: argparse.Namespace, memo: Any, stop_flag: asyncio.Event | None, ready: asyncio.Event) -> None:
    import kopf

    operator = asyncio.create_task(
        kopf.operator(
            clusterwide=True,
            standalone=True,
            liveness_endpoint=args.liveness,
            memo=memo,
            stop_flag=stop_flag,
            ready_flag=ready,
        ),
        name="kopf",
    )
    if stop_flag is not None:
        # kopf installs its own SIGTERM/SIGINT handlers, which stop it without setting the stop flag; its
        # waiter for the flag then holds its exit for 5 s (as a "hung" task). Once kopf has started, the
        # signals set the flag instead, and kopf stops at once.
        started = asyncio.create_task(ready.wait())
        await asyncio.wait({operator, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if not operator.done():
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop_flag.set)
    await operator


async def _standalone(args: argparse.Namespace, memo: Any, readiness: Endpoint | None) -> int:
    memo.leadership = Leadership.sole(datetime.now(UTC))
    started = asyncio.Event()
    probes = Probes(readiness, lambda: {"ok": started.is_set()})
    await probes.start()
    try:
        await _kopf(args, memo, None, started)
    finally:
        await probes.stop()
    return 0


async def _elected(
    args: argparse.Namespace,
    memo: Any,
    config: leader.ElectionConfig,
    readiness: Endpoint | None,
) -> int:
    from kubernetes import client

    from chaosguard.clients.kube import load_config

    load_config(args.kubeconfig)
    lock = leader.LeaseLock(client.CoordinationV1Api(), config.namespace, config.name, config.renew_deadline / 2)
    elector = leader.LeaderElector(lock, config)
    leadership = memo.leadership = Leadership()
    started = asyncio.Event()

    def report() -> dict[str, object]:
        ok = started.is_set() and elector.healthy()
        return {"ok": ok, "leader": leadership.leading, "holder": elector.holder, "identity": config.identity}

    probes = Probes(readiness, report)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):  # until kopf has started (then kopf's handlers set it)
        loop.add_signal_handler(signum, stopping.set)
    await probes.start()
    operator = asyncio.create_task(_kopf(args, memo, stopping, started), name="chaosguard operator")
    election = asyncio.create_task(leader.campaign(elector, leadership, stopping), name="leader election")
    try:
        await asyncio.wait({operator, election}, return_when=asyncio.FIRST_COMPLETED)
        if operator.done():
            stopping.set()  # kopf ended on its own (it failed): step down too
        await election
        await asyncio.wait({operator})
    finally:
        await probes.stop()
    if not operator.cancelled() and operator.exception() is not None:
        logger.error("the operator failed: %r", operator.exception())
        return 1
    return 0
