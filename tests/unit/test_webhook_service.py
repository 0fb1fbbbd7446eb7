"""In a cluster the webhooks are registered as reached through a Service, with a certificate for
its DNS names: checked by running the real server on a free port and reading what it registers."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from chaosguard.admission.webhook_tls import ensure_tls
from chaosguard.runtime.security import ServiceRef, add_run_arguments, options_from_args, service_webhook_server


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return parser.parse_args(argv)


def test_service_option_sets_the_names_and_listens_everywhere() -> None:
    options = options_from_args(parse("--webhook-port", "9443", "--webhook-service", "chaosguard-system/hooks:8443"))
    assert options.webhook is not None
    assert options.webhook.service == ServiceRef("chaosguard-system", "hooks", 8443)
    assert options.webhook.host == "hooks.chaosguard-system.svc"
    assert options.webhook.extra_names == ("hooks.chaosguard-system.svc.cluster.local",)
    assert options.webhook.listen_address == "0.0.0.0"


@pytest.mark.parametrize("text", ["hooks", "/hooks", "ns/", "ns/hooks:https"])
def test_bad_service_references_are_refused_with_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="NAMESPACE/NAME"):
        ServiceRef.parse(text)


def test_the_server_registers_the_service_with_its_ca(tmp_path: Path) -> None:
    service = ServiceRef("chaosguard-system", "chaosguard-webhook", 443)
    files = ensure_tls(tmp_path, list(service.dns_names))
    names = x509.load_pem_x509_certificate(files.certfile.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert set(names.value.get_values_for_type(x509.DNSName)) == set(service.dns_names)
    server = service_webhook_server(service)(
        addr="127.0.0.1", port=0, certfile=str(files.certfile), pkeyfile=str(files.keyfile), cafile=str(files.cafile)
    )

    async def first_config() -> dict[str, Any]:
        async def never_called(*_: Any, **__: Any) -> Any:
            raise AssertionError("no request is sent in this test")

        generator = server(never_called)
        try:
            return dict(await generator.__anext__())
        finally:
            await generator.aclose()

    config = asyncio.run(first_config())
    assert config["service"] == {
        "namespace": "chaosguard-system",
        "name": "chaosguard-webhook",
        "port": 443,
    }
    assert "url" not in config and config["caBundle"]
