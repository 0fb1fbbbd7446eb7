"""`chaosguard run` in production: log format, probes, and (with --leader-elect) leader election.

Without --leader-elect the process runs kopf at once, as it always did (local runs and tests). With
it, the process stands by until it holds the Lease (chaosguard.runtime.leader), serving readiness and a
stand-in liveness endpoint meanwhile, and runs kopf only while it leads. SIGTERM stops kopf
gracefully (daemons are cancelled; see handlers.drive_experiment's cancellation_timeout) and then
releases the Lease, so the standby takes over at once. Latency faults still in place at that moment
are left to their injector's own deadline (the dead man's switch) and to the next leader, which
resumes or rolls back the run from the experiment's status.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from chaosguard.runtime import leader, logs, metrics
from chaosguard.runtime.probes import Endpoint, Probes, parse_endpoint

EXIT_BAD_OPTIONS = 2


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--readiness",
        default=None,
        help="serve readiness here, e.g. http://0.0.0.0:8081/readyz (ready: kopf started; with --leader-elect: "
        "the leader and a healthy standby alike)",
    )
    run.add_argument("--log-format", choices=logs.FORMATS, default="text", help="text (default) or json lines")
    election = run.add_argument_group("leader election (for more than one replica)")
    election.add_argument(
        "--leader-elect",
        action="store_true",
        help=f"run kopf only while holding the Lease {leader.LEASE_NAME}; stand by otherwise",
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
    try:
        readiness, liveness = _endpoints(args)
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
    return asyncio.run(_elected(args, memo, config, readiness, liveness))


async def _kopf(args: argparse.Namespace, memo: Any, stop_flag: asyncio.Event | None, ready: asyncio.Event) -> None:
    metrics.LEADING.set(1)  # kopf runs only in the leader (or the only replica): this process drives experiments
    try:
        await _kopf_until_stopped(args, memo, stop_flag, ready)
    finally:
        metrics.LEADING.set(0)


async def _kopf_until_stopped(
    args: argparse.Namespace, memo: Any, stop_flag: asyncio.Event | None, ready: asyncio.Event
) -> None:
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
    started = asyncio.Event()
    probes = Probes(readiness, None, ready=lambda: {"ok": started.is_set()}, alive=dict)
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
    liveness: Endpoint | None,
) -> int:
    from kubernetes import client

    from chaosguard.clients.kube import load_config

    load_config(args.kubeconfig)
    lock = leader.LeaseLock(client.CoordinationV1Api(), config.namespace, config.name, config.renew_deadline / 2)
    elector = leader.LeaderElector(lock, config)
    started = asyncio.Event()

    def report(ok: bool) -> dict[str, object]:
        return {"ok": ok, "leader": elector.leading, "holder": elector.holder, "identity": config.identity}

    probes = Probes(
        readiness,
        liveness,  # kopf's own once it runs; answered here while standing by
        ready=lambda: report(elector.healthy()),
        alive=lambda: report(elector.alive()),
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):  # kopf installs its own once it runs
        loop.add_signal_handler(signum, stopping.set)
    await probes.start()
    try:
        return await leader.run_elected(
            elector,
            lambda stop_flag: _kopf(args, memo, stop_flag, started),
            stopping,
            on_leading=probes.hand_liveness_to_kopf,
        )
    finally:
        await probes.stop()
