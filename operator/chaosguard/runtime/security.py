"""Start-up of the identity machinery: the signing key, and (with `--webhook-port`) the webhook server.

`chaosguard run` passes its options in kopf's memo (`memo.security`); the startup handler in
`handlers` calls `prepare`, which loads the key into the OperatorContext and, when webhooks are on,
gives kopf a TLS webhook server.

The webhook configurations `chaosguard.dev` belong to the install (deploy/base/webhooks.yaml, the Helm
chart), not to the operator: every replica serves the webhooks, so no replica may create them, rewrite
them or remove them when it stops (kopf's `settings.admission.managed` would do all three, and a
replica's graceful exit would leave the others' webhooks unregistered). The operator sets only their
`caBundle`, by name, when it made the certificate itself (`--webhook-tls-secret`, the kustomize
install); the Helm chart and cert-manager fill it in themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaosguard.runtime.context import OperatorContext

WEBHOOK_CONFIGURATION = "chaosguard.dev"
logger = logging.getLogger("chaosguard.security")  # a fixed name: log filters select on it


@dataclass(frozen=True)
class ServiceRef:
    namespace: str
    name: str
    port: int = 443

    @classmethod
    def parse(cls, text: str) -> ServiceRef:
        """`NAMESPACE/NAME[:PORT]`, e.g. chaosguard-system/chaosguard-webhook:443."""
        namespace, slash, rest = text.partition("/")
        name, colon, port = rest.partition(":")
        if not slash or not namespace or not name or (colon and not port.isdigit()):
            raise ValueError(f"--webhook-service {text!r}: write NAMESPACE/NAME or NAMESPACE/NAME:PORT")
        return cls(namespace, name, int(port) if port else 443)

    @property
    def dns_names(self) -> tuple[str, ...]:
        base = f"{self.name}.{self.namespace}.svc"
        return (base, f"{base}.cluster.local")


@dataclass(frozen=True)
class WebhookOptions:
    port: int
    host: str = "127.0.0.1"  # the name or IP the API server reaches the operator at (URL and certificate)
    listen: str | None = None  # the address to bind; default: host if it is an IP, else all interfaces
    tls_dir: str | None = None  # tls.crt/tls.key/ca.crt to use, or where to generate them
    tls_secret: str | None = None  # a Secret of the operator's namespace holding (or to hold) the certificate
    extra_names: tuple[str, ...] = ()
    service: ServiceRef | None = None  # in a cluster: the API server reaches the webhooks through this Service

    @property
    def listen_address(self) -> str:
        if self.listen:
            return self.listen
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return "0.0.0.0"
        return self.host


@dataclass(frozen=True)
class SecurityOptions:
    webhook: WebhookOptions | None = None
    signing_key_file: str | None = None


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """`chaosguard run` options for the signing key and the admission webhooks."""
    run.add_argument(
        "--webhook-port",
        type=int,
        default=None,
        help="serve the admission webhooks (author stamps, policy and permission checks at apply time) on this port",
    )
    run.add_argument(
        "--webhook-host",
        default="127.0.0.1",
        help="the IP or DNS name the API server reaches the webhooks at (in the URL and the certificate)",
    )
    run.add_argument("--webhook-listen", default=None, help="address to bind (default: --webhook-host if an IP)")
    run.add_argument(
        "--webhook-service",
        default=None,
        metavar="NAMESPACE/NAME[:PORT]",
        help="in a cluster: register the webhooks as reached through this Service (its DNS names go into the "
        "certificate) instead of a URL; the server then listens on all interfaces",
    )
    run.add_argument(
        "--webhook-tls-dir",
        default=None,
        help="tls.crt, tls.key and ca.crt to serve with; generated there (or in a temporary directory) if absent",
    )
    run.add_argument(
        "--webhook-tls-secret",
        default=None,
        metavar="NAME",
        help="keep the webhooks' CA and serving certificate in this Secret of $CHAOSGUARD_NAMESPACE (made by the "
        "first replica, served by all), and set the caBundle of the webhook configurations chaosguard.dev",
    )
    run.add_argument(
        "--signing-key-file",
        default=None,
        help="keep the HMAC key for author/approver stamps in this file (created if missing) instead of the "
        "Secret chaosguard-signing-key in $CHAOSGUARD_NAMESPACE",
    )


def options_from_args(args: argparse.Namespace) -> SecurityOptions:
    webhook = None
    if args.webhook_port is not None:
        service = ServiceRef.parse(args.webhook_service) if args.webhook_service else None
        webhook = WebhookOptions(
            port=args.webhook_port,
            host=service.dns_names[0] if service else args.webhook_host,
            listen=args.webhook_listen or ("0.0.0.0" if service else None),
            tls_dir=args.webhook_tls_dir,
            tls_secret=args.webhook_tls_secret,
            extra_names=service.dns_names[1:] if service else (),
            service=service,
        )
    return SecurityOptions(webhook=webhook, signing_key_file=args.signing_key_file)


def missing_key_source(options: SecurityOptions, operator_namespace: str | None) -> str | None:
    """Why webhooks cannot start (no place to keep the key), checked by the CLI before kopf starts."""
    if options.webhook is not None and not options.signing_key_file and not operator_namespace:
        return (
            "--webhook-port needs a signing key: set CHAOSGUARD_NAMESPACE (the key lives in Secret "
            "chaosguard-signing-key there) or pass --signing-key-file"
        )
    if options.webhook is not None and options.webhook.tls_secret and not operator_namespace:
        return "--webhook-tls-secret names a Secret of the operator's namespace: set CHAOSGUARD_NAMESPACE"
    return None


async def prepare(settings: Any, memo: Any) -> None:
    """Loads the key into memo.context and configures kopf's admission settings when webhooks are on."""
    from chaosguard.admission.signing import key_from_file, key_from_secret
    from chaosguard.admission.webhook_tls import ensure_tls, patch_ca_bundles, tls_from_secret, write_tls

    options: SecurityOptions = memo.get("security") or SecurityOptions()
    context: OperatorContext = memo.context
    if options.signing_key_file:
        context.signing_key = key_from_file(Path(options.signing_key_file))
    elif context.operator_namespace:
        context.signing_key = await asyncio.to_thread(key_from_secret, context.cluster, context.operator_namespace)
    else:
        logger.warning(
            "no signing key (neither CHAOSGUARD_NAMESPACE nor --signing-key-file): experiments that a policy "
            "requires approval for will be refused, since their author cannot be verified"
        )
    if options.webhook is None:
        return
    import kopf

    webhook = options.webhook
    names = [webhook.host, *webhook.extra_names]
    directory = Path(webhook.tls_dir) if webhook.tls_dir else Path(tempfile.mkdtemp(prefix="chaosguard-webhook-"))
    if webhook.tls_secret:
        assert context.operator_namespace  # missing_key_source refused to start without it
        material = await asyncio.to_thread(
            tls_from_secret, context.cluster, context.operator_namespace, webhook.tls_secret, names
        )
        files = await asyncio.to_thread(write_tls, directory, material)
    else:
        files = await asyncio.to_thread(ensure_tls, directory, names)
    if webhook.tls_secret:
        # Every replica does it, with the same CA (the same Secret): idempotent, and nothing to write
        # when the bundle is in place already.
        changed = await asyncio.to_thread(
            patch_ca_bundles, context.cluster, WEBHOOK_CONFIGURATION, files.cafile.read_bytes()
        )
        if changed:
            logger.info("set the caBundle of %s (%s)", WEBHOOK_CONFIGURATION, ", ".join(changed))
    server_class = kopf.WebhookServer if webhook.service is None else service_webhook_server(webhook.service)
    settings.admission.server = server_class(
        addr=webhook.listen_address,
        port=webhook.port,
        host=webhook.host,
        certfile=str(files.certfile),
        pkeyfile=str(files.keyfile),
        cafile=str(files.cafile),
    )
    # Deliberately no `settings.admission.managed`: see the module's docstring.
    context.webhooks = True
    logger.info("admission webhooks on https://%s:%d (%s)", webhook.host, webhook.port, WEBHOOK_CONFIGURATION)


def service_webhook_server(service: ServiceRef) -> Any:
    """kopf's webhook server, reporting itself as reached through a Service rather than a URL (in a cluster,
    the API server cannot reach a pod by name; kopf appends each handler's id to the service path). Since
    the install ships the configurations, what it reports is what deploy/base/webhooks.yaml writes down."""
    import kopf

    class ServiceWebhookServer(kopf.WebhookServer):
        async def __call__(self, fn: Any) -> Any:
            async for config in super().__call__(fn):
                # No "path": kopf appends "/<handler id>" to the one given, and "/" would make "//id",
                # which the API server refuses (segment[0] may not be empty).
                routed: dict[str, Any] = {
                    "service": {"namespace": service.namespace, "name": service.name, "port": service.port}
                }
                if config.get("caBundle"):
                    routed["caBundle"] = config["caBundle"]
                yield routed

    return ServiceWebhookServer
