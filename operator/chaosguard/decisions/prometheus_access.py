"""Where an experiment's Prometheus queries may go, and which Secrets it may name, pure.

The operator queries Prometheus from its own pod, with Secrets it can read and its author perhaps
cannot. So an experiment's endpoints are judged before any run:

- Every Secret an endpoint names (bearerTokenSecret, caSecret) is listed here with its field, so
  the admission and run-start checks can ask whether the author may `get` it themselves.
- A ChaosPolicy may list `allowedPrometheusURLs`. Every applicable policy that lists any must
  allow each of the experiment's URLs, with or without credentials: the list closes the operator
  as a way to reach arbitrary hosts from inside the cluster.
- Where no applicable policy lists any, a URL without credentials may be anything (the behaviour
  installs already rely on; what comes back reaches status only as a status code, never a body),
  but a bearer token goes only to the URL the operator itself was configured with.

URLs are compared by their parts, never as strings: scheme, host and port exactly (the port
defaulted from the scheme), and the path as a prefix ending on a segment boundary. A URL that
could be read two ways (user info, dot segments, encoded slashes or dots, a query, a fragment,
backslashes, white space) matches nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from chaosguard.api.models import ChaosExperimentSpec, PrometheusEndpoint, SecretKeyRef
from chaosguard.api.urls import url_parts
from chaosguard.decisions.policy import EffectivePolicy, Refusal

ALLOWED_URLS_FIELD = "spec.allowedPrometheusURLs"
URL_RULE = "prometheus-url"
CREDENTIALS_URL_RULE = "prometheus-credentials-url"
SECRET_PERMISSION_RULE = "secret-permission"
SECRET_AUTHOR_UNKNOWN_RULE = "secret-author-unknown"
HOST_HEADER_RULE = "prometheus-host-header"


def url_within(url: str, prefix: str) -> bool:
    """Whether `url` is `prefix` or below it: same scheme, host and port; path on a segment boundary."""
    target, allowed = url_parts(url), url_parts(prefix)
    if isinstance(target, str) or isinstance(allowed, str):
        return False
    if (target.scheme, target.host, target.port) != (allowed.scheme, allowed.host, allowed.port):
        return False
    return not allowed.path or target.path == allowed.path or target.path.startswith(allowed.path + "/")


def author_endpoints(spec: ChaosExperimentSpec) -> list[tuple[str, PrometheusEndpoint]]:
    """Every Prometheus endpoint an experiment names, with its field."""
    steady = spec.steady_state
    if steady is None:
        return []
    found: list[tuple[str, PrometheusEndpoint]] = []
    if steady.prometheus is not None:
        found.append(("spec.steadyState.prometheus", steady.prometheus))
    for index, condition in enumerate(steady.conditions):
        if condition.prometheus is not None:
            found.append((f"spec.steadyState.conditions[{index}].prometheus", condition.prometheus))
    return found


def named_secrets(spec: ChaosExperimentSpec) -> list[tuple[str, SecretKeyRef]]:
    """Every Secret an experiment names (read in its own namespace), with its field."""
    secrets: list[tuple[str, SecretKeyRef]] = []
    for field, endpoint in author_endpoints(spec):
        if endpoint.bearer_token_secret is not None:
            secrets.append((f"{field}.bearerTokenSecret", endpoint.bearer_token_secret))
        if endpoint.ca_secret is not None:
            secrets.append((f"{field}.caSecret", endpoint.ca_secret))
    return secrets


def endpoint_refusals(spec: ChaosExperimentSpec, effective: EffectivePolicy, operator_url: str | None) -> list[Refusal]:
    """Every endpoint of the experiment that its queries, or its credentials, may not go to."""
    refusals: list[Refusal] = []
    for field, endpoint in author_endpoints(spec):
        refusal = _endpoint_refusal(field, endpoint, effective.allowed_prometheus_urls, operator_url)
        if refusal is not None:
            refusals.append(refusal)
    return refusals


def _endpoint_refusal(
    field: str,
    endpoint: PrometheusEndpoint,
    lists: Sequence[tuple[str, tuple[str, ...]]],
    operator_url: str | None,
) -> Refusal | None:
    url = endpoint.url
    if any(name.strip().lower() == "host" for name in endpoint.headers):
        # A Host header would steer a shared proxy behind an allowed URL to another of its sites.
        return Refusal(
            HOST_HEADER_RULE,
            f"{field}.headers sets Host, which would send the query to another site than {url} names; "
            f"remove it and put that host in {field}.url",
            f"{field}.headers",
        )
    unsafe = url_parts(url)
    why = f" ({unsafe})" if isinstance(unsafe, str) else ""
    for source, prefixes in lists:
        if not any(url_within(url, prefix) for prefix in prefixes):
            allowed = ", ".join(prefixes) or "none"
            return Refusal(
                URL_RULE,
                f"{field}.url {url} is not among the Prometheus URLs {source} allows ({allowed}){why}; "
                f"point it at one of those, or ask the cluster's owners to add it to {ALLOWED_URLS_FIELD}",
                f"{field}.url",
            )
    if lists or endpoint.bearer_token_secret is None:
        return None
    if operator_url is not None and url_within(url, operator_url):
        return None
    configured = (
        f"the operator's own Prometheus, {operator_url}"
        if operator_url
        else "the operator's own Prometheus, and none is configured (chaosguard run --prometheus-url)"
    )
    return Refusal(
        CREDENTIALS_URL_RULE,
        f"{field}.bearerTokenSecret would send a token to {url}{why}, but with no ChaosPolicy listing "
        f"allowedPrometheusURLs a token goes only to {configured}; point {field}.url there, remove "
        f"bearerTokenSecret, or ask the cluster's owners to list the URL in a ChaosPolicy's {ALLOWED_URLS_FIELD}",
        f"{field}.bearerTokenSecret",
    )


def secret_refusal(user: str, namespace: str, field: str, secret: str) -> Refusal:
    return Refusal(
        SECRET_PERMISSION_RULE,
        f"{field} names Secret {secret!r}, but {user} may not get it in namespace {namespace!r}, and the "
        "operator reads a Secret for an experiment only if its author could read it; ask for `get` on "
        f"secrets/{secret} in {namespace!r} (a Role with resourceNames: [{secret}]), or remove {field}",
        field,
    )


def secrets_without_author(spec: ChaosExperimentSpec, problem: str) -> Refusal | None:
    """A named Secret needs an author who may read it; with no author known, none may be read."""
    named = named_secrets(spec)
    if not named:
        return None
    field, ref = named[0]
    return Refusal(
        SECRET_AUTHOR_UNKNOWN_RULE,
        f"{field} names Secret {ref.name!r}, which the operator reads only for an author who may read it, and "
        f"the author is unknown ({problem}); run the operator with its admission webhooks "
        "(`chaosguard run --webhook-port ...`) and create the experiment again, or remove the Secret",
        field,
    )
