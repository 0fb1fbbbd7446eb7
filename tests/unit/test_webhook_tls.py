"""The operator-made webhook certificate (kustomize install): what every replica serves, and what it
refuses to serve."""

from __future__ import annotations

import datetime

from cryptography import x509

from chaosguard.admission.webhook_tls import SELF_MADE_VALIDITY_DAYS, generate_tls, uncovered_names

SERVICE_NAMES = ["chaosguard-webhook.chaosguard-system.svc", "chaosguard-webhook.chaosguard-system.svc.cluster.local"]


def test_a_self_made_certificate_serves_the_service_names_for_ten_years_and_chains_to_its_ca() -> None:
    material = generate_tls(SERVICE_NAMES, SELF_MADE_VALIDITY_DAYS)
    cert = x509.load_pem_x509_certificate(material.cert)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(material.ca))
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= datetime.timedelta(days=3650)
    assert uncovered_names(material.cert, SERVICE_NAMES) == []
    assert b"PRIVATE KEY" in material.key


def test_a_certificate_made_for_another_service_is_not_served() -> None:
    material = generate_tls(["old-name.chaosguard-system.svc"])
    assert uncovered_names(material.cert, SERVICE_NAMES) == SERVICE_NAMES
