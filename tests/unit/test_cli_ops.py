"""`report`, `status` and `abort` without a cluster: argument handling, the status table, and that
registering them does not import the kubernetes client (which `chaosguard run` must import only
after it has set KUBECONFIG)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from chaosguard.cli import ops as cli_ops

NOW = datetime(2026, 11, 24, 13, 0, 0, tzinfo=UTC)


def test_importing_the_commands_does_not_import_the_kubernetes_client() -> None:
    code = "import sys, chaosguard.cli.ops; print('kubernetes' in sys.modules or 'kopf' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_register_adds_the_commands_to_an_existing_parser() -> None:
    parser = argparse.ArgumentParser(prog="chaosguard")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("validate")
    cli_ops.register(sub)
    args = parser.parse_args(["report", "checkout-pod-kill", "-n", "shop", "--run", "r3", "-o", "out.html"])
    assert (args.command, args.name, args.namespace, args.run, args.output) == (
        "report",
        "checkout-pod-kill",
        "shop",
        "r3",
        "out.html",
    )
    assert parser.parse_args(["status", "-A"]).all_namespaces
    abort = parser.parse_args(["abort", "--all", "--reason", "incident"])
    assert abort.all and abort.reason == "incident" and abort.name is None and callable(abort.handler)


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["abort"], "name the experiment to abort"),
        (["abort", "x", "--all"], "either NAME or --all"),
        (["abort", "--all", "-n", "shop"], "takes no -n"),
        (["abort", "x", "--undo"], "--undo only goes with --all"),
        (["status", "-n", "shop", "-A"], "not allowed with argument"),
        (["report", "x", "--format", "pdf"], "invalid choice"),
    ],
)
def test_bad_usage_exits_2_with_the_fix(argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_ops.main(argv)
    assert exit_info.value.code == 2
    assert complaint in capsys.readouterr().err


def test_a_missing_kubeconfig_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    assert cli_ops.main(["status", "--kubeconfig", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR no usable kubeconfig (--kubeconfig ") and "set KUBECONFIG" in err


def experiment(name: str, status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop"}, "spec": {"action": "pod-kill", **spec}, "status": status}


def test_status_rows_summarise_each_experiment() -> None:
    long_message = "REFUSED max-duration: spec.duration 5m is above the 1m allowed by ChaosPolicy/short; set it lower"
    items = [
        experiment(
            "done",
            {
                "phase": "Completed",
                "message": "run r1 completed",
                "lastRun": {
                    "id": "r1",
                    "phase": "Completed",
                    "reason": "RunCompleted",
                    "killsTotal": 2,
                    "finishedAt": "2026-11-24T12:55:00Z",
                },
            },
        ),
        experiment(
            "running",
            {
                "phase": "Running",
                "currentRun": {"id": "r2", "killsTotal": 3, "deadline": "2026-11-24T13:05:00.5Z"},
                "message": "run r2 until ...",
            },
        ),
        experiment(
            "weekly",
            {"phase": "Scheduled", "nextRunAt": "2026-12-01T14:00:00Z", "message": "next run at ..."},
            dryRun=True,
        ),
        experiment("refused", {"phase": "Rejected", "message": long_message}),
        experiment("new", {}),
    ]
    rows = {row[1]: row for row in cli_ops.status_rows(items, NOW)}
    assert rows["done"][:4] == ["shop", "done", "pod-kill", "Completed"]
    assert rows["done"][4:] == ["Completed/RunCompleted 5m ago, 2 killed", "-", "run r1 completed"]
    assert rows["running"][3:6] == ["Running", "running r2 (3 killed)", "now, until 13:05:00Z"]
    assert rows["weekly"][2] == "pod-kill (dry run)"
    assert rows["weekly"][5] == "2026-12-01T14:00Z (in 7d1h)"
    assert rows["refused"][6] == long_message[: cli_ops.MESSAGE_WIDTH - 3] + "..."
    assert cli_ops.status_rows(items[3:4], NOW, wide=True)[0][6] == long_message
    assert rows["new"][3:] == ["New", "-", "-", "-"]

    table = cli_ops.format_table(["NAMESPACE", "NAME"], [["shop", "a-long-name"], ["kube-public", "b"]])
    assert table == "NAMESPACE     NAME\nshop          a-long-name\nkube-public   b\n"
