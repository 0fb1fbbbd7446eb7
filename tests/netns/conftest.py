"""Fixtures for the tests that need a kernel with tc netem (run inside a guest by
tests/integration/test_netem_in_guest.py, or directly as root on a kernel that has netem)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from localcluster import netns

NETEM_SKIP_PREFIX = "NO NETEM HERE:"


@pytest.fixture(scope="session", autouse=True)
def _netem_available() -> None:
    problem = netns.netem_problem()
    if problem:
        pytest.skip(f"{NETEM_SKIP_PREFIX} {problem}")


@pytest.fixture
def topology() -> Iterator[netns.Topology]:
    """A fresh target/peer namespace pair with an echo server in the peer; deleted afterwards."""
    with netns.topology_with_echo() as created:
        yield created


StartInjector = Callable[..., netns.Injector]


@pytest.fixture
def start_injector() -> Iterator[StartInjector]:
    """Starts netem.sh in a namespace; whatever is still running at teardown is SIGKILLed."""
    started: list[netns.Injector] = []

    def start(namespace: str, argv: Sequence[str], shell: str = "dash") -> netns.Injector:
        injector = netns.Injector.start(namespace, argv, shell)
        started.append(injector)
        return injector

    yield start
    for injector in started:
        injector.kill_group()
