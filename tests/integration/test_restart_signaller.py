"""container-restart's signaller on this machine, in a throw-away PID namespace, under dash and busybox sh.

The target is a shell that is PID 1 of a namespace of its own (`unshare --pid --fork --mount-proc`); the
signaller joins that namespace (`nsenter`), as an ephemeral container with `targetContainerName` joins the
target container's. What the kernel does there is what the node's does: PID 1 with a SIGTERM handler gets
the signal and exits, and the kernel then SIGKILLs the signaller with the rest of the namespace; PID 1
with no handler is left alone (the signaller sends nothing and says why); PID 1 that handles SIGTERM and
keeps running is reported after the grace period. The same script on the real node, with the kubelet
restarting the container: tests/e2e/test_container_restart.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaosguard.decisions.container_restart import Said, SignallerExit, signaller_command
from localcluster.wait import wait_for

SHELLS = {"dash": ["dash"], "busybox": ["busybox", "sh"]}
EXITS_ON_TERM = 'trap "exit 143" TERM; while :; do sleep 1 & wait $!; done'
NO_HANDLER = "while :; do sleep 1; done"
DRAINS = 'trap "echo draining" TERM; while :; do sleep 1 & wait $!; done'


def _problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a PID namespace, and nsenter into it)"
    if not all(shutil.which(tool) for tool in ("unshare", "nsenter", "busybox", "dash")):
        return "needs unshare and nsenter (util-linux), busybox and dash"
    return None


pytestmark = pytest.mark.skipif(_problem() is not None, reason=str(_problem()))


class Target:
    """A shell that is PID 1 of a PID namespace of its own."""

    def __init__(self, script: str) -> None:
        self.outer = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "busybox", "sh", "-c", script])
        self.init = int(
            wait_for(
                lambda: subprocess.run(["pgrep", "-P", str(self.outer.pid)], capture_output=True, text=True).stdout,
                timeout=10,
                what="the namespace's init",
            ).split()[0]
        )
        wait_for(lambda: self.handler_installed(script), timeout=10, what="the target's traps in place")

    def handler_installed(self, script: str) -> bool:
        if "trap" not in script:
            return True
        status = Path(f"/proc/{self.init}/status").read_text()
        caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
        return bool((int(caught, 16) >> 14) & 1)

    def signal_from_inside(self, shell: list[str], status_file: Path, grace: int) -> subprocess.CompletedProcess[str]:
        command = signaller_command(int(time.time()) + 15, grace)
        return subprocess.run(
            [
                "nsenter",
                "-t",
                str(self.init),
                "--pid",
                "--mount",
                "env",
                f"CHAOSGUARD_STATUS_FILE={status_file}",
                *shell,
                *command[1:],
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def exited(self) -> int | None:
        return self.outer.poll()

    def stop(self) -> None:
        if self.outer.poll() is None:
            os.kill(self.init, signal.SIGKILL)  # from outside the namespace its init can be killed
            self.outer.wait(timeout=10)


@pytest.fixture
def target() -> Iterator[list[Target]]:
    started: list[Target] = []
    yield started
    for one in started:
        one.stop()


@pytest.mark.parametrize("shell", SHELLS.values(), ids=SHELLS.keys())
def test_pid_1_with_a_handler_gets_sigterm_and_exits_taking_the_signaller_with_it(
    shell: list[str], target: list[Target], tmp_path: Path
) -> None:
    target.append(one := Target(EXITS_ON_TERM))
    status = tmp_path / "status"
    result = one.signal_from_inside(shell, status, grace=5)
    assert result.returncode == -signal.SIGKILL, result  # the kernel ends the namespace once its init exits
    assert wait_for(one.exited, timeout=10, what="the target to exit") == 143
    assert status.read_text().startswith(f"{Said.SENT} to PID 1 (busybox, uid 0)"), status.read_text()


@pytest.mark.parametrize("shell", SHELLS.values(), ids=SHELLS.keys())
def test_pid_1_without_a_handler_is_sent_nothing_and_the_signaller_says_why(
    shell: list[str], target: list[Target], tmp_path: Path
) -> None:
    target.append(one := Target(NO_HANDLER))
    status = tmp_path / "status"
    result = one.signal_from_inside(shell, status, grace=5)
    assert result.returncode == SignallerExit.NO_HANDLER, result
    assert status.read_text().startswith(f"{Said.NOT_SIGNALLED}: PID 1 (busybox, uid 0) has no SIGTERM handler")
    assert one.exited() is None


@pytest.mark.parametrize("shell", SHELLS.values(), ids=SHELLS.keys())
def test_pid_1_that_handles_sigterm_and_keeps_running_is_reported_after_the_grace_period(
    shell: list[str], target: list[Target], tmp_path: Path
) -> None:
    target.append(one := Target(DRAINS))
    status = tmp_path / "status"
    result = one.signal_from_inside(shell, status, grace=1)
    assert result.returncode == SignallerExit.STILL_RUNNING, result
    assert status.read_text().startswith(f"{Said.NOT_RESTARTED}: PID 1 (busybox) handled SIGTERM but still ran 1s")
    assert one.exited() is None


def test_a_signaller_alone_in_its_namespace_sends_nothing(tmp_path: Path) -> None:
    status = tmp_path / "status"
    command = signaller_command(int(time.time()) + 15, 1)
    result = subprocess.run(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "env",
            f"CHAOSGUARD_STATUS_FILE={status}",
            "busybox",
            "sh",
            *command[1:],
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == SignallerExit.NOT_SHARED, result
    assert "does not share the target container's process namespace" in status.read_text()


def test_a_signaller_started_after_its_act_by_time_sends_nothing(target: list[Target], tmp_path: Path) -> None:
    target.append(one := Target(EXITS_ON_TERM))
    status = tmp_path / "status"
    command = signaller_command(int(time.time()) - 1, 1)
    result = subprocess.run(
        [
            "nsenter",
            "-t",
            str(one.init),
            "--pid",
            "--mount",
            "env",
            f"CHAOSGUARD_STATUS_FILE={status}",
            "dash",
            *command[1:],
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == SignallerExit.LATE, result
    assert one.exited() is None
