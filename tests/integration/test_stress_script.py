"""stress.sh, the stressor's holder, on this machine under dash and busybox sh, with busybox's own
`timeout`, `sleep` and `date` (the injector image's), and a stand-in stress-ng that records its
arguments and sleeps for its --timeout (stress-ng itself runs in tests/e2e/test_stress.py).

The behaviours: bad arguments refused; nothing started after the deadline or once a clean-up
container asked it to stop; held until the deadline and then ended; stopped by the stop file while
running, taking stress-ng with it; stress-ng missing or failing early reported as an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from chaosguard.decisions import stress
from chaosguard.runtime.faults.stress import holder_script
from localcluster.wait import wait_for

SHELLS = {"dash": ["dash"], "busybox": ["busybox", "sh"]}


def shell_argv(shell: str) -> list[str]:
    """The shell's argv with its absolute path (the holder runs with PATH holding busybox's applets only)."""
    found = shutil.which(SHELLS[shell][0])
    if found is None:
        pytest.skip(f"{shell} is not installed")
    return [found, *SHELLS[shell][1:]]


FAKE_STRESS_NG = """#!/bin/sh
echo "$@" > "$FAKE_ARGS"
if [ -n "${FAKE_FAIL:-}" ]; then echo "stress-ng: error: [1] it went wrong"; exit "$FAKE_FAIL"; fi
seconds=60
while [ $# -gt 0 ]; do
    [ "$1" = --timeout ] && seconds=${2%s}
    shift
done
exec sleep "$seconds"
"""


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    if shutil.which("busybox") is None:
        pytest.skip("busybox is not installed")
    directory = tmp_path / "bin"
    directory.mkdir()
    for applet in ("sh", "timeout", "sleep", "date", "touch", "tee", "cat", "kill", "mktemp", "tail"):
        (directory / applet).symlink_to(shutil.which("busybox") or "busybox")
    return directory


def start(
    shell: str, bin_dir: Path, tmp_path: Path, deadline: int, *, fake: bool = True, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], Path, Path]:
    if fake:
        fake_path = bin_dir / "stress-ng"
        fake_path.write_text(FAKE_STRESS_NG)
        fake_path.chmod(0o755)
    stop, status = tmp_path / "stop", tmp_path / "status"
    argv = stress.stressor_command(
        holder_script(), deadline, str(stop), ["--cpu", "1", "--cpu-load", "50"], now=time.time()
    )
    assert argv[:2] == ["sh", "-c"]
    environment = {
        "PATH": str(bin_dir),
        "CHAOSGUARD_STATUS_FILE": str(status),
        "FAKE_ARGS": str(tmp_path / "args"),
        **(env or {}),
    }
    process = subprocess.Popen([*shell_argv(shell), *argv[1:]], env=environment, text=True, stderr=subprocess.PIPE)
    return process, stop, status


def said(status: Path) -> str:
    return status.read_text().strip()


@pytest.mark.parametrize("shell", SHELLS)
def test_refuses_bad_arguments(shell: str, bin_dir: Path, tmp_path: Path) -> None:
    script = holder_script()
    for argv in ([], ["123"], ["123", "/dev/shm/x", "--cpu"], ["soon", "/dev/shm/x", "--", "--cpu", "1"]):
        result = subprocess.run(
            [*shell_argv(shell), "-c", script, stress.PROG, *argv],
            env={"PATH": str(bin_dir), "CHAOSGUARD_STATUS_FILE": str(tmp_path / "status")},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, (argv, result.stderr)
        assert said(tmp_path / "status").startswith("error: "), argv


@pytest.mark.parametrize("shell", SHELLS)
def test_starts_nothing_after_its_deadline_or_once_asked_to_stop(shell: str, bin_dir: Path, tmp_path: Path) -> None:
    process, _, status = start(shell, bin_dir, tmp_path, int(time.time()) - 1)
    assert process.wait(timeout=30) == 0
    assert said(status).startswith("not stressed: the deadline had passed")
    (tmp_path / "stop").touch()
    process, _, status = start(shell, bin_dir, tmp_path, int(time.time()) + 60)
    assert process.wait(timeout=30) == 0
    assert said(status).startswith("not stressed: a clean-up container")
    assert not (tmp_path / "args").exists(), "stress-ng must never have started"


@pytest.mark.parametrize("shell", SHELLS)
def test_holds_until_the_deadline_then_ends(shell: str, bin_dir: Path, tmp_path: Path) -> None:
    deadline = int(time.time()) + 3
    process, _, status = start(shell, bin_dir, tmp_path, deadline)
    assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
    assert said(status).startswith("ended: the deadline passed"), said(status)
    arguments = (tmp_path / "args").read_text().split()
    assert arguments[0] == "--timeout" and arguments[2:4] == ["--temp-path", "/tmp"], arguments
    assert arguments[4:] == ["--cpu", "1", "--cpu-load", "50"], arguments
    assert 1 <= int(arguments[1].rstrip("s")) <= 3, arguments


@pytest.mark.parametrize("shell", SHELLS)
def test_the_stop_file_ends_stress_ng_and_the_holder(shell: str, bin_dir: Path, tmp_path: Path) -> None:
    process, stop, status = start(shell, bin_dir, tmp_path, int(time.time()) + 120)
    wait_for(lambda: (tmp_path / "args").exists(), timeout=30, what="the stand-in stress-ng to start")
    stressor = wait_for(
        lambda: _pids_running(f"sleep {(tmp_path / 'args').read_text().split()[1].rstrip('s')}"),
        timeout=30,
        what="the stand-in's sleep",
    )
    assert process.poll() is None, "the holder must hold while nothing asks it to stop"
    stop.touch()
    assert process.wait(timeout=30) == 0
    assert said(status).startswith("stopped: a clean-up container asked it to stop"), said(status)
    assert not any(Path(f"/proc/{pid}").exists() for pid in stressor), "stress-ng outlived its holder"


@pytest.mark.parametrize("shell", SHELLS)
def test_stress_ng_missing_or_failing_early_is_an_error(shell: str, bin_dir: Path, tmp_path: Path) -> None:
    process, _, status = start(shell, bin_dir, tmp_path, int(time.time()) + 60, fake=False)
    assert process.wait(timeout=30) == 4
    assert (
        said(status) == "error: stress-ng is not in this image (give the operator the stressor image: --stressor-image)"
    )
    process, _, status = start(shell, bin_dir, tmp_path, int(time.time()) + 60, env={"FAKE_FAIL": "3"})
    assert process.wait(timeout=30) == 4
    assert said(status) == "error: stress-ng exited 3 before its deadline: stress-ng: error: [1] it went wrong"


def _pids_running(command_line: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if cmdline == command_line and os.getppid() != int(entry.name):
            found.append(int(entry.name))
    return found
