"""deploy/, the image and users' kind CI, checked here without Docker or kind.

- `kubectl kustomize` builds deploy/base and deploy/overlays/kind, and the real API server accepts
  every object they produce (server-side dry-run, in a namespace that enforces the restricted Pod
  Security Standard, with no warnings).
- The Deployment agrees with deploy/Dockerfile and the Makefile (probes, user, image, names), and runs
  two replicas with leader election, a RollingUpdate that keeps a ready standby, and a PodDisruptionBudget.
- The ClusterRole has no wildcard, and is enough: on a control plane of its own, the overlay is
  applied for real and the operator runs under its ServiceAccount through the README's first
  experiment (the same kubectl flow as tests/e2e), with leader election and the admission webhooks on
  (its certificate made in the shipped Secret, the caBundle of the shipped configurations set by name),
  with no permission error; and it grants nothing that the code does not call (no `create` on webhook
  configurations, nor on Secrets).
- The shipped webhook configurations are what kopf would register for the operator's handlers (names,
  paths, rules), with failurePolicy Fail; the shipped ValidatingAdmissionPolicy refuses a status write
  by anyone but the operator's ServiceAccount, saying why, and lets the operator's through.
- The workflow passes actionlint; the kind cluster config has the shape `make e2e-kind` expects;
  the Dockerfiles copy only what exists and is not .dockerignored; the injector image installs the
  netem holder where chaosguard.decisions.netem says the operator will look for it, names no
  architecture, and the operator's image carries neither tc nor the holder.
- Both installs give the operator the injector image: the kind overlay the one `make image` builds, and
  a user's overlay replaces it with an `images:` entry like the operator's own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from chaosguard.decisions import netem
from chaosguard.decisions.injector_image import INJECTOR_IMAGE_VARIABLE, STRESSOR_IMAGE_VARIABLE
from chaosguard.runtime import leader
from localcluster.controlplane import ControlPlane, ControlPlaneError, default_bin_dir
from localcluster.operator import OperatorProcess, install_webhook_configurations
from localcluster.wait import wait_for
from tests.support.example_flow import EXPERIMENT, Kubectl, PodKillRun, check_pod_kill_percent, run_pod_kill_percent

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BUILDS = {"base": DEPLOY / "base", "overlays/kind": DEPLOY / "overlays" / "kind"}
WORKFLOW = REPO / ".github" / "workflows" / "e2e-kind.yaml"
OPERATOR_NAMESPACE = "chaosguard-system"
NAME = "chaosguard"  # the ServiceAccount, ClusterRole, ClusterRoleBinding and Deployment
SERVICE_ACCOUNT_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{NAME}"
SIGNING_KEY = "chaosguard-signing-key"  # chaosguard.admission.signing.SECRET_NAME
WEBHOOK_TLS = "chaosguard-webhook-tls"  # the Deployment's --webhook-tls-secret
WEBHOOK_CONFIGURATION = "chaosguard.dev"  # chaosguard.runtime.security.WEBHOOK_CONFIGURATION
STATUS_POLICY = "chaosguard-status-writers"
LEADER_ELECTION = "chaosguard-leader-election"  # the Role and RoleBinding
LEASE = leader.LEASE_NAME
EXPECTED_OBJECTS = {
    ("Namespace", None, OPERATOR_NAMESPACE),
    ("CustomResourceDefinition", None, "chaosexperiments.chaosguard.dev"),
    ("CustomResourceDefinition", None, "chaospolicies.chaosguard.dev"),
    ("CustomResourceDefinition", None, "chaosapprovals.chaosguard.dev"),
    ("ServiceAccount", OPERATOR_NAMESPACE, NAME),
    ("ClusterRole", None, NAME),
    ("ClusterRoleBinding", None, NAME),
    ("Deployment", OPERATOR_NAMESPACE, NAME),
    # The signing key of the author/approver stamps, and the one Role that may read and fill it in.
    ("Secret", OPERATOR_NAMESPACE, SIGNING_KEY),
    ("Role", OPERATOR_NAMESPACE, SIGNING_KEY),
    ("RoleBinding", OPERATOR_NAMESPACE, SIGNING_KEY),
    # Leader election: the Lease chaosguard-leader, and two replicas that a drain takes down one at a time.
    ("Role", OPERATOR_NAMESPACE, LEADER_ELECTION),
    ("RoleBinding", OPERATOR_NAMESPACE, LEADER_ELECTION),
    ("PodDisruptionBudget", OPERATOR_NAMESPACE, NAME),
    # The admission webhooks, served by every replica: their Service, their certificate's Secret (filled in
    # by the first replica) and the one Role that may read and fill it in, and the two configurations.
    ("Service", OPERATOR_NAMESPACE, "chaosguard-webhook"),
    ("Secret", OPERATOR_NAMESPACE, WEBHOOK_TLS),
    ("Role", OPERATOR_NAMESPACE, WEBHOOK_TLS),
    ("RoleBinding", OPERATOR_NAMESPACE, WEBHOOK_TLS),
    # ... and the one ClusterRole that may set the caBundle of the two configurations, by name.
    ("ClusterRole", None, "chaosguard-webhook-ca-bundle"),
    ("ClusterRoleBinding", None, "chaosguard-webhook-ca-bundle"),
    ("MutatingWebhookConfiguration", None, WEBHOOK_CONFIGURATION),
    ("ValidatingWebhookConfiguration", None, WEBHOOK_CONFIGURATION),
    # Only the operator writes an experiment's status (issue 20).
    ("ValidatingAdmissionPolicy", None, STATUS_POLICY),
    ("ValidatingAdmissionPolicyBinding", None, STATUS_POLICY),
    # The ChaosPolicy that is safe out of the box (namespace opt-in, 25 % at most, no approvals).
    ("ChaosPolicy", None, "default"),
}


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    try:
        return default_bin_dir()
    except ControlPlaneError as error:
        pytest.fail(f"cannot get the pinned kubectl and actionlint: {error}", pytrace=False)


def builds_of(bin_dir: Path, directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(bin_dir / "kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"`kubectl kustomize {directory}` failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def builds(bin_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every object of `kubectl kustomize` of deploy/base and deploy/overlays/kind."""
    return {name: builds_of(bin_dir, directory) for name, directory in BUILDS.items()}


def find(objects: list[dict[str, Any]], kind: str, name: str = NAME) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def to_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


def dockerfile_entrypoint() -> list[str]:
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    entrypoints = [line.removeprefix("ENTRYPOINT").strip() for line in lines if line.startswith("ENTRYPOINT")]
    assert len(entrypoints) == 1, "deploy/Dockerfile needs exactly one ENTRYPOINT, in exec (JSON) form"
    argv: list[str] = json.loads(entrypoints[0])
    return argv


def dockerfile_user() -> str:
    users = [line.split()[1] for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith("USER ")]
    assert users, "deploy/Dockerfile sets no USER: the image would run as root"
    return users[-1]


def makefile_variable(name: str) -> str:
    found = re.search(rf"^{name}\s*\?=\s*(\S+)", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert found, f"the Makefile defines no {name}"
    return found.group(1)


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity.removesuffix(suffix)) * factor)
    return int(quantity)


def peak_rss_bytes(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else None


# --------------------------------------------------------------------------- the builds


@pytest.mark.parametrize("build", BUILDS)
def test_kustomize_builds_exactly_the_operator_objects(builds: dict[str, list[dict[str, Any]]], build: str) -> None:
    found = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in builds[build]}
    assert found == EXPECTED_OBJECTS


@pytest.mark.parametrize("build", BUILDS)
def test_the_crds_deployed_are_the_generated_ones(builds: dict[str, list[dict[str, Any]]], build: str) -> None:
    generated = {}
    for path in sorted((REPO / "crds").glob("chaosguard.dev_*.yaml")):
        crd = yaml.safe_load(path.read_text())
        generated[crd["metadata"]["name"]] = crd
    deployed = {o["metadata"]["name"]: o for o in builds[build] if o["kind"] == "CustomResourceDefinition"}
    assert deployed.keys() == generated.keys()
    for name, crd in deployed.items():
        # kustomize adds only the common labels; everything else must be what `make crds` generated.
        crd = {**crd, "metadata": {k: v for k, v in crd["metadata"].items() if k != "labels"}}
        assert crd == generated[name], f"{name} in {build} differs from crds/: is crds/kustomization.yaml stale?"


def test_the_kind_overlay_runs_the_image_make_builds(builds: dict[str, list[dict[str, Any]]]) -> None:
    container = find(builds["overlays/kind"], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == makefile_variable("IMAGE")  # what `make image` tags and kind loads
    assert container["imagePullPolicy"] == "IfNotPresent"  # `kind load` images cannot be pulled


def injector_env(objects: list[dict[str, Any]], variable: str = INJECTOR_IMAGE_VARIABLE) -> str:
    container = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    values = [e.get("value") for e in container["env"] if e["name"] == variable]
    assert len(values) == 1, f"the operator's container sets {variable} {len(values)} times"
    return str(values[0])


def test_the_operator_is_told_the_injector_image_make_builds(builds: dict[str, list[dict[str, Any]]]) -> None:
    assert injector_env(builds["base"]) == "chaosguard-injector"  # the name an overlay's `images:` matches
    assert injector_env(builds["overlays/kind"]) == makefile_variable("INJECTOR_IMAGE")
    assert injector_env(builds["base"], STRESSOR_IMAGE_VARIABLE) == "chaosguard-stressor"
    assert injector_env(builds["overlays/kind"], STRESSOR_IMAGE_VARIABLE) == makefile_variable("STRESSOR_IMAGE")


def test_a_users_overlay_sets_the_injector_image_as_it_sets_the_operators(bin_dir: Path, tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(DEPLOY / "base", tmp_path)],  # kustomize takes no absolute path
        "images": [
            {"name": "chaosguard", "newName": "registry.example.com/chaosguard", "newTag": "0.1.0"},
            {"name": "chaosguard-injector", "newName": "registry.example.com/chaosguard-injector", "digest": digest},
        ],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    result = subprocess.run(
        [str(bin_dir / "kubectl"), "kustomize", "--load-restrictor=LoadRestrictionsNone", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert injector_env(objects) == f"registry.example.com/chaosguard-injector@{digest}"
    container = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/chaosguard:0.1.0"
    # The transformer changes only values that name the image: every other variable is as the base has it.
    others = {e["name"]: e for e in container["env"] if e["name"] != INJECTOR_IMAGE_VARIABLE}
    base = find(builds_of(bin_dir, DEPLOY / "base"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert others == {e["name"]: e for e in base["env"] if e["name"] != INJECTOR_IMAGE_VARIABLE}


@pytest.mark.parametrize("build", BUILDS)
def test_the_deployment_fits_the_image_and_the_operator(builds: dict[str, list[dict[str, Any]]], build: str) -> None:
    objects = builds[build]
    deployment = find(objects, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]

    # Two replicas, one leader (the Lease): a rolling update that keeps a ready standby is then safe.
    args = container["args"]
    assert spec["replicas"] == 2 and "--leader-elect" in args
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pdb = find(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == spec["selector"] == {"matchLabels": spec["template"]["metadata"]["labels"]}
    assert pod["terminationGracePeriodSeconds"] >= 15, "kopf's daemons get 10 s to stop before the lease goes"
    # Readiness: the endpoint `--readiness` serves (leader and standby alike), on all interfaces.
    readiness = urllib.parse.urlsplit(args[args.index("--readiness") + 1])
    assert readiness.hostname == "0.0.0.0"
    ready_probe = container["readinessProbe"]["httpGet"]
    assert ready_probe["path"] == readiness.path
    assert {p["name"]: p["containerPort"] for p in container["ports"]}[ready_probe["port"]] == readiness.port
    assert args[args.index("--log-format") + 1] == "json"

    # The probe asks the endpoint the image's ENTRYPOINT serves, on all interfaces.
    entrypoint = dockerfile_entrypoint()
    assert entrypoint[:2] == ["chaosguard", "run"], entrypoint
    liveness = urllib.parse.urlsplit(entrypoint[entrypoint.index("--liveness") + 1])
    assert liveness.hostname == "0.0.0.0", "the kubelet probes the pod IP, not loopback"
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["path"] == liveness.path
    assert ports.get(probe["port"], probe["port"]) == liveness.port

    # The operator's own namespace is excluded from every experiment: it must know it.
    env = {e["name"]: e for e in container["env"]}
    assert env["CHAOSGUARD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"

    # Non-root by construction: the image's numeric USER is the pod's runAsUser.
    user = dockerfile_user().split(":")[0]
    assert user.isdigit() and int(user) != 0, f"the image's USER {user} must be a numeric non-root UID"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(user)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys(), kind

    # One ServiceAccount, bound to the ClusterRole; the names the Makefile waits for.
    assert pod["serviceAccountName"] == find(objects, "ServiceAccount")["metadata"]["name"]
    binding = find(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": OPERATOR_NAMESPACE}]
    makefile = (REPO / "Makefile").read_text()
    assert f"kubectl -n {OPERATOR_NAMESPACE} rollout status deployment/{deployment['metadata']['name']}" in makefile


@pytest.mark.parametrize("build", BUILDS)
def test_rbac_has_no_wildcards_and_no_escalation(builds: dict[str, list[dict[str, Any]]], build: str) -> None:
    roles = [o for o in builds[build] if o["kind"] in ("ClusterRole", "Role")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
                assert not any("*" in item for item in rule.get(field, [])), f"a wildcard in {field}: {rule}"
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
            assert not {"configmaps", "serviceaccounts/token", "pods/exec"} & set(rule["resources"]), rule
            assert "nonResourceURLs" not in rule, rule
            if "update" in rule["verbs"]:
                # Only renewing the leader Lease, by name, in the operator's namespace.
                assert role["kind"] == "Role" and role["metadata"]["namespace"] == OPERATOR_NAMESPACE, role
                assert rule["resources"] == ["leases"] and rule.get("resourceNames") == [LEASE], rule
                assert set(rule["verbs"]) <= {"get", "update"}, rule
            if "secrets" in rule["resources"]:
                # Only the signing key or the webhooks' certificate, by name, in the operator's namespace,
                # read and filled in: never created (create cannot be limited to a name).
                assert role["kind"] == "Role" and role["metadata"]["namespace"] == OPERATOR_NAMESPACE, role
                assert rule["resources"] == ["secrets"], rule
                assert rule.get("resourceNames") in ([SIGNING_KEY], [WEBHOOK_TLS]), rule
                assert set(rule["verbs"]) <= {"get", "patch"}, rule
            if {"validatingwebhookconfigurations", "mutatingwebhookconfigurations"} & set(rule["resources"]):
                # Its own configurations, by name, read and their caBundle set: never created (checkov's
                # CKV_K8S_155: create would let it register a mutating webhook on every pod) or deleted.
                assert rule.get("resourceNames") == [WEBHOOK_CONFIGURATION], rule
                assert set(rule["verbs"]) <= {"get", "patch"}, rule


def kopf_webhooks(service: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """What kopf's build_webhooks registers for the operator's handlers (runtime/webhooks.py), reached
    through `service`: {configuration kind: {webhook name: webhook}}."""
    import kopf
    from kopf._cogs.structs import references
    from kopf._core.engines.admission import build_webhooks

    import chaosguard.runtime.webhooks  # noqa: F401  (registers the handlers)
    from chaosguard.api.models import GROUP, VERSION

    resources = []
    for path in sorted((REPO / "crds").glob("chaosguard.dev_*.yaml")):
        names = yaml.safe_load(path.read_text())["spec"]["names"]
        resources.append(references.Resource(GROUP, VERSION, names["plural"], kind=names["kind"], namespaced=True))
    handlers = kopf.get_default_registry()._webhooks.get_all_handlers()
    kinds = {"MutatingWebhookConfiguration": "mutating", "ValidatingWebhookConfiguration": "validating"}
    return {
        kind: {
            webhook["name"]: webhook
            for webhook in build_webhooks(
                [handler for handler in handlers if str(handler.reason) == reason],
                resources=resources,
                name_suffix=WEBHOOK_CONFIGURATION,
                client_config={"service": dict(service)},  # type: ignore[typeddict-item]
            )
        }
        for kind, reason in kinds.items()
    }


@pytest.mark.parametrize("build", BUILDS)
def test_the_shipped_webhooks_are_what_kopf_serves(builds: dict[str, list[dict[str, Any]]], build: str) -> None:
    objects = builds[build]
    service = find(objects, "Service", "chaosguard-webhook")
    (port,) = service["spec"]["ports"]
    container = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    # The Service reaches the port the operator serves on, under the name its certificate is made for.
    assert args[args.index("--webhook-service") + 1] == f"{OPERATOR_NAMESPACE}/chaosguard-webhook:{port['port']}"
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["webhook"] == int(
        args[args.index("--webhook-port") + 1]
    )
    assert port["targetPort"] == "webhook"
    assert args[args.index("--webhook-tls-secret") + 1] == WEBHOOK_TLS
    # Behind the Service only once the webhook server listens (readiness waits for the startup probe).
    assert container["startupProbe"]["tcpSocket"] == {"port": "webhook"}
    assert service["spec"]["selector"].items() <= container_labels(objects).items()

    at = {"namespace": OPERATOR_NAMESPACE, "name": "chaosguard-webhook", "port": port["port"]}
    for kind, expected in kopf_webhooks(at).items():
        shipped = {webhook["name"]: webhook for webhook in find(objects, kind, WEBHOOK_CONFIGURATION)["webhooks"]}
        assert shipped.keys() == expected.keys(), f"{kind}: the handlers are {sorted(expected)}"
        for name, webhook in shipped.items():
            # Safety: nothing is admitted without its stamp, not even while no replica answers.
            assert webhook["failurePolicy"] == "Fail", name
            assert webhook["timeoutSeconds"] <= 10, name
            assert "caBundle" not in webhook["clientConfig"], "the operator sets it (--webhook-tls-secret)"
            kopf_one = {k: v for k, v in expected[name].items() if v is not None and k != "timeoutSeconds"}
            ours = {k: v for k, v in webhook.items() if k != "timeoutSeconds"}
            assert ours == kopf_one, f"{kind} {name} differs from what kopf would register"


def container_labels(objects: list[dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = find(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


# --------------------------------------------------------------------------- the real API server


@pytest.mark.parametrize("build", BUILDS)
def test_the_api_server_accepts_every_object(
    chaosguard_crds: ControlPlane, builds: dict[str, list[dict[str, Any]]], build: str
) -> None:
    control_plane = chaosguard_crds  # the CRDs for real (they equal crds/): the ChaosPolicy needs its kind
    objects = builds[build]
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    rest = [o for o in objects if o not in namespaces and o not in crds]
    # The namespace for real (namespaced dry-runs need it, and its Pod Security labels judge the
    # Deployment's pod template); then CRDs before anything that might use them.
    control_plane.kubectl("apply", "-f", "-", input=to_yaml(namespaces))
    for group in (crds, rest):
        result = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=to_yaml(group))
        assert result.stdout.count("(server dry run)") == len(group), result.stdout
        # e.g. `Warning: would violate PodSecurity "restricted:latest": ...`
        assert "Warning" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def installed(bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of its own, with deploy/overlays/kind applied for real, as `make e2e-kind` does.

    Its own, because the session's control plane may have the session's operator running, which
    (kopf standalone, cluster-wide) would drive the same experiments as the one under test here.
    kwok plays the kubelet: the operator's pod becomes Ready without running; the operator itself
    runs as a process with the ServiceAccount's token, in place of the container.
    """
    with ControlPlane(tmp_path_factory.mktemp("deploy-plane"), bin_dir) as plane:
        # CRDs first, as `make e2e-kind` does: deploy/base has a ChaosPolicy, which needs its kind.
        plane.kubectl("apply", "-k", str(REPO / "crds"))
        crds = [f"crd/{plural}.chaosguard.dev" for plural in ("chaosexperiments", "chaospolicies", "chaosapprovals")]
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *crds)
        plane.kubectl("apply", "-k", str(BUILDS["overlays/kind"]))
        plane.kubectl("-n", OPERATOR_NAMESPACE, "rollout", "status", f"deployment/{NAME}", "--timeout=120s")
        yield plane


@dataclass
class OperatorRun:
    operator: OperatorProcess
    run: PodKillRun
    peak_rss: int | None
    namespace: str


@pytest.fixture(scope="module")
def operator_under_the_role(installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorRun]:
    """The operator as a process with the ServiceAccount's token, through README's first experiment; it
    keeps running until the module's end."""
    workdir = tmp_path_factory.mktemp("operator-under-the-role")

    def kubectl(*args: str, input: str | None = None) -> str:
        return installed.kubectl(*args, input=input).stdout

    flow: Kubectl = kubectl
    kubeconfig = installed.kubeconfig_for_service_account(OPERATOR_NAMESPACE, NAME)
    # With the admission webhooks on, as deployed (the certificate made in the shipped Secret, the caBundle
    # of the shipped configurations set by name), so that the role is shown to be enough for them too. Served
    # on loopback: the configurations are pointed there, as an admin, instead of at the Service.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    install_webhook_configurations(installed, f"https://127.0.0.1:{port}")
    webhook = ["--webhook-port", str(port), "--webhook-host", "127.0.0.1", "--webhook-tls-secret", WEBHOOK_TLS]
    # With leader election as deployed, so that the Role is shown to be enough for the Lease too.
    election = ["--leader-elect", "--leader-election-identity", "rbac-test"]
    env = {"CHAOSGUARD_NAMESPACE": OPERATOR_NAMESPACE}
    operator = OperatorProcess(kubeconfig, workdir / "operator.log", env, args=[*webhook, *election])
    operator.start()
    try:
        namespace = "shop-rbac"
        run = run_pod_kill_percent(flow, namespace, timeout=120)
        assert operator.process is not None
        yield OperatorRun(operator, run, peak_rss_bytes(operator.process.pid), namespace)
    finally:
        operator.stop()


def test_the_operator_needs_no_more_than_the_deploy_rbac(
    installed: ControlPlane, builds: dict[str, list[dict[str, Any]]], operator_under_the_role: OperatorRun
) -> None:
    operator, run, peak = (
        operator_under_the_role.operator,
        operator_under_the_role.run,
        operator_under_the_role.peak_rss,
    )
    # kopf logs a 403 and carries on (e.g. "Failed to post an event ... forbidden", "Not enough
    # permissions to watch"): the log tells what the role lacks better than the outcome does.
    log = operator.log_path.read_text(errors="replace")
    denied = [line for line in log.splitlines() if re.search(r"forbidden|permission", line, re.IGNORECASE)]
    lines = "\n".join(line[:400] for line in denied[:8])
    assert not denied, f"the operator was denied something under the deploy/ RBAC ({len(denied)} log lines):\n{lines}"
    check_pod_kill_percent(run)
    assert "acquired the lease" in log
    holder = installed.kubectl("get", "lease", LEASE, "-n", OPERATOR_NAMESPACE, "-o", "jsonpath={.spec.holderIdentity}")
    assert holder.stdout in ("rbac-test", ""), holder.stdout  # held, or released on the operator's exit
    assert "Webhook 'experiment-author' succeeded" in log  # the flow's experiment went through the webhooks
    assert installed.kubectl("get", "secret", SIGNING_KEY, "-n", OPERATOR_NAMESPACE, "-o", "jsonpath={.data}").stdout

    # The certificate was made in the shipped Secret, and the shipped configurations trust its CA.
    secret = json.loads(installed.kubectl("get", "secret", WEBHOOK_TLS, "-n", OPERATOR_NAMESPACE, "-o", "json").stdout)
    assert {"tls.crt", "tls.key", "ca.crt"} <= secret["data"].keys()
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        found = json.loads(installed.kubectl("get", kind, WEBHOOK_CONFIGURATION, "-o", "json").stdout)
        assert {w["clientConfig"].get("caBundle") for w in found["webhooks"]} == {secret["data"]["ca.crt"]}, kind

    container = find(builds["overlays/kind"], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    limit = memory_bytes(container["resources"]["limits"]["memory"])
    if peak is not None:
        assert peak < 0.75 * limit, f"peak RSS {peak / 2**20:.0f} MiB is close to the {limit / 2**20:.0f} MiB limit"


def test_node_drain_runs_under_the_deploy_rbac(installed: ControlPlane, operator_under_the_role: OperatorRun) -> None:
    """examples/node-drain.yaml, applied through the webhooks, run by the operator under the shipped role:
    nodes listed and patched (cordon, uncordon), the node's pods listed and evicted, within the 40 % cap."""
    from localcluster.kwoknodes import Nodes, deploy_pinned
    from tests.integration.test_operator_nodedrain import DRAINABLE, EXAMPLE, NAME, run_of, with_duration

    api = installed.api_client()
    nodes = Nodes(api)
    namespace = "shop-drain-rbac"
    installed.kubectl("create", "namespace", namespace)
    allowed = json.loads(installed.kubectl("get", "chaospolicy", "default", "-o", "json").stdout)["spec"][
        "allowedActions"
    ]
    widened = {"spec": {"allowedActions": [*allowed, "node-drain"]}}
    installed.kubectl("patch", "chaospolicy", "default", "--type=merge", "-p", json.dumps(widened))
    try:
        drained = nodes.add("a", {DRAINABLE: "true"})
        deploy_pinned(api, namespace, nodes, 4)
        nodes.add("b")
        installed.kubectl("apply", "-n", namespace, "-f", "-", input=with_duration(EXAMPLE, "20s"))

        def finished() -> dict[str, Any]:
            found = json.loads(installed.kubectl("get", "chaosexperiment", NAME, "-n", namespace, "-o", "json").stdout)
            status: dict[str, Any] = found.get("status") or {}
            return status if status.get("phase") in ("Completed", "Failed", "Aborted", "Rejected") else {}

        status = wait_for(finished, timeout=120, what="the node drain to finish")
        dump = yaml.safe_dump(status)[:4000]
        assert status["phase"] == "Completed", dump
        run = run_of(status)
        assert len([k for k in run["kills"] if k["result"] == "Killed"]) == 4, dump
        assert run["faults"][0]["state"] == "Removed" and not nodes.cordoned(drained), dump
        log = operator_under_the_role.operator.log_path.read_text(errors="replace")
        assert not re.search(r"forbidden", log, re.IGNORECASE), log[-4000:]
    finally:
        installed.kubectl(
            "patch", "chaospolicy", "default", "--type=merge", "-p", json.dumps({"spec": {"allowedActions": allowed}})
        )
        nodes.delete_all()


FORGED_STATUS = {"status": {"phase": "Running", "message": "forged"}}


def test_only_the_operator_may_write_an_experiments_status(
    installed: ControlPlane, operator_under_the_role: OperatorRun
) -> None:
    namespace = operator_under_the_role.namespace
    # mallory may patch chaosexperiments/status there (as namespace-admin roles with chaosexperiments/*
    # grant), and may not delete pods.
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "status-writer", "namespace": namespace},
        "rules": [
            {
                "apiGroups": ["chaosguard.dev"],
                "resources": ["chaosexperiments", "chaosexperiments/status"],
                "verbs": ["get", "list", "patch", "update"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "status-writer", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "status-writer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}],
    }
    installed.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))
    can = installed.kubectl(
        "auth",
        "can-i",
        "patch",
        "chaosexperiments",
        "--subresource=status",
        "-n",
        namespace,
        user="mallory",
        check=False,
    )
    assert can.stdout.strip() == "yes", can.stdout + can.stderr
    before = installed.kubectl("get", "chaosexperiment", EXPERIMENT, "-n", namespace, "-o", "json").stdout
    patch = ["patch", "chaosexperiment", EXPERIMENT, "-n", namespace, "--subresource=status", "--type=merge"]

    for user in ("mallory", "admin"):  # RBAC lets both; the policy lets neither (admin: system:masters)
        refused = installed.kubectl(*patch, "-p", json.dumps(FORGED_STATUS), user=user, check=False)
        assert refused.returncode != 0, f"{user} wrote the status: {refused.stdout}"
        message = refused.stderr
        assert f"ValidatingAdmissionPolicy '{STATUS_POLICY}'" in message, message
        assert f"only the chaosguard operator ({SERVICE_ACCOUNT_USER})" in message, message
        assert f"not {user}" in message and f"chaosguard abort {EXPERIMENT} -n {namespace}" in message, message
    after = installed.kubectl("get", "chaosexperiment", EXPERIMENT, "-n", namespace, "-o", "json").stdout
    assert json.loads(after)["status"] == json.loads(before)["status"]

    # The operator's ServiceAccount passes (its real writes did, through the whole flow; here a dry run,
    # as the operator writes: a PATCH of the status, with no GET, which its role does not grant).
    kubeconfig = installed.kubeconfig_for_service_account(OPERATOR_NAMESPACE, NAME)
    with config.new_client_from_config(str(kubeconfig)) as api:
        written = client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            "chaosguard.dev",
            "v1alpha1",
            namespace,
            "chaosexperiments",
            EXPERIMENT,
            {"status": {"message": "the operator"}},
            dry_run="All",
        )
    assert written["status"]["message"] == "the operator"


# What the code calls (kube.py, engine.py, handlers.py) and what kopf calls for it: each must be
# allowed. Namespaced checks run in "default"; "-A" means in every namespace.
NEEDED = [
    ("list", "chaosexperiments.chaosguard.dev", "-A"),  # kopf's watch; Cluster.experiments
    ("watch", "chaosexperiments.chaosguard.dev", "-A"),
    ("patch", "chaosexperiments.chaosguard.dev"),  # kopf: finalizer, progress annotations
    ("patch", "chaosexperiments.chaosguard.dev", "--subresource=status"),  # Cluster.patch_experiment_status
    ("list", "chaospolicies.chaosguard.dev"),  # the watch cache (informers.py); Cluster.policies
    ("watch", "chaospolicies.chaosguard.dev"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),  # kopf notices CRDs established late
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "namespaces"),  # the watch cache; Cluster.namespace_labels
    ("watch", "namespaces"),
    ("get", "namespaces"),  # Cluster.namespace_labels_of: fresh labels right before a fault
    ("list", "pods", "-A"),  # the watch cache; Cluster.pods
    ("watch", "pods", "-A"),
    ("get", "pods"),  # faults.py: ephemeral containers, the kubelet's report on the injector
    ("patch", "pods", "--subresource=ephemeralcontainers"),  # faults.py: injector and clean-up container
    ("create", "pods", "--subresource=eviction"),  # Cluster.kill (default)
    ("delete", "pods"),  # Cluster.kill with respectDisruptionBudgets: false
    ("get", "deployments.apps"),  # Cluster.workload_object
    ("get", "statefulsets.apps"),
    ("get", "replicasets.apps"),
    ("list", "deployments.apps", "-A"),  # the watch cache: desired replicas, owners
    ("watch", "deployments.apps", "-A"),
    ("list", "replicasets.apps", "-A"),
    ("watch", "replicasets.apps", "-A"),
    ("list", "statefulsets.apps", "-A"),
    ("watch", "statefulsets.apps", "-A"),
    ("create", "events"),  # kopf.event
    ("list", "nodes"),  # Cluster.guarded_addresses: what a partition may not cut a pod off from
    # node-drain (clients/nodes.py): nodes read with list (above), cordoned and uncordoned with patch
    ("patch", "nodes"),
    ("list", "services", "-A"),  # ... the operator's own Services (network faults may not target them)
    ("get", "services/kubernetes"),  # ... the API server's Service and Endpoints, in "default"
    ("get", "endpoints/kubernetes"),
    ("get", "chaosexperiments.chaosguard.dev"),  # Cluster.experiment (the approval webhook)
    ("list", "chaosapprovals.chaosguard.dev"),  # the watch cache; Cluster.approvals
    ("watch", "chaosapprovals.chaosguard.dev"),
    ("create", "subjectaccessreviews.authorization.k8s.io"),  # Cluster.may
    # security.prepare: the caBundle of its own webhook configurations, by name (webhook_tls.patch_ca_bundles)
    ("get", "validatingwebhookconfigurations.admissionregistration.k8s.io/chaosguard.dev"),
    ("get", "mutatingwebhookconfigurations.admissionregistration.k8s.io/chaosguard.dev"),
    ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/chaosguard.dev"),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/chaosguard.dev"),
    # webhook_tls.tls_from_secret: the webhooks' certificate, by name
    ("get", f"secrets/{WEBHOOK_TLS}", f"--namespace={OPERATOR_NAMESPACE}"),
    ("patch", f"secrets/{WEBHOOK_TLS}", f"--namespace={OPERATOR_NAMESPACE}"),
    ("get", f"secrets/{SIGNING_KEY}", f"--namespace={OPERATOR_NAMESPACE}"),  # chaosguard.admission.signing
    ("patch", f"secrets/{SIGNING_KEY}", f"--namespace={OPERATOR_NAMESPACE}"),
    ("create", "leases.coordination.k8s.io", f"--namespace={OPERATOR_NAMESPACE}"),  # chaosguard.runtime.leader
    ("get", f"leases.coordination.k8s.io/{LEASE}", f"--namespace={OPERATOR_NAMESPACE}"),
    ("update", f"leases.coordination.k8s.io/{LEASE}", f"--namespace={OPERATOR_NAMESPACE}"),
]
# Never granted: what a chaos operator must not be able to do with its own rights.
DENIED = [
    ("*", "*"),
    ("get", "secrets", "-A"),
    ("list", "secrets", "-A"),
    ("create", "pods"),
    ("patch", "pods"),
    ("create", "pods", "--subresource=exec"),  # README, "Security": a clean-up container instead
    ("get", "pods", "--subresource=exec"),
    ("create", "pods", "--subresource=attach"),
    ("create", "pods", "--subresource=portforward"),
    ("get", "pods", "--subresource=log"),
    ("patch", "pods", "--subresource=status"),
    ("update", "pods", "--subresource=ephemeralcontainers"),  # patch adds; update could rewrite the list
    ("delete", "pods", "--subresource=eviction"),
    ("delete", "namespaces"),
    ("patch", "namespaces"),
    ("patch", "deployments.apps"),
    ("delete", "deployments.apps"),
    ("update", "deployments.apps", "--subresource=scale"),
    ("create", "chaosexperiments.chaosguard.dev"),
    ("delete", "chaosexperiments.chaosguard.dev"),
    ("create", "chaospolicies.chaosguard.dev"),
    ("patch", "chaospolicies.chaosguard.dev"),
    ("delete", "chaospolicies.chaosguard.dev"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("impersonate", "users"),
    ("impersonate", "serviceaccounts"),
    ("create", "serviceaccounts", "--subresource=token"),
    ("delete", "events"),
    # node-drain patches nodes (spec.unschedulable and its mark); nothing more of a node, never its status
    ("get", "nodes"),  # read with list
    ("update", "nodes"),
    ("delete", "nodes"),
    ("create", "nodes"),
    ("patch", "nodes", "--subresource=status"),
    ("patch", "services"),
    ("create", "services"),
    ("update", "endpoints"),
    ("create", "chaosapprovals.chaosguard.dev"),  # the operator never approves anything itself
    ("get", "secrets", f"--namespace={OPERATOR_NAMESPACE}"),  # only the signing key, by name
    ("get", "secrets/other", f"--namespace={OPERATOR_NAMESPACE}"),
    ("delete", f"secrets/{SIGNING_KEY}", f"--namespace={OPERATOR_NAMESPACE}"),
    ("get", f"secrets/{SIGNING_KEY}"),  # in "default": no
    ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/other"),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/other"),
    ("delete", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
    ("delete", "validatingwebhookconfigurations.admissionregistration.k8s.io/chaosguard.dev"),
    ("delete", "mutatingwebhookconfigurations.admissionregistration.k8s.io/chaosguard.dev"),
    # CKV_K8S_155: whoever may create webhook configurations may intercept every object of the cluster.
    ("create", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
    ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io"),
    ("create", "secrets", f"--namespace={OPERATOR_NAMESPACE}"),  # the Secrets it keeps are shipped empty
    ("delete", f"secrets/{WEBHOOK_TLS}", f"--namespace={OPERATOR_NAMESPACE}"),
    ("patch", "validatingadmissionpolicies.admissionregistration.k8s.io"),
    ("delete", "validatingadmissionpolicybindings.admissionregistration.k8s.io"),
    ("create", "localsubjectaccessreviews.authorization.k8s.io"),
    ("update", f"leases.coordination.k8s.io/{LEASE}"),  # in "default": no
    ("update", "leases.coordination.k8s.io/other", f"--namespace={OPERATOR_NAMESPACE}"),
    ("delete", f"leases.coordination.k8s.io/{LEASE}", f"--namespace={OPERATOR_NAMESPACE}"),
    ("update", "leases.coordination.k8s.io", "--namespace=kube-system"),  # other components' leader leases
    ("update", "leases.coordination.k8s.io", "--namespace=kube-node-lease"),  # node heartbeats
]


def test_the_deploy_rbac_allows_what_the_code_calls_and_nothing_dangerous(installed: ControlPlane) -> None:
    def can(verb: str, resource: str, *flags: str) -> bool:
        where = [] if "-A" in flags or any(flag.startswith("--namespace=") for flag in flags) else ["-n", "default"]
        args = ["auth", "can-i", verb, resource, *where, *flags, f"--as={SERVICE_ACCOUNT_USER}"]
        result = installed.kubectl(*args, check=False)
        assert result.stdout.strip() in ("yes", "no"), result.stderr
        return result.stdout.strip() == "yes"

    with ThreadPoolExecutor(max_workers=4) as pool:
        needed = dict(zip(NEEDED, pool.map(lambda check: can(*check), NEEDED), strict=True))
        denied = dict(zip(DENIED, pool.map(lambda check: can(*check), DENIED), strict=True))
    missing = [" ".join(check) for check, allowed in needed.items() if not allowed]
    excess = [" ".join(check) for check, allowed in denied.items() if allowed]
    assert not missing, f"{SERVICE_ACCOUNT_USER} may not: {missing}"
    assert not excess, f"{SERVICE_ACCOUNT_USER} may: {excess}"


# --------------------------------------------------------------------------- users' CI


def test_the_workflow_passes_actionlint(bin_dir: Path) -> None:
    actionlint = bin_dir / "actionlint"
    assert actionlint.exists(), f"{actionlint} is missing: run hack/build-control-plane.sh"
    # actionlint also runs shellcheck on every `run:` script when shellcheck is on PATH.
    result = subprocess.run(
        [str(actionlint), "-no-color", str(WORKFLOW.relative_to(REPO))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    shellcheck = "with" if shutil.which("shellcheck") else "without"
    assert result.returncode == 0, f"actionlint ({shellcheck} shellcheck):\n{result.stdout}{result.stderr}"


def test_the_workflow_runs_make_e2e_kind_with_pinned_tools(bin_dir: Path) -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    assert any(re.match(r"make e2e-kind\b", step.get("run", "")) for step in steps)
    assert all(re.search(r"@v\d+$", step["uses"]) for step in steps if "uses" in step), "pin actions by version"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", workflow["env"]["KIND_VERSION"])
    # The same kubectl as the integration tests' control plane, so both test the same client.
    version = subprocess.run(
        [str(bin_dir / "kubectl"), "version", "--client", "-o", "json"], capture_output=True, text=True, check=True
    )
    assert workflow["env"]["KUBECTL_VERSION"] == json.loads(version.stdout)["clientVersion"]["gitVersion"]


def test_the_kind_cluster_has_one_control_plane_and_two_workers() -> None:
    config = yaml.safe_load((DEPLOY / "kind" / "cluster.yaml").read_text())
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    assert [node["role"] for node in config["nodes"]] == ["control-plane", "worker", "worker"]
    assert "--config deploy/kind/cluster.yaml" in (REPO / "Makefile").read_text()


DOCKERFILES = ("Dockerfile", "Dockerfile.injector")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_image_build_context_has_what_the_dockerfile_copies(dockerfile: str) -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv"} <= ignored
    for line in (DEPLOY / dockerfile).read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in [word for word in line.split()[1:-1] if not word.startswith("--")]:
                assert (REPO / source).exists(), f"{dockerfile} copies {source}, which is not in the repository"
                assert source.rstrip("/") not in ignored, f"{dockerfile} copies {source}, which .dockerignore drops"


def test_the_injector_image_installs_the_netem_holder_where_the_operator_expects_it() -> None:
    copies = [
        line.split() for line in (DEPLOY / "Dockerfile.injector").read_text().splitlines() if line.startswith("COPY ")
    ]
    injector = [words for words in copies if words[-1] == netem.INJECTOR_SCRIPT]
    assert injector, f"deploy/Dockerfile.injector does not install the holder at {netem.INJECTOR_SCRIPT}"
    (words,) = injector
    source = netem.script_path().resolve().relative_to(Path(netem.__file__).resolve().parents[3])
    assert str(source) in words, f"expected {source} to be copied: {words}"
    assert "--chmod=0755" in words, "the holder must be executable"


def test_the_operator_image_carries_no_injector() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert netem.INJECTOR_SCRIPT not in text and "iproute2" not in text, "tc belongs in deploy/Dockerfile.injector"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_dockerfiles_name_no_architecture(dockerfile: str) -> None:
    # One Dockerfile builds every platform (docker buildx --platform linux/amd64,linux/arm64): a path or
    # package that names an architecture would build for one and break the other.
    instructions = [
        line for line in (DEPLOY / dockerfile).read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    for word in ("x86_64", "amd64", "aarch64", "arm64", "linux-gnu", "ld-linux", "--platform"):
        assert not [line for line in instructions if word in line], f"{dockerfile} names {word}"
