"""tests/netns, run for real inside a guest kernel that has tc netem, one host test per guest test.

This machine's kernel may have no sch_netem (this workplace's has none and loads no modules), so
localcluster/vm.py boots Debian's kernel under QEMU with virtme-ng ONCE per session and runs the
whole tests/netns suite inside it, writing junit XML to a shared directory. Each test here is one
node id of that suite (collected on the host with `pytest --collect-only -q tests/netns`) and
passes only if that test passed in the guest; otherwise it shows the guest's failure text.

When no guest can be booted (no kernel image with netem, no QEMU, no virtme-ng), every test here
is skipped with the reason. Expect minutes, not seconds: the guest runs under TCG emulation.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest

from localcluster import vm

NETEM_SKIP_PREFIX = "NO NETEM HERE:"  # as in tests/netns/conftest.py
GUEST_TIMEOUT = 1800


def _collect_guest_node_ids() -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", vm.NETNS_SUITE],
        cwd=vm.REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    node_ids = [line.strip() for line in result.stdout.splitlines() if "::" in line]
    if result.returncode != 0 or not node_ids:
        raise RuntimeError(
            f"collecting {vm.NETNS_SUITE} on the host failed (exit {result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return node_ids


GUEST_NODE_IDS = _collect_guest_node_ids()


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """Shows a line on the terminal even while output is captured (boot and run times)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        print(line)
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_line(line)


@pytest.fixture(scope="session")
def guest_suite(request: pytest.FixtureRequest) -> vm.SuiteRun:
    problem = vm.boot_problem()
    if problem:
        pytest.skip(f"CANNOT BOOT A NETEM GUEST, so the latency injector is NOT tested here: {problem}")
    _say(request, f"[netem guest] booting {vm.find_kernel().name} under QEMU and running {vm.NETNS_SUITE} in it")
    suite = vm.netns_suite_in_guest()
    boot = f"{suite.run.boot_seconds:.0f}s" if suite.run.boot_seconds is not None else "never"
    _say(
        request,
        f"[netem guest] booted in {boot}; suite run and guest off after {suite.run.total_seconds:.0f}s, "
        f"exit {suite.run.returncode}, {len(suite.cases)} results; log and junit in {suite.run.results_dir}",
    )
    if not suite.cases:
        pytest.fail(
            f"the guest wrote no junit results (exit {suite.run.returncode}, booted: {boot}); "
            f"last console lines:\n{suite.run.tail()}"
        )
    return suite


@pytest.mark.timeout(GUEST_TIMEOUT)
def test_guest_ran_exactly_the_collected_suite(guest_suite: vm.SuiteRun) -> None:
    expected = {vm.junit_key(node_id) for node_id in GUEST_NODE_IDS}
    ran = set(guest_suite.cases)
    assert ran == expected, (
        f"ran in the guest but not collected on the host: {sorted(ran - expected)}; "
        f"collected but not run: {sorted(expected - ran)}"
    )


@pytest.mark.timeout(GUEST_TIMEOUT)
@pytest.mark.parametrize("node_id", GUEST_NODE_IDS)
def test_in_guest(guest_suite: vm.SuiteRun, node_id: str) -> None:
    case = guest_suite.cases.get(vm.junit_key(node_id))
    if case is None:
        pytest.fail(
            f"{node_id} has no result in the guest's junit ({guest_suite.junit}); "
            f"last console lines:\n{guest_suite.run.tail()}"
        )
    if case.outcome == "skipped":
        if NETEM_SKIP_PREFIX in case.message:
            pytest.fail(f"the guest kernel was booted for netem but has none: {case.message}")
        pytest.skip(f"skipped in the guest: {case.message}")
    assert case.outcome == "passed", f"{case.outcome} in the guest ({case.seconds:.1f}s):\n{case.message}"
