"""netem.sh on this machine, in a throw-away network namespace, under dash and busybox sh.

These are the script's behaviours that need no netem in the kernel: refusing bad arguments and
any tc line outside the contract's shapes (before touching tc), accepting every batch the operator
renders, clearing when there is nothing to clear, and leaving a foreign root qdisc alone.
Everything that needs netem is in tests/netns (run in a guest by test_netem_in_guest.py).
Each command runs in `unshare --net`, a namespace of its own with only `lo`, gone when it exits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from chaosguard.decisions.netem import (
    Impairment,
    clear_command,
    injector_command,
    network_command,
    partition_command,
    script_path,
)

SCRIPT = str(script_path())
SHELLS = {"dash": ["dash"], "busybox": ["busybox", "sh"]}


def _unshare_problem() -> str | None:
    if shutil.which("unshare") is None or shutil.which("tc") is None:
        return "needs unshare (util-linux) and tc (iproute2)"
    flags = ["--net"] if os.geteuid() == 0 else ["--net", "--map-root-user"]
    probe = subprocess.run(["unshare", *flags, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"cannot create a network namespace here: {probe.stderr.strip()}"
    return None


UNSHARE_PROBLEM = _unshare_problem()
pytestmark = pytest.mark.skipif(UNSHARE_PROBLEM is not None, reason=UNSHARE_PROBLEM or "")


def in_fresh_netns(shell: str, argv: list[str], setup: str = "") -> subprocess.CompletedProcess[str]:
    """Runs `setup` then the script in a new network namespace; appends the root qdisc of lo."""
    if shutil.which(SHELLS[shell][0]) is None:
        pytest.skip(f"{shell} is not installed")
    flags = ["--net"] if os.geteuid() == 0 else ["--net", "--map-root-user"]
    quoted = " ".join("'" + word.replace("'", "'\\''") + "'" for word in [*SHELLS[shell], *argv])
    body = f'ip link set lo up; {setup}\n{quoted}\ncode=$?\necho "ROOT $(tc qdisc show dev lo root)"\nexit $code'
    return subprocess.run(
        ["unshare", *flags, "sh", "-c", body], capture_output=True, text=True, timeout=60, check=False
    )


def root_line(result: subprocess.CompletedProcess[str]) -> str:
    return next(line for line in result.stdout.splitlines() if line.startswith("ROOT "))


def inject(**overrides: object) -> list[str]:
    settings: dict[str, object] = {
        "delay": "200ms",
        "jitter": "0ms",
        "correlation": 0,
        "deadline_at": int(time.time()) + 60,
        "cidrs": [],
        "ports": [],
        "device": "lo",
    }
    settings.update(overrides)
    return injector_command(**settings, now=time.time(), script=SCRIPT)  # type: ignore[arg-type]


IN_A_MINUTE = str(int(time.time()) + 60)
NETEM = "qdisc add root handle ca05: netem delay 5ms"
# A valid inject: each case below changes one thing.
OK = ["inject", "--deadline-at", IN_A_MINUTE, "--fault", "a delay", "--effect", "delaying", "--tc", NETEM]

BAD_ARGUMENTS = [
    pytest.param([], "missing command", id="no-command"),
    pytest.param(["explode"], "unknown command explode", id="unknown-command"),
    pytest.param(OK[:-2], "at least one --tc is required", id="no-batch"),
    pytest.param(["inject", *OK[3:]], "--deadline-at is required", id="no-deadline"),
    pytest.param([*OK[:5], *OK[7:]], "--effect is required", id="no-effect"),
    pytest.param(["inject", *OK[1:3], *OK[5:]], "--fault is required", id="no-fault"),
    pytest.param([*OK, "--deadline-at", "12x"], "--deadline-at 12x:", id="deadline-at-text"),
    pytest.param([*OK, "--deadline-at", "-3"], "--deadline-at -3:", id="deadline-at-negative"),
    pytest.param([*OK, "--deadline-at", "0999"], "--deadline-at 0999:", id="deadline-at-octal"),
    pytest.param([*OK, "--deadline-at"], "--deadline-at needs a value", id="deadline-at-missing"),
    pytest.param(
        [*OK, "--deadline-at", str(int(time.time()) + 86400 + 3600)], "more than 86400", id="deadline-at-beyond-24h"
    ),
    pytest.param([*OK, "--deadline-seconds", "5"], "unknown argument --deadline-seconds", id="relative-deadline"),
    # Only additions under chaosguard's handles: never a delete, a replace or someone else's handle.
    pytest.param([*OK, "--tc", "qdisc add root handle 1: htb"], "not a line chaosguard adds", id="foreign-handle"),
    pytest.param([*OK, "--tc", "qdisc del root handle ca05:"], "not a line chaosguard adds", id="delete"),
    pytest.param([*OK, "--tc", "qdisc replace root handle ca05: netem"], "not a line chaosguard adds", id="replace"),
    pytest.param([*OK, "--tc", "qdisc add root handle ca05: "], "not a line chaosguard adds", id="shape-only"),
    pytest.param(
        [*OK, "--tc", "filter add parent ffff: protocol ip pref 7 u32 match ip src 10.0.0.0/8 action drop"],
        "not a line chaosguard adds",
        id="ingress-filter-without-our-preference",
    ),
    pytest.param([*OK, "--tc", f"{NETEM} dev eth1"], "names a device", id="device-in-line"),
    pytest.param([*OK, "--tc", f"{NETEM}\nqdisc del root"], "one tc command per --tc", id="two-lines"),
    pytest.param([*OK, "--tc", f"{NETEM} # x"], "one tc command per --tc", id="comment"),
    pytest.param([*OK, "--tc", f'{NETEM} "x"'], "one tc command per --tc", id="quote"),
    pytest.param([*OK, "--fault", "a\nremoved: qdisc"], "--fault a", id="fault-two-lines"),
    pytest.param([*OK, "--device", "--tc", NETEM], "--device needs a value, got the flag --tc", id="flag-as-value"),
    pytest.param([*OK, "--device", "a b"], "--device a b:", id="device"),
    pytest.param([*OK, "--frobnicate"], "unknown argument --frobnicate", id="unknown-flag"),
    pytest.param(["clear", "--tc", NETEM], "clear: unknown argument --tc", id="clear-unknown-flag"),
]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(("arguments", "message"), BAD_ARGUMENTS)
def test_bad_arguments_are_refused_naming_the_flag(shell: str, arguments: list[str], message: str) -> None:
    result = in_fresh_netns(shell, [SCRIPT, *arguments], setup="tc qdisc add dev lo root handle 7: htb")
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr
    assert "chaosguard-netem: error:" in result.stderr
    # Refused before touching tc: the root qdisc is as it was.
    assert root_line(result).startswith("ROOT qdisc htb 7: root"), result.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_flag_equals_value_is_accepted(shell: str) -> None:
    result = in_fresh_netns(shell, [SCRIPT, "clear", "--device=lo"])
    assert result.returncode == 0, result
    assert "nothing to clear" in result.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_clear_with_nothing_there_says_so_and_succeeds(shell: str) -> None:
    result = in_fresh_netns(shell, clear_command("lo", script=SCRIPT))
    assert result.returncode == 0, result
    assert result.stdout.splitlines()[0] == (
        "chaosguard-netem: nothing to clear: no chaosguard qdisc on lo, root qdisc is the default noqueue"
    )
    assert root_line(result).startswith("ROOT qdisc noqueue 0: root")


@pytest.mark.parametrize("shell", SHELLS)
def test_a_missing_device_is_exit_2_naming_the_flag(shell: str) -> None:
    result = in_fresh_netns(shell, clear_command("nosuch0", script=SCRIPT))
    assert result.returncode == 2, result
    assert "--device nosuch0 (--device):" in result.stderr, result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_default_device_falls_back_to_eth0(shell: str) -> None:
    # No default route and no eth0 in a fresh namespace: the fallback is named in the error.
    result = in_fresh_netns(shell, clear_command(script=SCRIPT))
    assert result.returncode == 2, result
    assert "--device eth0 (fallback: no default route):" in result.stderr, result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_a_foreign_root_qdisc_is_refused_by_inject_and_left_alone_by_clear(shell: str) -> None:
    setup = "tc qdisc add dev lo root handle 1: htb || exit 99"
    injected = in_fresh_netns(shell, inject(), setup=setup)
    if injected.returncode == 99:
        pytest.skip(f"this kernel has no htb either: {injected.stderr}")
    assert injected.returncode == 3, injected
    assert "device lo already has a root qdisc htb 1: that is not chaosguard's" in injected.stderr
    assert root_line(injected).startswith("ROOT qdisc htb 1: root")

    cleared = in_fresh_netns(shell, clear_command("lo", script=SCRIPT), setup=setup)
    assert cleared.returncode == 0, cleared
    assert "root qdisc on lo is htb 1:, not chaosguard's ca05:; left alone" in cleared.stdout
    assert root_line(cleared).startswith("ROOT qdisc htb 1: root")


@pytest.mark.parametrize("shell", SHELLS)
def test_an_injector_started_after_its_deadline_injects_nothing_and_says_so(shell: str) -> None:
    # A kubelet that starts the injector late (image pull back-off, slow node) must not put the fault
    # in after the run has ended. Nothing is touched: not even a foreign root qdisc is looked at, and
    # the last word (the kubelet's termination message) says why, so the operator can confirm it.
    argv = inject()  # the operator's argv, then its deadline moved to 5 s ago (the operator refuses that)
    argv[argv.index("--deadline-at") + 1] = str(int(time.time()) - 5)
    setup = "tc qdisc add dev lo root handle 7: htb || exit 99"
    result = in_fresh_netns(shell, [*argv, "--status-file", "/dev/stderr"], setup=setup)
    if result.returncode == 99:
        pytest.skip(f"this kernel has no htb: {result.stderr}")
    assert result.returncode == 0, result
    assert "chaosguard-netem: not injected: the deadline" in result.stdout, result.stdout
    assert "nothing added" in result.stdout
    assert result.stderr.strip().startswith("not injected: the deadline"), result.stderr
    assert root_line(result).startswith("ROOT qdisc htb 7: root"), result.stdout


OPERATOR_BATCHES = {
    "latency": lambda at: injector_command("5ms", "1ms", 10, at, [], [], "lo", now=time.time(), script=SCRIPT),
    "latency-narrowed": lambda at: injector_command(
        "5ms", "0ms", 0, at, ["10.1.0.0/16", "fd00::/64"], [80, 443], "lo", now=time.time(), script=SCRIPT
    ),
    "network": lambda at: network_command(
        Impairment(delay="5ms", loss=1, corrupt=1, duplicate=1, reorder=1, rate="1gbit"),
        at,
        ["10.1.0.0/16"],
        [],
        "lo",
        now=time.time(),
        script=SCRIPT,
    ),
    "partition": lambda at: partition_command(
        ["10.1.0.0/16"], [5432], "both", at, "lo", now=time.time(), script=SCRIPT
    ),
    "partition-ingress": lambda at: partition_command(
        ["fd00::/64"], [], "ingress", at, "lo", now=time.time(), script=SCRIPT
    ),
}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("kind", OPERATOR_BATCHES)
def test_every_batch_the_operator_renders_gets_past_the_scripts_checks_to_tc(shell: str, kind: str) -> None:
    # The operator's checker and the script's read the same contract: a rendered batch is never refused
    # as arguments (exit 2). This kernel may lack the tc modules (exit 4, the batch taken out again);
    # one that has them holds the fault until the deadline, 2 s away, and removes it.
    argv = OPERATOR_BATCHES[kind](int(time.time()) + 2)
    fault = argv[argv.index("--fault") + 1]
    result = in_fresh_netns(shell, argv)
    if result.returncode == 4:
        assert f"adding {fault} on lo failed:" in result.stderr, result
    else:
        assert result.returncode == 0, result
        assert f"added: {fault} on lo (device from --device)" in result.stdout, result
        assert "(reason: deadline)" in result.stdout, result
    assert root_line(result).startswith("ROOT qdisc noqueue 0: root"), result.stdout
