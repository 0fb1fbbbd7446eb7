"""Log lines: `--log-format json` makes one JSON object a line, and every line the engine logs for an
experiment carries the experiment and the run, as fields of their own (text: as prefixes)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from chaosguard.runtime import logs
from chaosguard.runtime.engine import ExperimentDriver

BODY = {
    "apiVersion": "chaosguard.dev/v1alpha1",
    "kind": "ChaosExperiment",
    "metadata": {"name": "checkout-pod-kill", "namespace": "shop", "uid": "u-1", "generation": 1},
    "spec": {},
    "status": {},
}


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def driver_logging(capsys: pytest.CaptureFixture[str], log_format: str, run_id: str | None) -> list[str]:
    logs.configure(log_format)  # the handler writes to sys.stderr, which capsys has replaced
    status: dict[str, Any] = {}
    if run_id:
        status = {"phase": "Running", "currentRun": {"id": run_id, "phase": "Running", "trigger": "apply"}}
    body = {**BODY, "status": status}
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # no operator (and no Event queue) in a unit test
    object_logger = kopf.LocalObjectLogger(body=kopf.Body(body), settings=settings)
    driver = ExperimentDriver(None, body, object_logger)  # type: ignore[arg-type]
    driver.logger.info("RunStarted: %s", "run started")
    driver.logger.warning("step failed; retrying: %s", "boom")
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_json_lines_carry_the_experiment_and_the_run(root_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    lines = driver_logging(capsys, "json", "r3-20261122T100000Z")
    assert len(lines) == 2, lines
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "RunStarted: run started"
    assert first["experiment"] == "shop/checkout-pod-kill"
    assert first["run"] == "r3-20261122T100000Z"
    assert first["object"]["namespace"] == "shop" and first["object"]["name"] == "checkout-pod-kill"
    assert first["object"]["kind"] == "ChaosExperiment" and first["object"]["uid"] == "u-1"
    assert first["severity"] == "info" and "timestamp" in first
    assert second["severity"] == "warn" and second["run"] == first["run"]


def test_before_the_first_run_the_run_field_is_null(root_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    (line, _) = driver_logging(capsys, "json", None)
    record = json.loads(line)
    assert record["run"] is None and record["experiment"] == "shop/checkout-pod-kill"


def test_a_finished_run_still_names_its_lines() -> None:
    status = {"phase": "Completed", "lastRun": {"id": "r1-x", "phase": "Completed", "trigger": "apply"}}
    driver = ExperimentDriver(None, {**BODY, "status": status}, logging.getLogger("t"))  # type: ignore[arg-type]
    assert driver.log_run_id() == "r1-x"


def test_text_lines_prefix_the_experiment_and_the_run(root_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    lines = driver_logging(capsys, "text", "r3-20261122T100000Z")
    assert len(lines) == 2, lines
    assert lines[0].endswith("[shop/checkout-pod-kill] [run r3-20261122T100000Z] RunStarted: run started"), lines[0]
    assert "[WARNING ]" in lines[1]
