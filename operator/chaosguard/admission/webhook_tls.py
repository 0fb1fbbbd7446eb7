"""TLS for the admission webhook server: a serving certificate the API server trusts.

Three sources, in the order `chaosguard run` tries them:

- a Secret of the operator's own namespace (`--webhook-tls-secret`, the kustomize install): the first
  replica to start writes a fresh CA and serving certificate into it, with the resourceVersion it read
  as a precondition, so that two replicas starting together cannot both win (the loser gets 409 and
  reads the winner's); every replica then serves the very same certificate. The operator then sets
  the `caBundle` of its own webhook configurations, by name (`patch_ca_bundles`).
- a directory that already holds `tls.crt` and `tls.key` (a Secret mounted by Helm or cert-manager),
  used as it is, with `ca.crt` as the CA bundle.
- otherwise a fresh self-signed CA and serving certificate written to that directory (development).

Certificates are ECDSA P-256, for the webhook's host (an IP address or a DNS name) plus any extra
names. Generating them needs the `cryptography` package.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from chaosguard.clients.kube import Cluster, api_message

CERT_KEY, PRIVATE_KEY, CA_KEY = "tls.crt", "tls.key", "ca.crt"
#: A self-made certificate nobody renews: as long-lived as the Helm chart's self-signed default.
SELF_MADE_VALIDITY_DAYS = 3650


@dataclass(frozen=True)
class TlsFiles:
    certfile: Path
    keyfile: Path
    cafile: Path


@dataclass(frozen=True)
class TlsMaterial:
    cert: bytes
    key: bytes
    ca: bytes


class WebhookTlsError(RuntimeError):
    """The serving certificate cannot be read, made or registered; the message says what to grant or fix."""


def _general_name(name: str) -> object:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def generate_tls(names: Sequence[str], valid_days: int = 365) -> TlsMaterial:
    """A fresh CA and a serving certificate it signed for `names` (the first one: the common name), in PEM."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise WebhookTlsError(
            "generating a serving certificate needs the `cryptography` package: install it, or mount a "
            "serving certificate (tls.crt, tls.key, ca.crt) in --webhook-tls-dir"
        ) from None

    now = datetime.datetime.now(datetime.UTC)
    valid_from, valid_to = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=valid_days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chaosguard-webhook-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans = [_general_name(name) for name in dict.fromkeys(names)]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_bytes = server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return TlsMaterial(server_cert.public_bytes(pem), key_bytes, ca_cert.public_bytes(pem))


def write_tls(directory: Path, material: TlsMaterial) -> TlsFiles:
    files = TlsFiles(directory / CERT_KEY, directory / PRIVATE_KEY, directory / CA_KEY)
    directory.mkdir(parents=True, exist_ok=True)
    files.keyfile.touch(mode=0o600)
    files.keyfile.write_bytes(material.key)
    files.certfile.write_bytes(material.cert)
    files.cafile.write_bytes(material.ca)
    return files


def ensure_tls(directory: Path, names: Sequence[str]) -> TlsFiles:
    """The serving certificate in `directory`, generated for `names` (first one: the common name) if absent."""
    files = TlsFiles(directory / CERT_KEY, directory / PRIVATE_KEY, directory / CA_KEY)
    if files.certfile.exists() and files.keyfile.exists():
        return files if files.cafile.exists() else TlsFiles(files.certfile, files.keyfile, files.certfile)
    return write_tls(directory, generate_tls(names))


def uncovered_names(cert_pem: bytes, names: Sequence[str]) -> list[str]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    covered = {str(value) for value in sans.get_values_for_type(x509.DNSName)}
    covered |= {str(value) for value in sans.get_values_for_type(x509.IPAddress)}
    return [name for name in names if name not in covered]


def tls_from_secret(cluster: Cluster, namespace: str, secret: str, names: Sequence[str]) -> TlsMaterial:
    """The CA and serving certificate in Secret `secret` of `namespace`, made on first use (race-safe).

    deploy/base ships the Secret empty, so that the operator needs no `create` on Secrets: it fills the
    Secret in with the resourceVersion it read as a precondition. Should the Secret be missing, it is
    created (where the role allows it). Either way a replica that loses the race (409) reads the winner's.
    """
    where = f"Secret {namespace}/{secret}"
    for _ in range(5):
        try:
            found = cluster.secret_data(namespace, secret)
            if found is not None and all(found[0].get(key) for key in (CERT_KEY, PRIVATE_KEY, CA_KEY)):
                data = found[0]
                material = TlsMaterial(data[CERT_KEY], data[PRIVATE_KEY], data[CA_KEY])
                if missing := uncovered_names(material.cert, names):
                    raise WebhookTlsError(
                        f"the serving certificate in {where} is not valid for {', '.join(missing)} (the webhook "
                        "Service's names): empty the Secret (kubectl patch secret ... --type=json -p "
                        '\'[{"op":"remove","path":"/data"}]\') and restart the operator to make a new one'
                    )
                return material
            material = generate_tls(names, SELF_MADE_VALIDITY_DAYS)
            data = {CERT_KEY: material.cert, PRIVATE_KEY: material.key, CA_KEY: material.ca}
            if found is None:
                cluster.create_secret(namespace, secret, data)
            else:
                cluster.add_secret_data(namespace, secret, data, found[1])
            return material
        except ApiException as error:
            if error.status == 409:
                continue  # another replica wrote it first: serve theirs
            if error.status == 403:
                raise WebhookTlsError(
                    f"may not read or fill in {where}: {api_message(error)}; apply deploy/base (it ships the "
                    "Secret empty, and a Role that may get and patch it), or mount a certificate with "
                    "--webhook-tls-dir"
                ) from None
            raise WebhookTlsError(f"cannot read {where}: {api_message(error)}") from None
    raise WebhookTlsError(f"{where} kept changing while the operator tried to read its certificate")


WEBHOOK_CONFIGURATION_KINDS = ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")


def patch_ca_bundles(cluster: Cluster, configuration: str, ca_pem: bytes) -> list[str]:
    """Sets the caBundle of every webhook in the Validating- and MutatingWebhookConfiguration `configuration`
    to `ca_pem`, by name: never creates one, never touches another. Returns the kinds it changed.

    A JSON patch whose `test` ops pin each webhook's name at its index: should someone reorder or
    replace the webhooks meanwhile, the patch fails (422) instead of writing a bundle into the wrong one.
    """
    import base64

    api = client.AdmissionregistrationV1Api(cluster.core.api_client)
    bundle = base64.b64encode(ca_pem).decode()
    readers: dict[str, Any] = {
        "validatingwebhookconfigurations": api.read_validating_webhook_configuration,
        "mutatingwebhookconfigurations": api.read_mutating_webhook_configuration,
    }
    patchers: dict[str, Any] = {
        "validatingwebhookconfigurations": api.patch_validating_webhook_configuration,
        "mutatingwebhookconfigurations": api.patch_mutating_webhook_configuration,
    }
    changed = []
    for kind in WEBHOOK_CONFIGURATION_KINDS:
        where = f"{kind}/{configuration}"
        try:
            current = cluster.core.api_client.sanitize_for_serialization(readers[kind](configuration))
            operations: list[dict[str, Any]] = []
            for index, webhook in enumerate(current.get("webhooks") or []):
                if (webhook.get("clientConfig") or {}).get("caBundle") == bundle:
                    continue
                operations.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook["name"]})
                operations.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": bundle})
            if operations:
                patchers[kind](configuration, operations)
                changed.append(kind)
        except ApiException as error:
            if error.status == 404:
                raise WebhookTlsError(
                    f"there is no {where}: the install ships it (deploy/base/webhooks.yaml, or the Helm chart); "
                    "the operator only sets its caBundle and never creates one"
                ) from None
            if error.status == 403:
                raise WebhookTlsError(
                    f"may not read or patch {where}: {api_message(error)}; grant get and patch on it, by name "
                    "(deploy/base/rbac.yaml)"
                ) from None
            raise WebhookTlsError(f"cannot set the caBundle of {where}: {api_message(error)}") from None
    return changed
