"""deploy/helm/chaosguard, checked with the pinned helm (hack/build-control-plane.sh) and the real API server.

- `helm lint --strict` passes; `helm template` renders with the defaults (two replicas, leader election,
  the admission webhooks on with a certificate helm made), with the ServiceMonitor on, with the webhooks'
  certificate from cert-manager or from a Secret of the user's, with the webhooks off, and with the
  optional NetworkPolicy.
- Every object rendered is accepted by `kubectl apply --dry-run=server` in a namespace that enforces
  the restricted Pod Security Standard, without warnings (except the kinds of CRDs that the local
  control plane does not have: ServiceMonitor, cert-manager's Issuer and Certificate, whose shape is
  checked here instead).
- One source of truth: the chart's crds/ are byte-for-byte crds/, its RBAC is deploy/base/rbac.yaml
  (files/rbac.yaml, copied by `make helm-sync`) and renders to exactly the kustomize base's rules, its
  webhook configurations and status ValidatingAdmissionPolicy are the kustomize base's (files/, copied
  too), and its default ChaosPolicy is the kustomize base's.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from localcluster.controlplane import ControlPlane, ControlPlaneError, default_bin_dir

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "chaosguard"
BASE = REPO / "deploy" / "base"
NAMESPACE = "chaosguard-system"
NOT_INSTALLED = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("cert-manager.io/v1", "Issuer")}
NOT_INSTALLED |= {("cert-manager.io/v1", "Certificate")}
RBAC_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
API_SERVER_CIDR = "10.0.0.1/32"
CA_BUNDLE = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nyours\n-----END CERTIFICATE-----\n").decode()
#: deploy/base's objects for the certificate the operator makes itself (kustomize only; the chart makes it).
KUSTOMIZE_ONLY = {"chaosguard-webhook-tls", "chaosguard-webhook-ca-bundle"}
VARIANTS = {
    "defaults": [],
    "service-monitor": ["--set", "metrics.serviceMonitor.enabled=true"],
    "webhook-cert-manager": ["--set", "webhook.certManager.enabled=true"],
    "webhook-existing-secret": [
        "--set",
        "webhook.existingSecret=my-webhook-tls",
        "--set",
        f"webhook.caBundle={CA_BUNDLE}",
    ],
    "webhooks-off": ["--set", "webhook.enabled=false"],
    "network-policy": [
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        f"networkPolicy.apiServer.cidrs={{{API_SERVER_CIDR}}}",
        "--set-json",
        'networkPolicy.prometheus=[{"to":[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":'
        '"monitoring"}}}],"ports":[9090]}]',
    ],
}
WITH_UNINSTALLED_KINDS = ("service-monitor", "webhook-cert-manager")
WEBHOOK_CONFIGURATIONS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
STATUS_POLICY = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    try:
        return default_bin_dir()
    except ControlPlaneError as error:
        pytest.fail(f"cannot get the pinned kubectl and helm: {error}", pytrace=False)


def helm(bin_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = bin_dir / "helm"
    assert binary.exists(), f"{binary} is missing: run hack/build-control-plane.sh"
    result = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


def render(bin_dir: Path, *values: str) -> list[dict[str, Any]]:
    result = helm(bin_dir, "template", "chaosguard", str(CHART), "--namespace", NAMESPACE, "--include-crds", *values)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(bin_dir: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: render(bin_dir, *values) for name, values in VARIANTS.items()}


@pytest.fixture(scope="module")
def kustomized(bin_dir: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(bin_dir / "kubectl"), "kustomize", str(BASE)], capture_output=True, text=True, timeout=60, check=True
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def container_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(objects, "Deployment", "chaosguard")["spec"]["template"]["spec"]["containers"]
    return container


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


# --------------------------------------------------------------------------- helm itself


def test_helm_lint_passes(bin_dir: Path) -> None:
    helm(bin_dir, "lint", "--strict", str(CHART))
    for values in VARIANTS.values():
        helm(bin_dir, "lint", "--strict", str(CHART), *values)


def test_more_than_one_replica_without_leader_election_is_refused(bin_dir: Path) -> None:
    result = helm(bin_dir, "template", str(CHART), "--set", "leaderElection.enabled=false", check=False)
    assert result.returncode != 0 and "needs leaderElection.enabled" in result.stderr, result.stderr
    single = render(bin_dir, "--set", "leaderElection.enabled=false", "--set", "replicaCount=1")
    deployment = one(single, "Deployment", "chaosguard")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-elect" not in container_of(single)["args"]


def test_the_defaults_run_two_replicas_that_all_serve_the_webhooks(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["defaults"]
    assert one(objects, "Deployment", "chaosguard")["spec"]["replicas"] == 2
    args = container_of(objects)["args"]
    assert "--leader-elect" in args and "--webhook-port" in args
    for kind in WEBHOOK_CONFIGURATIONS:
        assert one(objects, kind, "chaosguard.dev")["webhooks"]
    off = rendered["webhooks-off"]
    assert "--webhook-port" not in container_of(off)["args"]
    assert not [o for o in off if o["kind"] in WEBHOOK_CONFIGURATIONS or o["metadata"]["name"] == "chaosguard-webhook"]
    # The status policy needs no webhook: it is there either way.
    for kind in STATUS_POLICY:
        one(off, kind, "chaosguard-status-writers")


# --------------------------------------------------------------------------- one source of truth


def test_the_chart_crds_are_crds(rendered: dict[str, list[dict[str, Any]]]) -> None:
    generated = sorted(path.name for path in (REPO / "crds").glob("chaosguard.dev_*.yaml"))
    in_chart = sorted(path.name for path in (CHART / "crds").glob("*.yaml"))
    assert in_chart == generated, "run `make helm-sync`"
    for name in generated:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), f"{name}: make helm-sync"
    crds = [o for o in rendered["defaults"] if o["kind"] == "CustomResourceDefinition"]
    assert len(crds) == len(generated)


def test_the_chart_rbac_is_the_kustomize_base(
    rendered: dict[str, list[dict[str, Any]]], kustomized: list[dict[str, Any]]
) -> None:
    assert (CHART / "files" / "rbac.yaml").read_bytes() == (BASE / "rbac.yaml").read_bytes(), "make helm-sync"

    def grants(objects: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
        return {
            (o["kind"], o["metadata"]["name"]): (
                o["metadata"].get("namespace"),
                o.get("rules"),
                o.get("roleRef"),
                o.get("subjects"),
            )
            for o in objects
            if o["kind"] in RBAC_KINDS
        }

    base = {key: value for key, value in grants(kustomized).items() if key[1] not in KUSTOMIZE_ONLY}
    assert base, "no RBAC in deploy/base"
    for variant, objects in rendered.items():
        assert grants(objects) == base, f"the chart's RBAC ({variant}) differs from deploy/base"
    # Helm fills in the caBundle itself: the operator may not write webhook configurations at all (checkov's
    # CKV_K8S_155), nor any Secret but the signing key.
    for _, rules, _, _ in base.values():
        for rule in rules or []:
            assert not {"validatingwebhookconfigurations", "mutatingwebhookconfigurations"} & set(rule["resources"])
            assert "secrets" not in rule["resources"] or rule["resourceNames"] == ["chaosguard-signing-key"], rule
    # In another namespace, only the namespaces change.
    elsewhere = grants(render(default_bin_dir(), "--namespace", "ops"))
    assert elsewhere.keys() == base.keys()
    for key, (namespace, rules, role_ref, subjects) in elsewhere.items():
        assert (rules, role_ref) == base[key][1:3]
        assert namespace in (None, "ops")
        assert all(subject["namespace"] == "ops" for subject in subjects or [])


def test_the_chart_webhooks_and_status_policy_are_the_kustomize_base(
    rendered: dict[str, list[dict[str, Any]]], kustomized: list[dict[str, Any]]
) -> None:
    for name in ("webhooks.yaml", "status-policy.yaml"):
        assert (CHART / "files" / name).read_bytes() == (BASE / name).read_bytes(), f"{name}: make helm-sync"

    def without_release_parts(obj: dict[str, Any]) -> dict[str, Any]:
        """The object minus what the release sets: labels, the caBundle or cainjector annotation."""
        copy = yaml.safe_load(yaml.safe_dump(obj))
        copy["metadata"] = {"name": copy["metadata"]["name"]}
        for webhook in copy.get("webhooks", []):
            webhook["clientConfig"].pop("caBundle", None)
        return copy

    for variant, objects in rendered.items():
        kinds = STATUS_POLICY + (WEBHOOK_CONFIGURATIONS if variant != "webhooks-off" else ())
        for kind in kinds:
            name = "chaosguard-status-writers" if kind in STATUS_POLICY else "chaosguard.dev"
            chart, base = one(objects, kind, name), one(kustomized, kind, name)
            assert without_release_parts(chart) == without_release_parts(base), f"{kind} ({variant})"
    # In another namespace: the Service's namespace and the ServiceAccount the status policy lets through.
    elsewhere = render(default_bin_dir(), "--namespace", "ops")
    services = {
        w["clientConfig"]["service"]["namespace"]
        for w in one(elsewhere, WEBHOOK_CONFIGURATIONS[0], "chaosguard.dev")["webhooks"]
    }
    assert services == {"ops"}
    (validation,) = one(elsewhere, "ValidatingAdmissionPolicy", "chaosguard-status-writers")["spec"]["validations"]
    assert "'system:serviceaccount:ops:chaosguard'" in validation["expression"]
    assert "chaosguard-system" not in yaml.safe_dump(validation)


def test_the_default_policy_is_the_kustomize_base_one_and_safe(
    rendered: dict[str, list[dict[str, Any]]], kustomized: list[dict[str, Any]]
) -> None:
    chart = one(rendered["defaults"], "ChaosPolicy", "default")
    base = one(kustomized, "ChaosPolicy", "default")
    assert chart["spec"] == base["spec"]
    spec = chart["spec"]
    assert spec["requireNamespaceOptIn"] is True
    assert spec["maxPercentage"] == 25
    assert not (spec.get("approval") or {}).get("required"), "approvals are off by default"


# --------------------------------------------------------------------------- what is rendered


def test_the_deployment_runs_two_replicas_with_one_leader(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["defaults"]
    deployment = one(objects, "Deployment", "chaosguard")
    spec = deployment["spec"]
    container = container_of(objects)
    args = container["args"]
    assert spec["replicas"] == 2 and "--leader-elect" in args
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert container["command"] == ["chaosguard", "run"]
    assert container["image"] == "chaosguard:0.1.0" and container["imagePullPolicy"] == "IfNotPresent"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe, option in (("readinessProbe", "--readiness"), ("livenessProbe", "--liveness")):
        url = flag(args, option)
        get = container[probe]["httpGet"]
        assert url == f"http://0.0.0.0:{ports[get['port']]}{get['path']}", (probe, url)
    assert flag(args, "--log-format") == "json"
    assert flag(args, "--leader-election-lease-duration") == "15"
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    pdb = one(objects, "PodDisruptionBudget", "chaosguard")
    assert pdb["spec"] == {"minAvailable": 1, "selector": spec["selector"]}
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    # Metrics: a Service that reaches the container's metrics port.
    service = one(objects, "Service", "chaosguard-metrics")
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics" and int(flag(args, "--metrics-port")) == ports["metrics"]
    assert not [o for o in objects if o["kind"] == "ServiceMonitor"]


def test_the_operator_is_told_the_injector_image_with_the_operators_tag(bin_dir: Path) -> None:
    env = {e["name"]: e.get("value") for e in container_of(render(bin_dir))["env"]}
    # The two images are published together: the injector's tag defaults to the operator's.
    assert env["CHAOSGUARD_INJECTOR_IMAGE"] == "chaosguard-injector:0.1.0"
    assert env["CHAOSGUARD_INJECTOR_PULL_POLICY"] == "IfNotPresent"
    values = ["--set", "injector.image.repository=registry.example.com/chaosguard-injector"]
    values += ["--set", "injector.image.tag=0.2.0", "--set", "injector.image.pullPolicy=Always"]
    env = {e["name"]: e.get("value") for e in container_of(render(bin_dir, *values))["env"]}
    assert env["CHAOSGUARD_INJECTOR_IMAGE"] == "registry.example.com/chaosguard-injector:0.2.0"
    assert env["CHAOSGUARD_INJECTOR_PULL_POLICY"] == "Always"


def test_the_stressor_image_follows_the_injectors_tag_and_can_be_turned_off(bin_dir: Path) -> None:
    env = {e["name"]: e.get("value") for e in container_of(render(bin_dir))["env"]}
    assert env["CHAOSGUARD_STRESSOR_IMAGE"] == "chaosguard-stressor:0.1.0"
    env = {e["name"]: e.get("value") for e in container_of(render(bin_dir, "--set", "injector.image.tag=dev"))["env"]}
    assert env["CHAOSGUARD_STRESSOR_IMAGE"] == "chaosguard-stressor:dev"  # one --set for both, as README says
    values = ["--set", "stressor.image.repository=registry.example.com/s", "--set", "stressor.image.tag=0.3.0"]
    env = {e["name"]: e.get("value") for e in container_of(render(bin_dir, *values))["env"]}
    assert env["CHAOSGUARD_STRESSOR_IMAGE"] == "registry.example.com/s:0.3.0"
    env = {
        e["name"]: e.get("value") for e in container_of(render(bin_dir, "--set", "stressor.image.repository="))["env"]
    }
    assert env["CHAOSGUARD_STRESSOR_IMAGE"] == ""  # the operator then refuses stress experiments


def test_the_service_monitor_scrapes_the_metrics_service(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["service-monitor"]
    monitor = one(objects, "ServiceMonitor", "chaosguard")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    selected = [
        o
        for o in objects
        if o["kind"] == "Service"
        and monitor["spec"]["selector"]["matchLabels"].items() <= o["metadata"]["labels"].items()
    ]
    assert [o["metadata"]["name"] for o in selected] == ["chaosguard-metrics"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and endpoint["interval"] == "30s"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_the_webhook_gets_a_service_and_a_certificate_for_its_name(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    dns = f"chaosguard-webhook.{NAMESPACE}.svc"
    objects = rendered["defaults"]
    container = container_of(objects)
    args = container["args"]
    assert flag(args, "--webhook-service") == f"{NAMESPACE}/chaosguard-webhook:{flag(args, '--webhook-port')}"
    service = one(objects, "Service", "chaosguard-webhook")
    (port,) = service["spec"]["ports"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["targetPort"] == "webhook" and ports["webhook"] == int(flag(args, "--webhook-port")) == port["port"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "webhook-tls")
    assert mount["mountPath"] == flag(args, "--webhook-tls-dir")
    assert "--webhook-tls-secret" not in args  # helm makes the certificate and fills in the caBundle
    # Behind the Service only once the webhook server listens (readiness waits for the startup probe).
    assert container["startupProbe"]["tcpSocket"] == {"port": "webhook"}
    assert "startupProbe" not in container_of(rendered["webhooks-off"])
    volumes = one(objects, "Deployment", "chaosguard")["spec"]["template"]["spec"]["volumes"]
    secret_name = next(v for v in volumes if v["name"] == "webhook-tls")["secret"]["secretName"]
    # helm's genCA/genSignedCert: a serving certificate for the Service's name, signed by ca.crt.
    secret = one(objects, "Secret", secret_name)
    assert secret["type"] == "kubernetes.io/tls"
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert dns in names
    cert.verify_directly_issued_by(ca)
    assert base64.b64decode(secret["data"]["tls.key"]).startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    # The configurations reach that Service, and trust that CA.
    for kind in WEBHOOK_CONFIGURATIONS:
        for webhook in one(objects, kind, "chaosguard.dev")["webhooks"]:
            reached = webhook["clientConfig"]["service"]
            assert (reached["namespace"], reached["name"], reached["port"]) == (
                NAMESPACE,
                "chaosguard-webhook",
                port["port"],
            )
            assert webhook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"], webhook["name"]

    # With cert-manager: a Certificate for the same name into the same Secret, from a self-signed Issuer,
    # and cainjector fills in the caBundle.
    managed = rendered["webhook-cert-manager"]
    certificate = one(managed, "Certificate", "chaosguard-webhook")
    assert certificate["spec"]["secretName"] == secret_name and dns in certificate["spec"]["dnsNames"]
    issuer = one(managed, "Issuer", certificate["spec"]["issuerRef"]["name"])
    assert issuer["spec"] == {"selfSigned": {}}
    assert not [o for o in managed if o["kind"] == "Secret" and o["metadata"]["name"] == secret_name]
    for kind in WEBHOOK_CONFIGURATIONS:
        configuration = one(managed, kind, "chaosguard.dev")
        assert configuration["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"{NAMESPACE}/chaosguard-webhook"
        }
        assert not [w for w in configuration["webhooks"] if "caBundle" in w["clientConfig"]]

    # With a Secret of the user's: mounted, not rendered; helm fills in its CA (here: webhook.caBundle, as
    # `helm template` cannot read the Secret, and says so when it is not given).
    existing = rendered["webhook-existing-secret"]
    volumes = one(existing, "Deployment", "chaosguard")["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "webhook-tls")["secret"]["secretName"] == "my-webhook-tls"
    assert not [
        o for o in existing if o["kind"] == "Secret" and o["metadata"]["name"] in (secret_name, "my-webhook-tls")
    ]
    for kind in WEBHOOK_CONFIGURATIONS:
        assert {w["clientConfig"]["caBundle"] for w in one(existing, kind, "chaosguard.dev")["webhooks"]} == {CA_BUNDLE}
    result = helm(default_bin_dir(), "template", str(CHART), "--set", "webhook.existingSecret=mine", check=False)
    assert result.returncode != 0 and "set webhook.caBundle" in result.stderr, result.stderr


def test_the_network_policy_lets_the_operator_reach_only_what_it_needs(
    bin_dir: Path, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    assert not [o for o in rendered["defaults"] if o["kind"] == "NetworkPolicy"], "off by default"
    objects = rendered["network-policy"]
    policy = one(objects, "NetworkPolicy", "chaosguard")["spec"]
    labels = one(objects, "Deployment", "chaosguard")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    # Ingress: the webhook, metrics and probe ports, which the container names.
    (ingress,) = policy["ingress"]
    container_ports = {p["name"] for p in container_of(objects)["ports"]}
    assert {p["port"] for p in ingress["ports"]} == {"webhook", "metrics", "healthz", "readyz"} == container_ports
    # Egress: the API server, DNS, the Prometheus listed; nothing else.
    api_server, dns, prometheus = policy["egress"]
    assert api_server["to"] == [{"ipBlock": {"cidr": API_SERVER_CIDR}}]
    assert {p["port"] for p in api_server["ports"]} == {443, 6443}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert prometheus == {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "ports": [{"port": 9090, "protocol": "TCP"}],
    }
    # Without the API server's addresses (helm template cannot look them up), it says what to set.
    result = helm(bin_dir, "template", str(CHART), "--set", "networkPolicy.enabled=true", check=False)
    assert result.returncode != 0 and "networkPolicy.apiServer.cidrs" in result.stderr, result.stderr


# --------------------------------------------------------------------------- the real API server


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_api_server_accepts_every_rendered_object(
    chaosguard_crds: ControlPlane, rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    objects = rendered[variant]
    skipped = [o for o in objects if (o["apiVersion"], o["kind"]) in NOT_INSTALLED]
    assert bool(skipped) == (variant in WITH_UNINSTALLED_KINDS), skipped
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    rest = [o for o in objects if o not in crds and o not in skipped]
    # The release's namespace, as `helm install --create-namespace` makes it but with the restricted
    # Pod Security Standard enforced (deploy/base's), so that the pod template is judged by it.
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    }
    chaosguard_crds.kubectl("apply", "-f", "-", input=yaml.safe_dump(namespace))
    for group in (crds, rest):  # the CRDs are installed for real already (chaosguard_crds): same content
        result = chaosguard_crds.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(group))
        assert result.stdout.count("(server dry run)") == len(group), result.stdout
        assert "Warning" not in result.stderr, result.stderr
