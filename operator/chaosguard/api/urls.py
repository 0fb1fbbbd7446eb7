"""URLs compared by their parts, never as strings (the ChaosPolicy's allowedPrometheusURLs).

Here, below the models, so that a policy's prefixes are checked when it is read, and the same
parsing decides what a prefix allows (`decisions.prometheus_access`).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

_DEFAULT_PORTS = {"http": 80, "https": 443}
_AMBIGUOUS = re.compile(r"[\s\\]|%2[ef]|%5c", re.IGNORECASE)


@dataclass(frozen=True)
class UrlParts:
    scheme: str
    host: str
    port: int
    path: str  # without a trailing slash; "" for the root


def url_parts(url: str) -> UrlParts | str:
    """The parts a URL is matched by, or why it cannot be matched safely."""
    if _AMBIGUOUS.search(url):
        return "it contains white space, a backslash or an encoded slash or dot"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"it does not parse ({error})"
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        return "its scheme is not http or https"
    if "@" in parts.netloc:
        return "it carries user info (user@host); put credentials in bearerTokenSecret"
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return "it has no host"
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        return "it has a query or a fragment"
    segments = parts.path.split("/")
    if any(segment in (".", "..") for segment in segments):
        return "its path has . or .. segments"
    return UrlParts(scheme, host, port if port is not None else _DEFAULT_PORTS[scheme], parts.path.rstrip("/"))
