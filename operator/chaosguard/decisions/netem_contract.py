"""The contract between the operator and the injector script (`runtime/injector/netem.sh`), written once.

Everything both sides must agree on lives here: the exit codes, the words that open each line the
script says (the operator reads the last one from the kubelet's termination message), the qdisc
handles and filter preferences that mark what is chaosguard's, and the shapes of the `tc -batch`
lines the script accepts. The script does not keep its own copies: its contract block is
`contract_block()` pasted between two markers, and tests/unit/test_netem_command.py fails when the
two differ (the failure prints the block to paste). Pure: no I/O.
"""

from __future__ import annotations

import re
from enum import IntEnum, StrEnum

PROG = "chaosguard-netem"


class InjectorExit(IntEnum):
    """The script's exit codes; a signal that ends the hold exits 128 + its number (SIGNAL_EXITS)."""

    DONE = 0  # inject: added, held, removed (or not added: the deadline had passed); clear: nothing of ours left
    USAGE = 2  # bad arguments (the message names the flag), or no such device
    BUSY = 3  # the root (or ingress) qdisc it would need is someone else's: left alone
    APPLY = 4  # tc refused the batch (nothing of ours is left behind), or could not show the root qdisc
    REMOVE = 5  # removing our qdisc failed: it may still be in place (run `clear`)


# The signals the script traps (it removes its fault, then exits 128 + the signal's number).
SIGNAL_EXITS = {"HUP": 129, "INT": 130, "TERM": 143}

# Why an injector stopped, as a person would want it explained (the operator's status and Events).
INJECTOR_EXITS: dict[int, str] = {
    InjectorExit.USAGE: "the injector refused its arguments or found no such network device",
    InjectorExit.BUSY: (
        "the pod's interface already has a root (or ingress) qdisc that is not chaosguard's, so it was left alone"
    ),
    InjectorExit.APPLY: "tc could not add the fault",
    InjectorExit.REMOVE: "tc could not remove the fault again",
}


class Said(StrEnum):
    """The first words of every line the script says (`chaosguard-netem: <said>: <details>`).
    The status file (the kubelet's termination message) gets the last line without the program name."""

    NOT_INJECTED = "not injected"  # started after its deadline: nothing added
    REPLACING = "replacing"  # an earlier chaosguard qdisc is taken out first
    ADDED = "added"
    HOLDING = "holding"
    REMOVED = "removed"
    NOTHING_TO_REMOVE = "nothing to remove"
    NOTHING_TO_CLEAR = "nothing to clear"
    ERROR = "error"


# What `clear` says when it left nothing of chaosguard's behind.
CLEARED = re.compile(f"({Said.REMOVED}: qdisc|{Said.NOTHING_TO_CLEAR}|{Said.NOTHING_TO_REMOVE})")
# What an inject says last when it ended on its own with nothing of chaosguard's left: it removed its
# qdisc, found none to remove, or started after its deadline and added nothing.
INJECTOR_ENDED = re.compile(f"^({Said.REMOVED}: qdisc|{Said.NOTHING_TO_REMOVE}|{Said.NOT_INJECTED}: the deadline)")

# The root qdisc handle that marks a qdisc as chaosguard's. Removal is always `qdisc del ... root
# handle ca05:`, which the kernel refuses unless the root qdisc has exactly that handle.
ROOT_HANDLE = "ca05:"
# The netem qdisc under the root prio, and the prio band it hangs on. With 4 bands and the default
# priomap (which never names band 4), only the filters send traffic there.
NETEM_HANDLE = "ca06:"
BAND_CLASS = "ca05:4"
PRIOMAP = "1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1"
# The ingress qdisc's handle is fixed by the kernel; its filters' preferences (0xca05, 0xca06 for
# IPv4, IPv6) are how the script knows an ingress qdisc is chaosguard's: one without them is never touched.
INGRESS_HANDLE = "ffff:"
INGRESS_PREFS = {"ip": 51717, "ipv6": 51718}
# Filters on chaosguard's own root prio (a filter preference holds one protocol).
EGRESS_PREFS = {"ip": 1, "ipv6": 2}
# The longest hold the script accepts (from now to the deadline).
MAX_DEADLINE_SECONDS = 86400


class Line(StrEnum):
    """The only `tc -batch` lines the script applies, by how they begin (the script inserts `dev DEV`
    after the first two words). Every one adds, under chaosguard's handles; the script refuses any
    other line, so an injector can never delete or change a qdisc that is not its own."""

    ROOT_QDISC = f"qdisc add root handle {ROOT_HANDLE} "
    NETEM_BAND = f"qdisc add parent {BAND_CLASS} handle {NETEM_HANDLE} netem "
    INGRESS_QDISC = f"qdisc add handle {INGRESS_HANDLE} ingress"  # the whole line
    EGRESS_FILTER = f"filter add parent {ROOT_HANDLE} protocol "
    INGRESS_FILTER_V4 = f"filter add parent {INGRESS_HANDLE} protocol ip pref {INGRESS_PREFS['ip']} u32 "
    INGRESS_FILTER_V6 = f"filter add parent {INGRESS_HANDLE} protocol ipv6 pref {INGRESS_PREFS['ipv6']} u32 "


BLOCK_BEGIN = "# --- contract: generated from chaosguard.decisions.netem_contract.contract_block(); do not edit ---"
BLOCK_END = "# --- end of contract ---"


def _sh(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    text = value
    if "'" in text:  # never: every value above is a plain word; a quote would need escaping
        raise ValueError(f"contract value {text!r} cannot be single-quoted")
    return f"'{text}'"


def contract_block() -> str:
    """The contract as POSIX sh assignments, markers included: what netem.sh carries verbatim."""
    assignments: list[tuple[str, str | int]] = [
        ("PROG", PROG),
        *((f"EX_{code.name}", int(code)) for code in InjectorExit),
        *((f"EX_SIG{name}", code) for name, code in SIGNAL_EXITS.items()),
        *((f"SAID_{said.name}", said.value) for said in Said),
        ("ROOT_HANDLE", ROOT_HANDLE),
        ("INGRESS_HANDLE", INGRESS_HANDLE),
        ("INGRESS_PREF_V4", INGRESS_PREFS["ip"]),
        ("INGRESS_PREF_V6", INGRESS_PREFS["ipv6"]),
        ("MAX_DEADLINE", MAX_DEADLINE_SECONDS),
        *((f"LINE_{line.name}", line.value) for line in Line),
    ]
    return "\n".join([BLOCK_BEGIN, *(f"{name}={_sh(value)}" for name, value in assignments), BLOCK_END])
