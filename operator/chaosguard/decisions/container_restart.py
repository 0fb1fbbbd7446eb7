"""container-restart without a node agent: what the signaller runs, as whom, and what became of a restart.

How it works. An ephemeral container (the signaller) is added to the target pod with
`targetContainerName` set to the container to restart, so it shares that container's PID namespace, in
which the container's entrypoint is PID 1. It sends PID 1 SIGTERM and nothing else. When PID 1 exits, the
kernel SIGKILLs every other process of the namespace (the app's children, and the signaller itself), the
container has exited, and the kubelet starts it again under the pod's restartPolicy: restartCount + 1, the
same pod UID, the pod's other containers untouched.

What the kernel allows (and why this is not Chaos Mesh's container-kill, which SIGKILLs through the
container runtime from a privileged node daemon):
- a signal sent to a namespace's init from inside the namespace is delivered only if init installed a
  handler for it; SIGKILL and SIGSTOP never are. An app whose PID 1 has no SIGTERM handler (a plain
  `sh -c`, many static binaries) cannot be restarted this way: the signaller reads PID 1's handled-signal
  mask (SigCgt in /proc/1/status) first and, with no handler, sends nothing and says so (exit NO_HANDLER);
- an app that handles SIGTERM but does not exit (it drains forever) is not restarted either: the signaller
  waits the pod's terminationGracePeriodSeconds, as the kubelet would before its SIGKILL, and then says so
  (exit STILL_RUNNING). It never escalates to SIGKILL of PID 1's children: that would leave a half-dead
  container that nothing restarts, a worse fault than the one asked for;
- signalling another process needs the same uid or CAP_KILL. The signaller runs as the target
  container's uid and gid when the pod spec names them (so it holds no capability and passes Pod Security
  restricted wherever the target does); when it does not (the image's USER), as root with CAP_KILL alone,
  which Pod Security baseline allows and restricted refuses, with the API server's own message.

The signaller acts only until its act-by time (the moment it was added + ACT_WITHIN_SECONDS, never after
the run's deadline): a signaller the kubelet starts later signals nothing, so an abort or the run's end can
never be followed by a restart. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

PROG = "chaosguard-restart"
# A signaller started later than this after it was added signals nothing (real node: it starts in ~1 s).
ACT_WITHIN_SECONDS = 15
DEFAULT_GRACE_SECONDS = 30  # a pod's terminationGracePeriodSeconds when it sets none
MAX_GRACE_SECONDS = 600
SIGTERM_BIT = 15 - 1  # signal n is bit n-1 of /proc/<pid>/status's signal masks


class SignallerExit(IntEnum):
    """The signaller's exit codes. Success has none of its own: once PID 1 exits the kernel SIGKILLs the
    signaller too (exit 137), so a restart is judged from the target container's restartCount."""

    USAGE = 2
    NOT_SHARED = 10  # it does not share the target's PID namespace: nothing sent
    NO_HANDLER = 11  # PID 1 has no SIGTERM handler: nothing sent (the kernel would drop it)
    STILL_RUNNING = 12  # PID 1 got SIGTERM and still ran a grace period later
    LATE = 13  # started after its act-by time: nothing sent
    KILL_FAILED = 14  # kill(2) refused (another uid, no CAP_KILL)


class Said(StrEnum):
    """The first words of the signaller's last line (the kubelet's termination message)."""

    NOT_SIGNALLED = "not signalled"
    SENT = "sending SIGTERM"
    NOT_RESTARTED = "not restarted"


# POSIX sh with builtins, `date` and `sleep`: busybox and Debian images alike. argv: act_by grace.
# Each line it says overwrites the status file, so the kubelet's termination message is its last word
# even when the kernel SIGKILLs it right after (PID 1 exited: the expected end).
SCRIPT = f"""set -u
act_by=$1 grace=$2 status=${{CHAOSGUARD_STATUS_FILE:-/dev/termination-log}}
say() {{ echo "{PROG}: $1"; echo "$1" >"$status"; }}
case "$act_by$grace" in *[!0-9]*|'') say "usage: act_by and grace are whole seconds"; exit {SignallerExit.USAGE};; esac
now=$(date +%s)
if [ "$now" -gt "$act_by" ]; then
  say "{Said.NOT_SIGNALLED}: started at $now, after its act-by time $act_by; nothing was sent"
  exit {SignallerExit.LATE}
fi
if [ "$$" = 1 ] || [ ! -r /proc/1/status ]; then
  say "{Said.NOT_SIGNALLED}: this container does not share the target container's process namespace"
  exit {SignallerExit.NOT_SHARED}
fi
comm=?; read -r comm </proc/1/comm || true
cgt=0; ign=0; uid=?
while read -r key value _; do
  case $key in SigCgt:) cgt=$value;; SigIgn:) ign=$value;; Uid:) uid=$value;; esac
done </proc/1/status
if [ $(( (0x$cgt >> {SIGTERM_BIT}) & 1 )) != 1 ] || [ $(( (0x$ign >> {SIGTERM_BIT}) & 1 )) = 1 ]; then
  say "{Said.NOT_SIGNALLED}: PID 1 ($comm, uid $uid) has no SIGTERM handler, and the kernel delivers to a \
namespace's init only the signals it handles (never SIGKILL), so the container cannot be restarted from inside \
the pod; give its entrypoint a SIGTERM handler (e.g. tini, or trap TERM) or use pod-kill"
  exit {SignallerExit.NO_HANDLER}
fi
# Said before the signal: an app that exits at once takes this container with it before the next line.
say "{Said.SENT} to PID 1 ($comm, uid $uid) at $now; waiting up to ${{grace}}s for it to exit"
if ! err=$(kill -TERM 1 2>&1); then
  say "{Said.NOT_SIGNALLED}: kill -TERM 1 (PID 1 $comm, uid $uid) failed as uid $(id -u 2>/dev/null || echo ?): $err"
  exit {SignallerExit.KILL_FAILED}
fi
i=0
while [ "$i" -lt "$grace" ]; do sleep 1; i=$((i + 1)); done
say "{Said.NOT_RESTARTED}: PID 1 ($comm) handled SIGTERM but still ran ${{grace}}s later (it drains or ignores it), \
and the kernel forbids SIGKILL of a namespace's init from inside it"
exit {SignallerExit.STILL_RUNNING}
"""

SIGNALLER_EXITS: dict[int, str] = {
    SignallerExit.USAGE: "the signaller refused its arguments",
    SignallerExit.NOT_SHARED: "the signaller did not share the target container's process namespace",
    SignallerExit.NO_HANDLER: "the app ignores SIGTERM (PID 1 has no handler for it)",
    SignallerExit.STILL_RUNNING: "the app did not exit on SIGTERM within the pod's grace period",
    SignallerExit.LATE: "the signaller started after its act-by time",
    SignallerExit.KILL_FAILED: "the signal was refused",
}


def signaller_command(act_by: int, grace_seconds: int) -> list[str]:
    """The signaller's argv: act only until `act_by` (unix seconds), wait `grace_seconds` for PID 1 to exit."""
    if act_by <= 0 or not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise ValueError(f"act_by {act_by} must be a unix time and grace {grace_seconds} within 0..{MAX_GRACE_SECONDS}")
    return ["sh", "-c", SCRIPT, PROG, str(act_by), str(grace_seconds)]


def act_by(added_at: float, deadline_at: float) -> int:
    """Until when a signaller added at `added_at` may act: ACT_WITHIN_SECONDS later, never after the deadline."""
    return int(min(added_at + ACT_WITHIN_SECONDS, deadline_at))


def grace_seconds(pod: Mapping[str, Any]) -> int:
    """How long the kubelet would wait between SIGTERM and SIGKILL for this pod."""
    grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return max(0, min(int(grace if grace is not None else DEFAULT_GRACE_SECONDS), MAX_GRACE_SECONDS))


def _container_spec(pod: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((c for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name") == name), None)


def container_status(pod: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The kubelet's report of one of the pod's regular containers ({} until it has one)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == name), {})


def restart_refusal(pod: Mapping[str, Any], name: str) -> str | None:
    """Why the container `name` of this pod cannot be restarted this way, or None."""
    spec = pod.get("spec") or {}
    containers = [str(c.get("name")) for c in spec.get("containers") or []]
    if name not in containers:
        return (
            f"the pod has no container {name!r} (its containers: {', '.join(containers)}); "
            "set spec.containerRestart.container to one of them"
        )
    policy = spec.get("restartPolicy") or "Always"
    if policy != "Always":
        return (
            f"the pod's restartPolicy is {policy}, so the kubelet would not start the container again after it "
            "exits (under OnFailure, not after an exit 0 on SIGTERM): it would stay down; target pods whose "
            "restartPolicy is Always (Deployments, StatefulSets, DaemonSets)"
        )
    if spec.get("shareProcessNamespace"):
        return (
            "the pod shares one process namespace among its containers (shareProcessNamespace), so the "
            f"container's entrypoint is not that namespace's PID 1 and the signaller cannot tell {name!r}'s "
            "process apart; use pod-kill"
        )
    if "running" not in (container_status(pod, name).get("state") or {}):
        return f"container {name!r} is not running now, so there is nothing to restart"
    return None


def signaller_security_context(pod: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The target container's own uid and gid with no capability when the pod spec names the uid (Pod
    Security restricted admits it wherever it admits the target); else root with CAP_KILL alone."""
    pod_context = (pod.get("spec") or {}).get("securityContext") or {}
    own = (_container_spec(pod, name) or {}).get("securityContext") or {}
    uid = own.get("runAsUser", pod_context.get("runAsUser"))
    gid = own.get("runAsGroup", pod_context.get("runAsGroup"))
    context: dict[str, Any] = {
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if uid is None:
        return context | {"runAsUser": 0, "runAsNonRoot": False, "capabilities": {"drop": ["ALL"], "add": ["KILL"]}}
    context |= {"runAsUser": int(uid), "runAsNonRoot": int(uid) != 0, "capabilities": {"drop": ["ALL"]}}
    if gid is not None:
        context["runAsGroup"] = int(gid)
    return context


class Outcome(StrEnum):
    PENDING = "pending"  # not restarted yet, nothing says it will not be
    RESTARTED = "restarted"  # restartCount went up and the container runs again
    FAILED = "failed"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    message: str
    running_since: str = ""  # the restarted container's state.running.startedAt (the kubelet's clock)


def _last_line(terminated: Mapping[str, Any]) -> str:
    text = str(terminated.get("message") or "").strip()
    return text.splitlines()[-1][:400] if text else str(terminated.get("reason") or "no message")


def judge(
    pod: Mapping[str, Any] | None, uid: str, container: str, signaller_state: Mapping[str, Any], restarts_before: int
) -> Verdict:
    """What became of one restart, from the kubelet's reports of the target container and the signaller
    (`signaller_state`: its ephemeralContainerStatuses state, {} until it has one)."""
    if pod is None or (pod.get("metadata") or {}).get("uid") != uid:
        return Verdict(Outcome.FAILED, "the pod was gone before its container was seen restarting")
    status = container_status(pod, container)
    restarts = int(status.get("restartCount") or 0)
    if restarts > restarts_before:
        last = (status.get("lastState") or {}).get("terminated") or {}
        exit_text = f"exit code {last.get('exitCode', '?')} ({last.get('reason') or 'no reason'})"
        state = status.get("state") or {}
        counts = f"restartCount {restarts_before} → {restarts}"
        if "running" in state:
            since = str(state["running"].get("startedAt") or "")
            message = (
                f"container {container} exited on SIGTERM with {exit_text} and runs again since {since} ({counts})"
            )
            return Verdict(Outcome.RESTARTED, message, since)
        waiting = state.get("waiting") or {}
        return Verdict(
            Outcome.PENDING,
            f"container {container} exited with {exit_text}; the kubelet has not started it again yet "
            f"({waiting.get('reason') or 'waiting'}: {waiting.get('message') or 'back-off'}; {counts})",
        )
    terminated = signaller_state.get("terminated")
    if terminated is None:
        return Verdict(Outcome.PENDING, "the signaller has not reported yet")
    code = int(terminated.get("exitCode", -1))
    last = _last_line(terminated)
    if code in SIGNALLER_EXITS:
        return Verdict(Outcome.FAILED, f"{SIGNALLER_EXITS[code]}: {last} (signaller exit {code})")
    if last.startswith(Said.SENT):
        return Verdict(Outcome.PENDING, f"{last}; the kubelet has not reported the container's exit yet")
    return Verdict(Outcome.FAILED, f"the signaller stopped with exit code {code} before signalling: {last}")
