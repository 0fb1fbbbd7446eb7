"""A pod's CPU and memory use, read from its cgroup on this machine (the real node's, or a kind node's nested
under its container): what the stress fault's e2e test and benchmark measure.

The pod's cgroup is found by its UID in the directory name, as the kubelet names it with either
cgroup driver (`pod<uid>` with cgroupfs, `...-pod<uid_with_underscores>.slice` with systemd), under
cgroup v1's cpuacct controller (`cpuacct.usage`, nanoseconds) or cgroup v2 (`cpu.stat` usage_usec).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class PodCgroup:
    path: Path

    def cpu_seconds(self) -> float:
        """CPU time used by every process of the pod since it started, in seconds."""
        usage = self.path / "cpuacct.usage"
        if usage.exists():
            return int(usage.read_text()) / 1e9
        for line in (self.path / "cpu.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "usage_usec":
                return int(value) / 1e6
        raise RuntimeError(f"{self.path} has neither cpuacct.usage nor usage_usec in cpu.stat")

    def cpu_rate(self, window: float = 0.25) -> float:
        """CPUs busy over the next `window` seconds (1.0: one CPU fully busy)."""
        started, used = time.monotonic(), self.cpu_seconds()
        time.sleep(window)  # the measurement's own window, not a wait for a condition
        return (self.cpu_seconds() - used) / (time.monotonic() - started)


def _find(uid: str, bases: tuple[Path, ...], files: tuple[str, ...]) -> Path | None:
    names = (f"pod{uid}", f"pod{uid.replace('-', '_')}")
    for base in bases:
        if not base.is_dir():
            continue
        for candidate in base.rglob("*pod*"):
            if not any(candidate.name.endswith(n) or candidate.name.endswith(f"{n}.slice") for n in names):
                continue
            if any((candidate / name).exists() for name in files):
                return candidate
    return None


def pod_cgroup(uid: str, root: Path = CGROUP_ROOT) -> PodCgroup | None:
    """The pod's CPU-accounting cgroup on this machine, or None when none is found."""
    bases = (root / "cpuacct", root / "cpu,cpuacct", root / "unified", root)
    found = _find(uid, bases, ("cpuacct.usage", "cpu.stat"))
    return None if found is None else PodCgroup(found)


def pod_memory_bytes(uid: str, root: Path = CGROUP_ROOT) -> int | None:
    """The memory the pod's cgroup is charged now (cgroup v1 memory.usage_in_bytes, v2 memory.current)."""
    found = _find(uid, (root / "memory", root / "unified", root), ("memory.usage_in_bytes", "memory.current"))
    if found is None:
        return None
    usage = found / "memory.usage_in_bytes"
    return int((usage if usage.exists() else found / "memory.current").read_text())
