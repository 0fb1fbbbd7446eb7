"""Boots a throw-away guest kernel that has tc netem, and runs commands in it (virtme-ng + QEMU).

The machine the tests run on may lack sch_netem/prio/u32 and may not load modules (this
workplace's does). A distribution kernel such as Debian's linux-image-amd64 has them as modules;
virtme-ng boots it under QEMU with the host's root filesystem shared read-only (9p) and
copy-on-write overlays, so the guest runs the host's Python, venv, iproute2 and this checkout.
One directory is shared read-write for results (junit XML, logs).

Flags, and why:
  --run /boot/vmlinuz-X      the kernel; its modules come from the host's /lib/modules/X
  --disable-kvm              TCG emulation: slower, but works where /dev/kvm is missing or broken
                             (set CHAOSGUARD_GUEST_ACCEL=kvm to use KVM where it works)
  --user root                root in the guest: ip netns, tc, setns need it
  --cpus 2 --memory 1G       enough for pytest plus the namespaces (CHAOSGUARD_GUEST_CPUS/_MEMORY)
  --rwdir DIR                the results directory, read-write at the same path in the guest
  --exec 'sh DIR/guest.sh'   the command; its exit status becomes vng's

Environment: CHAOSGUARD_GUEST_KERNEL picks the kernel image (default: the newest /boot/vmlinuz-*
whose modules include sch_netem); CHAOSGUARD_GUEST_RESULTS the results directory;
CHAOSGUARD_NETEM_SCRIPT is passed on into the guest (see localcluster/netns.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UP_MARKER = "CHAOSGUARD-GUEST-UP"
EXIT_MARKER = "CHAOSGUARD-GUEST-EXIT"
DEFAULT_TIMEOUT = 1500.0
# Host environment variables the guest command sees too (the guest starts with a clean one).
PASSED_ENV = ("CHAOSGUARD_NETEM_SCRIPT",)


class GuestUnavailable(RuntimeError):
    """No guest can be booted here; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class GuestRun:
    returncode: int
    output: str
    boot_seconds: float | None  # from launching vng to the guest running our command
    total_seconds: float
    results_dir: Path

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def _kernel_version(image: Path) -> str:
    return image.name.removeprefix("vmlinuz-")


def _has_netem(version: str) -> bool:
    config = Path(f"/boot/config-{version}")
    if config.is_file():
        text = config.read_text(errors="replace")
        if re.search(r"^CONFIG_NET_SCH_NETEM=y$", text, re.M):
            return True
        if not re.search(r"^CONFIG_NET_SCH_NETEM=m$", text, re.M):
            return False
    return any(Path(f"/lib/modules/{version}/kernel/net/sched").glob("sch_netem.ko*"))


def _version_key(image: Path) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"[.-]", _kernel_version(image))]


def find_kernel() -> Path:
    chosen = os.environ.get("CHAOSGUARD_GUEST_KERNEL")
    if chosen:
        image = Path(chosen)
        if not image.is_file():
            raise GuestUnavailable(f"CHAOSGUARD_GUEST_KERNEL={chosen} is not a file")
    else:
        images = sorted(Path("/boot").glob("vmlinuz-*"), key=_version_key, reverse=True)
        usable = [image for image in images if _has_netem(_kernel_version(image))]
        if not usable:
            raise GuestUnavailable(
                "no kernel image with sch_netem in /boot (found: "
                f"{', '.join(str(image) for image in images) or 'none'}); "
                "install one: apt-get install linux-image-amd64 (hack/install-system-deps.sh does)"
            )
        image = usable[0]
    if not os.access(image, os.R_OK):
        raise GuestUnavailable(f"{image} is not readable by uid {os.getuid()} (Debian installs it 0600 root)")
    return image


def find_vng() -> Path:
    beside_python = Path(sys.executable).parent / "vng"
    found = beside_python if beside_python.exists() else shutil.which("vng")
    if not found:
        raise GuestUnavailable("virtme-ng is not installed: pip install 'virtme-ng>=1.42' into the venv")
    return Path(found)


def boot_problem() -> str | None:
    """Why no guest can be booted here, or None."""
    try:
        find_vng()
        find_kernel()
    except GuestUnavailable as error:
        return str(error)
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed: apt-get install qemu-system-x86"
    if shutil.which("busybox") is None:
        return (
            "busybox is not installed (virtme-ng builds the guest's initramfs with it): apt-get install busybox-static"
        )
    if os.uname().machine != "x86_64":
        return f"the guest runner only knows x86_64 hosts, this is {os.uname().machine}"
    return None


def new_results_dir(prefix: str) -> Path:
    base = os.environ.get("CHAOSGUARD_GUEST_RESULTS")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


class GuestProcess:
    """A booting or running guest (start_guest); wait() returns its GuestRun once it powered off."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], results_dir: Path) -> None:
        self.results_dir = results_dir
        self.started = time.monotonic()
        self.lines: list[str] = []
        self.up_at: float | None = None
        #: The guest's /proc/uptime when it started our command (its steps can be timed on that clock).
        self.up_uptime: float | None = None
        self.process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=dict(env),
            cwd=REPO,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        # Written as it comes, so that a guest still running can be watched (tail -f).
        with open(self.results_dir / "guest.log", "w") as log:
            for line in self.process.stdout:
                if line.startswith(UP_MARKER) and self.up_at is None:
                    self.up_at = time.monotonic()
                    with contextlib.suppress(ValueError, IndexError):
                        self.up_uptime = float(line.split()[1])
                self.lines.append(line)
                log.write(line)
                log.flush()

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        """SIGKILLs QEMU and virtme-ng (their own process group)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> GuestRun:
        """Waits for the guest to power off (killed after `timeout` seconds)."""
        try:
            returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.process.wait()
            returncode = -signal.SIGKILL
            self.lines.append(f"\n[vm.py] guest killed after {timeout:.0f}s\n")
        self._reader.join(timeout=10)
        total = time.monotonic() - self.started
        output = self.output()
        return GuestRun(
            returncode=returncode,
            output=output,
            boot_seconds=self.up_at - self.started if self.up_at is not None else None,
            total_seconds=total,
            results_dir=self.results_dir,
        )


def start_guest(
    script: str, results_dir: Path, *, memory: str | None = None, qemu_opts: Sequence[str] = ()
) -> GuestProcess:
    """Starts booting the guest, which runs the shell `script` as root and powers off after it.

    `memory` overrides CHAOSGUARD_GUEST_MEMORY; `qemu_opts` are passed to QEMU (a NIC, say).
    Raises GuestUnavailable when nothing can be booted.
    """
    problem = boot_problem()
    if problem:
        raise GuestUnavailable(problem)
    results_dir.mkdir(parents=True, exist_ok=True)
    guest_script = results_dir / "guest.sh"
    passed_on = "".join(f"export {name}={shlex.quote(os.environ[name])}\n" for name in PASSED_ENV if name in os.environ)
    guest_script.write_text(
        f'echo "{UP_MARKER} $(cut -d" " -f1 /proc/uptime)"\n'
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        "export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1\n"
        f"{passed_on}"
        f"cd {REPO}\n"
        f"{script}\n"
        "code=$?\n"
        f'echo "{EXIT_MARKER} $code"\n'
        "exit $code\n"
    )
    argv = [
        str(find_vng()),
        "--run",
        str(find_kernel()),
        "--user",
        "root",
        "--cpus",
        os.environ.get("CHAOSGUARD_GUEST_CPUS", "2"),
        "--memory",
        memory or os.environ.get("CHAOSGUARD_GUEST_MEMORY", "1G"),
        "--rwdir",
        str(results_dir),
        "--exec",
        f"sh {guest_script}",
    ]
    if qemu_opts:
        argv.append(f"--qemu-opts={' '.join(qemu_opts)}")
    if os.environ.get("CHAOSGUARD_GUEST_ACCEL", "tcg") != "kvm":
        argv.insert(3, "--disable-kvm")
    env = dict(os.environ)
    env["PATH"] = f"{find_vng().parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    return GuestProcess(argv, env, results_dir)


def run_in_guest(script: str, results_dir: Path, timeout: float = DEFAULT_TIMEOUT) -> GuestRun:
    """Boots the guest, runs the shell `script` in it as root, and returns when it has powered off.

    The console output (the script's stdout and stderr, plus kernel messages) is returned and
    saved as results_dir/guest.log. Raises GuestUnavailable when nothing can be booted.
    """
    return start_guest(script, results_dir).wait(timeout)


# --- the tests/netns suite in the guest ------------------------------------------------------------

NETNS_SUITE = "tests/netns"


@dataclass(frozen=True)
class CaseResult:
    outcome: str  # passed | failed | error | skipped
    message: str
    seconds: float


@dataclass(frozen=True)
class SuiteRun:
    run: GuestRun
    cases: dict[tuple[str, str], CaseResult]  # by junit (classname, name)
    junit: Path


def junit_key(node_id: str) -> tuple[str, str]:
    """The (classname, name) under which pytest's junit XML reports a node id."""
    path, *rest = node_id.split("::")
    module = path.removesuffix(".py").replace("/", ".")
    return ".".join([module, *rest[:-1]]), rest[-1]


def parse_junit(path: Path) -> dict[tuple[str, str], CaseResult]:
    cases: dict[tuple[str, str], CaseResult] = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag == "failure" else child.tag
                message = "\n".join(filter(None, [child.get("message", ""), child.text or ""]))
                break
        key = (case.get("classname", ""), case.get("name", ""))
        # A test that passed but errored in teardown appears twice: keep the worse outcome.
        if key not in cases or cases[key].outcome == "passed":
            cases[key] = CaseResult(outcome, message, float(case.get("time", "0") or 0))
    return cases


@functools.cache
def netns_suite_in_guest() -> SuiteRun:
    """Runs the whole tests/netns suite in one guest, once per process (i.e. per pytest session)."""
    results = new_results_dir("chaosguard-netns-guest-")
    junit = results / "junit.xml"
    run = run_in_guest(
        f"{sys.executable} -m pytest -p no:cacheprovider -q -rA {NETNS_SUITE} --junitxml={junit}",
        results,
    )
    cases = parse_junit(junit) if junit.is_file() else {}
    return SuiteRun(run=run, cases=cases, junit=junit)
