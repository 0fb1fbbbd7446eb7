"""`chaosguard apply -f EXPERIMENT.yaml --wait` as CI runs it: a real process against the local control
plane with the operator running, one test per exit code (0 Completed, 1 Aborted, 2 refused or invalid,
3 timed out), a real SIGINT that aborts the run and leaves nothing behind, and the JUnit file checked
against the JUnit schema CI systems read (junit-10.xsd, vendored from the pytest 9.2.0 sdist on PyPI,
testing/example_scripts/junit-10.xsd, MIT, by Gregory Boissinot)."""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import xmlschema
from kubernetes import client

from localcluster.controlplane import ControlPlane, default_bin_dir
from localcluster.operator import (
    REPO,
    OperatorProcess,
    apply_yaml,
    create_policy,
    experiment,
    experiment_names,
    experiment_yaml,
    scoped_policy,
    status_of,
    wait_for_ready_pods,
)
from localcluster.wait import wait_for
from tests.integration.test_operator_podkill import kills

pytestmark = pytest.mark.controlplane
JUNIT_SCHEMA = Path(__file__).resolve().parents[1] / "support" / "junit-10.xsd"
ABORT_ANNOTATION = "chaosguard.dev/abort"


@dataclass(frozen=True)
class Finished:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(JUNIT_SCHEMA))


@dataclass(frozen=True)
class Ci:
    """What each test here works with: the control plane (the operator running), a shop namespace with
    5 checkout pods, and a directory for the experiment file and the JUnit XML."""

    control_plane: ControlPlane
    k8s: client.ApiClient
    shop: str
    tmp_path: Path

    @property
    def junit(self) -> Path:
        return self.tmp_path / "junit.xml"

    def apply(self, experiment_text: str, *argv: str) -> Finished:
        """`chaosguard apply -f <the experiment> -n shop --wait --junit junit.xml ARGV...`, to its end."""
        path = write(self.tmp_path, experiment_text)
        return run_apply(self.control_plane, *self.argv(path), *argv)

    def argv(self, path: Path) -> list[str]:
        return ["-f", str(path), "-n", self.shop, "--wait", "--junit", str(self.junit)]


@pytest.fixture
def ci(
    control_plane: ControlPlane, k8s: client.ApiClient, chaos_operator: OperatorProcess, shop: str, tmp_path: Path
) -> Ci:
    return Ci(control_plane, k8s, shop, tmp_path)


def command(control_plane: ControlPlane, *argv: str) -> list[str]:
    return [sys.executable, "-m", "chaosguard", "apply", *argv, "--kubeconfig", str(control_plane.kubeconfig)]


def run_apply(control_plane: ControlPlane, *argv: str, timeout: float = 120) -> Finished:
    done = subprocess.run(
        command(control_plane, *argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    return Finished(done.returncode, done.stdout, done.stderr)


def write(tmp_path: Path, text: str, name: str = "experiment.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def junit_case(schema: xmlschema.XMLSchema, path: Path) -> ElementTree.Element:
    """Validates the file against the schema and returns its one test case."""
    schema.validate(str(path))
    cases = ElementTree.parse(path).getroot().findall("./testsuite/testcase")
    assert len(cases) == 1, path.read_text()
    return cases[0]


def unreachable_guard(experiment: str) -> str:
    """A steady-state guard on a Prometheus nobody serves: the check before the run finds it unavailable
    (onUnavailable defaults to abort), so the operator aborts the run with nothing injected."""
    return experiment + (
        "  steadyState:\n"
        "    prometheus: {url: 'http://127.0.0.1:9'}\n"
        "    interval: 1s\n"
        "    conditions:\n"
        "      - {name: error-ratio, query: 'vector(0)', operator: '<', threshold: 0.01}\n"
    )


def test_completed_run_exits_0_with_a_passing_junit_case_and_a_report(
    ci: Ci, junit_schema: xmlschema.XMLSchema
) -> None:
    report = ci.tmp_path / "report.html"
    done = ci.apply(experiment_yaml("ci-ok", duration="3s"), "--report", str(report))

    assert done.code == 0, done
    assert "chaosexperiment.chaosguard.dev/ci-ok created" in done.out
    assert "phase Running" in done.out and "kill " in done.out
    status = status_of(ci.k8s, ci.shop, "ci-ok")
    run_id = status["lastRun"]["id"]
    assert status["lastRun"]["phase"] == "Completed"
    assert f"{ci.shop}/ci-ok: Completed: run {run_id} Completed" in done.out
    case = junit_case(junit_schema, ci.junit)
    assert case.get("classname") == f"{ci.shop}.ci-ok" and case.get("name") == run_id
    assert case.find("failure") is None and case.find("error") is None
    assert float(case.get("time") or 0) >= 3.0
    html = report.read_text()
    assert html.startswith("<!DOCTYPE html>") and run_id in html

    again = ci.apply(experiment_yaml("ci-ok", duration="3s"))
    assert again.code == 2 and "is unchanged and its run" in again.err, again
    followed = run_apply(ci.control_plane, "--name", "ci-ok", "-n", ci.shop, "--wait")
    assert followed.code == 0 and f"Completed: run {run_id} Completed" in followed.out, followed


def test_aborted_run_exits_1_and_the_junit_failure_carries_the_abort_reason(
    ci: Ci, junit_schema: xmlschema.XMLSchema
) -> None:
    report = ci.tmp_path / "report.md"
    done = ci.apply(
        unreachable_guard(experiment_yaml("ci-breach", duration="1m", interval="5s")), "--report", str(report)
    )

    assert done.code == 1, done
    last = status_of(ci.k8s, ci.shop, "ci-breach")["lastRun"]
    assert last["phase"] == "Aborted", last
    failure = junit_case(junit_schema, ci.junit).find("failure")
    assert failure is not None and failure.get("type") == "Aborted"
    assert last["reason"] in (failure.get("message") or "") and last["message"] in (failure.get("message") or "")
    assert "SLI error-ratio" in (failure.text or "")
    assert f"run {last['id']}" in report.read_text()


def test_experiment_refused_by_policy_exits_2_with_validates_refused_lines(
    ci: Ci, isolated_policies: list[str], junit_schema: xmlschema.XMLSchema
) -> None:
    isolated_policies.append(f"{ci.shop}-short")
    create_policy(ci.k8s, f"{ci.shop}-short", scoped_policy(ci.shop, maxDuration="2s"))
    done = ci.apply(experiment_yaml("ci-too-long", duration="10s"))

    assert done.code == 2, done
    assert f"{ci.tmp_path / 'experiment.yaml'} {ci.shop}/ci-too-long: refused" in done.out
    refused = [line.strip() for line in done.out.splitlines() if line.strip().startswith("REFUSED ")]
    assert refused and refused[0].startswith("REFUSED max-duration: "), done.out
    status = status_of(ci.k8s, ci.shop, "ci-too-long")
    assert status["phase"] == "Rejected" and kills(status, "Killed") == []
    error = junit_case(junit_schema, ci.junit).find("error")
    assert error is not None and error.get("type") == "Rejected"
    assert refused[0] in (error.get("message") or "")


def test_invalid_file_exits_2_before_touching_the_cluster(ci: Ci, junit_schema: xmlschema.XMLSchema) -> None:
    done = ci.apply(experiment_yaml("ci-invalid", duration="ten seconds"))

    assert done.code == 2, done
    assert "REFUSED schema: " in done.out and "spec.duration" in done.out, done.out
    assert experiment_names(ci.k8s, ci.shop) == set()
    error = junit_case(junit_schema, ci.junit).find("error")
    assert error is not None and error.get("type") == "Invalid"


def test_applying_an_edit_during_a_run_follows_the_new_run_not_the_one_it_stopped(
    ci: Ci, junit_schema: xmlschema.XMLSchema
) -> None:
    apply_yaml(ci.control_plane, experiment_yaml("ci-edited", duration="2m", interval="2s"), ci.shop)
    wait_for(
        lambda: (status_of(ci.k8s, ci.shop, "ci-edited").get("currentRun") or {}).get("killsTotal", 0) >= 1,
        timeout=30,
        what="the first kill of the run the edit stops",
    )
    stopped = status_of(ci.k8s, ci.shop, "ci-edited")["currentRun"]["id"]
    done = ci.apply(experiment_yaml("ci-edited", duration="3s"))

    assert done.code == 0, done
    assert "chaosexperiment.chaosguard.dev/ci-edited configured" in done.out
    history = {run["id"]: run for run in status_of(ci.k8s, ci.shop, "ci-edited")["history"]}
    assert history[stopped]["phase"] == "Aborted" and history[stopped]["reason"] == "SpecChanged"
    case = junit_case(junit_schema, ci.junit)
    assert case.get("name") != stopped and history[str(case.get("name"))]["phase"] == "Completed"


def test_timeout_exits_3_and_aborts_the_run_it_gave_up_on(ci: Ci, junit_schema: xmlschema.XMLSchema) -> None:
    done = ci.apply(experiment_yaml("ci-slow", duration="2m", interval="2s"), "--timeout", "4s")

    assert done.code == 3, done
    assert "did not end within --timeout 4s; aborted" in done.out
    status = status_of(ci.k8s, ci.shop, "ci-slow")
    assert status.get("currentRun") is None and status["lastRun"]["phase"] == "Aborted"
    failure = junit_case(junit_schema, ci.junit).find("failure")
    assert failure is not None and failure.get("type") == "TimedOut"


def test_timeout_before_the_first_run_deletes_the_experiment_it_created(ci: Ci) -> None:
    scheduled = experiment_yaml("ci-scheduled", duration="3s") + "  schedule: {cron: '0 0 1 1 *'}\n"
    done = ci.apply(scheduled, "--timeout", "3s")

    assert done.code == 3, done
    assert "phase Scheduled" in done.out and "did not end within --timeout 3s; deleted" in done.out, done.out
    wait_for(
        lambda: "ci-scheduled" not in experiment_names(ci.k8s, ci.shop),
        timeout=30,
        what="the experiment to be gone",
    )


def test_sigint_aborts_the_run_and_leaves_nothing_behind(ci: Ci, junit_schema: xmlschema.XMLSchema) -> None:
    path = write(ci.tmp_path, experiment_yaml("ci-interrupted", duration="2m", interval="2s"))
    with started(command(ci.control_plane, *ci.argv(path), "--abort-on-interrupt")) as process:
        wait_for_kill(ci.k8s, ci.shop, "ci-interrupted", process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)

    assert process.returncode == 1, (out, err)
    assert "interrupted" in out and "aborted on interrupt" in out, out
    assert_nothing_left(ci.k8s, ci.shop, "ci-interrupted")
    failure = junit_case(junit_schema, ci.junit).find("failure")
    assert failure is not None and failure.get("type") == "Aborted"
    assert "interrupted (Ctrl-C)" in (failure.get("message") or "")


def test_ctrl_c_on_a_terminal_asks_and_aborts_on_yes(ci: Ci) -> None:
    path = write(ci.tmp_path, experiment_yaml("ci-asked", duration="2m", interval="2s"))
    leader, follower = pty.openpty()
    with started(command(ci.control_plane, *ci.argv(path)), stdin=follower) as process:
        os.close(follower)
        wait_for_kill(ci.k8s, ci.shop, "ci-asked", process)
        process.send_signal(signal.SIGINT)
        wait_for(lambda: "[y/N]" in process.read(), timeout=20, what="the question whether to abort")
        os.write(leader, b"y\n")
        out, err = process.communicate(timeout=60)
    os.close(leader)

    assert process.returncode == 1, (out, err)
    assert_nothing_left(ci.k8s, ci.shop, "ci-asked")


# --------------------------------------------------------------------------- helpers


class Started:
    """A running `chaosguard apply` whose stdout is read as it comes, so a test can wait for a prompt."""

    def __init__(self, argv: Sequence[str], stdin: int | None) -> None:
        self.process = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        self.seen = b""

    def read(self) -> str:
        assert self.process.stdout is not None
        chunk = self.process.stdout.read()
        if chunk:
            self.seen += chunk
        return self.seen.decode(errors="replace")

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def communicate(self, timeout: float) -> tuple[str, str]:
        self.process.wait(timeout)
        out = self.read()
        assert self.process.stderr is not None
        return out, self.process.stderr.read().decode(errors="replace")

    @property
    def returncode(self) -> int | None:
        return self.process.returncode


@contextlib.contextmanager
def started(argv: Sequence[str], stdin: int | None = None) -> Iterator[Started]:
    process = Started(argv, stdin)
    try:
        yield process
    finally:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait(10)


def wait_for_kill(k8s: client.ApiClient, namespace: str, name: str, process: Started) -> None:
    wait_for(lambda: f"chaosexperiment.chaosguard.dev/{name} created" in process.read(), timeout=30, what="the apply")
    wait_for(
        lambda: (status_of(k8s, namespace, name).get("currentRun") or {}).get("killsTotal", 0) >= 1,
        timeout=30,
        what=f"the first kill of {namespace}/{name}",
        describe=lambda: str(status_of(k8s, namespace, name)),
    )


def assert_nothing_left(k8s: client.ApiClient, namespace: str, name: str) -> None:
    """No run in progress, no abort request pending, no kill after the run ended, every pod back."""
    body = experiment(k8s, namespace, name)
    status = body.get("status") or {}
    assert status.get("currentRun") is None, status
    last = status["lastRun"]
    assert last["phase"] == "Aborted" and last["reason"] == "AbortRequested", last
    assert ABORT_ANNOTATION not in (body["metadata"].get("annotations") or {})
    assert all(kill["at"] <= last["finishedAt"] for kill in last.get("kills") or []), last
    wait_for_ready_pods(k8s, namespace, "checkout", 5)


def test_the_chaos_ci_workflow_passes_actionlint() -> None:
    actionlint = default_bin_dir() / "actionlint"
    assert actionlint.exists(), f"{actionlint} is missing: run hack/build-control-plane.sh"
    workflow = Path(".github") / "workflows" / "chaos-ci.yaml"
    result = subprocess.run([str(actionlint), "-no-color", str(workflow)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
