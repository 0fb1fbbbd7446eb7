"""Issue 20, credentials and URLs, on the real API server with the operator as a process.

An experiment's steadyState is queried from the operator's pod, with Secrets the operator may read.
Real HTTP listeners on 127.0.0.1 stand for the places a query can go, and record the Authorization
headers they get: `own` is the Prometheus the operator was configured with (`--prometheus-url`),
`foreign` a server the author runs, and others answer with a redirect or an internal error.

- a token goes only to an author who may `get` its Secret, and only to a URL the cluster's owners
  allow (a ChaosPolicy's allowedPrometheusURLs, else the operator's own Prometheus); refused at
  `kubectl apply` (the webhook), by `chaosguard validate`, and by the engine without webhooks;
- a redirect from an allowed URL is not followed;
- what an endpoint answers reaches status and Events only as a status code.

Users are the control plane's static-token users: alice and mallory may create experiments and
delete pods in the test's namespace; alice may also `get` the Secret prometheus-token, mallory not.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    REPO,
    OperatorProcess,
    create_policy,
    events_for,
    scoped_policy,
    status_of,
    wait_for_phase,
)
from localcluster.prometheus import RecordingServer
from tests.integration.conftest import create_namespace
from tests.integration.test_admission import EDIT, EXPERIMENTS, PODS, Operators, grant, kubectl_apply, rule

pytestmark = pytest.mark.controlplane

SECRET = "prometheus-token"
SECRETS = {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [SECRET]}
# One series whose value is 0: `< 1` holds.
HEALTHY = b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"0"]}]}}'
LEAK = "hunter2-internal-only"


class CredentialOperators(Operators):
    """The admission module's operators, always started with `--prometheus-url`."""

    def __init__(self, control_plane: ControlPlane, workdir: Path, namespace: str, prometheus_url: str) -> None:
        super().__init__(control_plane, workdir, namespace)
        self.prometheus_url = prometheus_url

    def _start(self, args: list[str], env: dict[str, str] | None = None) -> OperatorProcess:
        return super()._start([*args, "--prometheus-url", self.prometheus_url], env)

    def plain_opted_out(self) -> OperatorProcess:
        """No webhooks, and the owners' opt-out (`--allow-unverified-authors`): unknown authors' experiments
        are judged further, so what stands between them and a token is the engine's own Secret and URL checks."""
        self.plain()
        return self._start(["--allow-unverified-authors"])


@pytest.fixture(scope="module")
def own() -> Iterator[RecordingServer]:
    """The Prometheus the operator was configured with (`chaosguard run --prometheus-url`)."""
    with RecordingServer(response=(200, "application/json", HEALTHY)) as server:
        yield server


@pytest.fixture
def foreign() -> Iterator[RecordingServer]:
    """A server the author runs: it would gladly answer like Prometheus."""
    with RecordingServer(response=(200, "application/json", HEALTHY)) as server:
        yield server


@pytest.fixture(scope="module")
def operators(
    chaos_operator: OperatorProcess,
    chaosguard_crds: ControlPlane,
    k8s: client.ApiClient,
    own: RecordingServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CredentialOperators]:
    chaos_operator.stop()
    namespace = create_namespace(k8s, "chaosguard-credentials")
    managed = CredentialOperators(chaosguard_crds, tmp_path_factory.mktemp("credentials"), namespace, own.url)
    try:
        yield managed
    finally:
        managed.stop()
        client.CoreV1Api(k8s).delete_namespace(namespace)
        chaos_operator.start()


@pytest.fixture
def token(k8s: client.ApiClient, shop: str) -> str:
    value = f"tok-{uuid.uuid4().hex}"
    client.CoreV1Api(k8s).create_namespaced_secret(shop, {"metadata": {"name": SECRET}, "stringData": {"token": value}})
    return value


@pytest.fixture
def team(k8s: client.ApiClient, shop: str) -> str:
    for user in ("alice", "mallory"):
        grant(k8s, shop, user, rule(EXPERIMENTS, EDIT), rule(PODS, ["get", "list", "delete"]))
    grant(k8s, shop, "alice", rule(SECRETS, ["get"]))
    return shop


def guarded_yaml(name: str, namespace: str, url: str, *, with_token: bool, tag: str) -> str:
    prometheus: dict[str, Any] = {"url": url, "timeout": "1s"}
    if with_token:
        prometheus["bearerTokenSecret"] = {"name": SECRET, "key": "token"}
    body = {
        "apiVersion": "chaosguard.dev/v1alpha1",
        "kind": "ChaosExperiment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "action": "pod-kill",
            "target": {"selector": {"matchLabels": {"app": "checkout"}}, "mode": "one"},
            "duration": "2s",
            "dryRun": True,
            "steadyState": {
                "prometheus": prometheus,
                "interval": "1s",
                "recovery": {"timeout": "5s"},
                "conditions": [{"name": "healthy", "query": f'up{{test="{tag}"}}', "operator": "<", "threshold": 1}],
            },
        },
    }
    return yaml.safe_dump(body)


def authorizations(server: RecordingServer, tag: str) -> list[str | None]:
    """The Authorization header of every query of this test's condition that reached `server`."""
    return [r.headers.get("authorization") for r in server.queries() if tag in r.query.get("query", [""])[0]]


def refusals_in(stderr: str) -> list[str]:
    return sorted({word.split(":")[0] for word in stderr.split("REFUSED ")[1:]})


def everything_said(k8s: client.ApiClient, namespace: str, name: str) -> str:
    status = yaml.safe_dump(status_of(k8s, namespace, name))
    return status + "\n".join(f"{e.reason}: {e.message}" for e in events_for(k8s, namespace, name))


def validate(tmp_path: Path, text: str, prometheus_url: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "experiment.yaml").write_text(text)
    argv = [sys.executable, "-m", "chaosguard", "validate", "-f", str(tmp_path / "experiment.yaml")]
    argv += ["--prometheus-url", prometheus_url]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False, timeout=60)


def test_a_token_goes_only_to_an_author_who_may_read_it_and_to_the_operators_prometheus(
    operators: CredentialOperators,
    control_plane: ControlPlane,
    k8s: client.ApiClient,
    team: str,
    token: str,
    own: RecordingServer,
    foreign: RecordingServer,
    tmp_path: Path,
) -> None:
    operators.webhooks()
    tag = uuid.uuid4().hex[:8]

    # The attack: mallory may not read the Secret, and points the url at her own server.
    attack = guarded_yaml("exfiltrate", team, foreign.url, with_token=True, tag=tag)
    refused = kubectl_apply(control_plane, attack, "mallory")
    assert refused.returncode != 0
    assert refusals_in(refused.stderr) == ["prometheus-credentials-url", "secret-permission"], refused.stderr
    assert (
        f"REFUSED secret-permission: spec.steadyState.prometheus.bearerTokenSecret names Secret '{SECRET}', "
        f"but mallory may not get it in namespace '{team}'"
    ) in refused.stderr
    assert f"ask for `get` on secrets/{SECRET} in '{team}'" in refused.stderr
    assert (
        f"REFUSED prometheus-credentials-url: spec.steadyState.prometheus.bearerTokenSecret would send a token "
        f"to {foreign.url}, but with no ChaosPolicy listing allowedPrometheusURLs a token goes only to the "
        f"operator's own Prometheus, {own.url}"
    ) in refused.stderr

    # Even at the operator's own Prometheus, mallory may not use a Secret she cannot read.
    at_own = kubectl_apply(control_plane, guarded_yaml("borrow", team, own.url, with_token=True, tag=tag), "mallory")
    assert at_own.returncode != 0 and refusals_in(at_own.stderr) == ["secret-permission"], at_own.stderr

    # alice may read the Secret, but not send it to a server of her choosing either; validate agrees.
    by_alice = kubectl_apply(control_plane, attack, "alice")
    assert by_alice.returncode != 0 and refusals_in(by_alice.stderr) == ["prometheus-credentials-url"]
    offline = validate(tmp_path, attack, own.url)
    assert offline.returncode == 1
    line = next(line.strip() for line in offline.stdout.splitlines() if "REFUSED prometheus-credentials-url" in line)
    assert line in by_alice.stderr

    # To the operator's own Prometheus, alice's experiment runs with her token.
    assert (
        kubectl_apply(
            control_plane, guarded_yaml("alice-own", team, own.url, with_token=True, tag=tag), "alice"
        ).returncode
        == 0
    )
    wait_for_phase(k8s, team, "alice-own", "Completed")
    sent = authorizations(own, tag)
    assert sent and set(sent) == {f"Bearer {token}"}
    assert foreign.requests == []


def test_a_redirect_from_an_allowed_url_is_not_followed_with_the_token(
    operators: CredentialOperators,
    control_plane: ControlPlane,
    k8s: client.ApiClient,
    team: str,
    token: str,
    foreign: RecordingServer,
    isolated_policies: list[str],
) -> None:
    operators.webhooks()
    tag = uuid.uuid4().hex[:8]
    location = {"Location": f"{foreign.url}/api/v1/query?query=up"}
    with RecordingServer(response=(302, "text/plain", b""), headers=location) as allowed:
        name = f"urls-{tag}"
        create_policy(k8s, name, scoped_policy(team, allowedPrometheusURLs=[allowed.url]))
        isolated_policies.append(name)

        # The list governs every URL, with or without a token.
        elsewhere = kubectl_apply(
            control_plane, guarded_yaml("elsewhere", team, foreign.url, with_token=False, tag=tag), "alice"
        )
        assert elsewhere.returncode != 0 and refusals_in(elsewhere.stderr) == ["prometheus-url"], elsewhere.stderr
        assert (
            f"spec.steadyState.prometheus.url {foreign.url} is not among the Prometheus URLs ChaosPolicy/{name} "
            f"allows ({allowed.url})"
        ) in elsewhere.stderr

        assert (
            kubectl_apply(
                control_plane, guarded_yaml("hop", team, allowed.url, with_token=True, tag=tag), "alice"
            ).returncode
            == 0
        )
        status = wait_for_phase(k8s, team, "hop", "Aborted")
        assert "answered HTTP 302 Found" in status["message"] and "redirects are not followed" in status["message"]
        assert set(authorizations(allowed, tag)) == {f"Bearer {token}"}
    assert foreign.requests == []


def test_what_an_internal_url_answers_never_reaches_status_or_events(
    operators: CredentialOperators, control_plane: ControlPlane, k8s: client.ApiClient, team: str
) -> None:
    operators.webhooks()
    body = f'{{"status":"error","errorType":"{LEAK}","error":"db password {LEAK}"}}'.encode()
    with RecordingServer(response=(500, "application/json", body), headers={"X-Secret": LEAK}) as internal:
        text = guarded_yaml("echo", team, internal.url, with_token=False, tag="echo")
        assert kubectl_apply(control_plane, text, "alice").returncode == 0
        status = wait_for_phase(k8s, team, "echo", "Aborted")
        assert internal.queries()
    assert f"{internal.url} answered HTTP 500 Internal Server Error (its body is not shown)" in status["message"]
    said = everything_said(k8s, team, "echo")
    assert "SteadyStateNotHeld" in said and LEAK not in said


def test_without_its_webhooks_the_engine_refuses_the_same_before_a_run(
    operators: CredentialOperators,
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    team: str,
    token: str,
    own: RecordingServer,
    foreign: RecordingServer,
    isolated_policies: list[str],
) -> None:
    operators.plain_opted_out()  # no webhook: nothing stamps the author, nothing refuses at apply time
    tag = uuid.uuid4().hex[:8]

    # The Secret is read only for a known author who may read it.
    control_plane.kubectl("apply", "-f", "-", input=guarded_yaml("unstamped", team, own.url, with_token=True, tag=tag))
    status = wait_for_phase(k8s, team, "unstamped", "Rejected")
    assert status["message"].startswith(
        f"REFUSED secret-author-unknown: spec.steadyState.prometheus.bearerTokenSecret names Secret '{SECRET}'"
    )
    control_plane.kubectl(
        "apply", "-f", "-", input=guarded_yaml("unstamped-out", team, foreign.url, with_token=True, tag=tag)
    )
    status = wait_for_phase(k8s, team, "unstamped-out", "Rejected")
    assert status["message"].startswith("REFUSED prometheus-credentials-url: ")

    # A policy's list holds at run time too.
    name = f"urls-{tag}"
    create_policy(k8s, name, scoped_policy(team, allowedPrometheusURLs=[own.url]))
    isolated_policies.append(name)
    control_plane.kubectl(
        "apply", "-f", "-", input=guarded_yaml("unlisted", team, foreign.url, with_token=False, tag=tag)
    )
    status = wait_for_phase(k8s, team, "unlisted", "Rejected")
    assert status["message"].startswith(f"REFUSED prometheus-url: spec.steadyState.prometheus.url {foreign.url} ")

    assert authorizations(own, tag) == [] and foreign.requests == []
    assert token not in everything_said(k8s, team, "unstamped")
