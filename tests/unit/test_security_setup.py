"""Start-up pieces of the identity machinery that need no cluster: the key file, the webhook TLS files,
the `chaosguard run` options, and which permission each fault needs."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from chaosguard.admission.judge import needed_permission
from chaosguard.admission.signing import KEY_BYTES, SigningKeyError, key_from_file
from chaosguard.admission.webhook_tls import ensure_tls
from chaosguard.api.models import Action
from chaosguard.cli.main import build_parser
from chaosguard.runtime.security import SecurityOptions, WebhookOptions, missing_key_source, options_from_args


def test_a_key_file_is_created_private_once_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    key = key_from_file(path)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_from_file(path) == key
    path.write_bytes(b"short")
    with pytest.raises(SigningKeyError, match="holds 5 bytes"):
        key_from_file(path)


def test_generated_tls_files_serve_the_webhook_host_and_chain_to_the_ca(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path / "tls", ["127.0.0.1", "chaosguard.example"])
    cert = x509.load_pem_x509_certificate(files.certfile.read_bytes())
    ca = x509.load_pem_x509_certificate(files.cafile.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["chaosguard.example"]
    cert.verify_directly_issued_by(ca)
    assert stat.S_IMODE(files.keyfile.stat().st_mode) == 0o600
    # Present files (e.g. mounted from cert-manager) are used as they are.
    before = files.certfile.read_bytes()
    assert ensure_tls(tmp_path / "tls", ["other"]) == files
    assert files.certfile.read_bytes() == before


def test_run_options_and_where_the_key_lives() -> None:
    args = build_parser().parse_args(["run", "--webhook-port", "9443", "--webhook-host", "webhook.example"])
    options = options_from_args(args)
    assert options.webhook == WebhookOptions(port=9443, host="webhook.example")
    assert options.webhook.listen_address == "0.0.0.0"
    assert WebhookOptions(port=1, host="127.0.0.1").listen_address == "127.0.0.1"
    problem = missing_key_source(options, None)
    assert problem is not None and "CHAOSGUARD_NAMESPACE" in problem
    assert missing_key_source(options, "chaosguard-system") is None
    assert missing_key_source(SecurityOptions(options.webhook, signing_key_file="/k"), None) is None
    assert missing_key_source(options_from_args(build_parser().parse_args(["run"])), None) is None


def test_each_fault_needs_its_own_permission_from_the_author() -> None:
    assert needed_permission(Action.POD_KILL) == ("delete", "pods", "")
    assert needed_permission(Action.LATENCY) == ("patch", "pods", "ephemeralcontainers")
