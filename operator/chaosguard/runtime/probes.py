"""The kubelet's probes, served by `chaosguard run` next to kopf.

- readiness (`--readiness http://0.0.0.0:8081/readyz`), for the whole life of the process: 200 once
  the operator can do its job: once kopf has started (the webhooks are served and running runs are
  guarded), and with leader election, while the API server answers the election (the leader and a
  healthy standby alike, so that a rolling update proceeds: a new pod is ready as a standby).
- liveness (`--liveness`) is kopf's own endpoint: kopf runs in every replica, standbys included.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp.web


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str


def parse_endpoint(url: str, flag: str) -> Endpoint:
    """An http:// URL with a port, as kopf's --liveness takes it; ValueError names the flag."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.port:
        raise ValueError(f"{flag} {url!r} must be an http:// URL with a port, such as http://0.0.0.0:8081/readyz")
    return Endpoint(parts.hostname or "0.0.0.0", parts.port, parts.path or "/")


class _Site:
    def __init__(self, endpoint: Endpoint, check: Callable[[], dict[str, object]]) -> None:
        self.endpoint = endpoint
        self.check = check
        self.runner: aiohttp.web.AppRunner | None = None

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        import aiohttp.web

        report = self.check()
        return aiohttp.web.json_response(report, status=200 if report.get("ok") else 503)

    async def start(self) -> None:
        import aiohttp.web  # kopf's own dependency; imported here to keep the CLI's start-up light

        app = aiohttp.web.Application()
        app.add_routes([aiohttp.web.get(self.endpoint.path, self.handle)])
        self.runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
        await self.runner.setup()
        await aiohttp.web.TCPSite(self.runner, self.endpoint.host, self.endpoint.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


class Probes:
    """Readiness, for the process's lifetime (liveness is kopf's own endpoint)."""

    def __init__(self, readiness: Endpoint | None, ready: Callable[[], dict[str, object]]) -> None:
        self.readiness = _Site(readiness, ready) if readiness else None

    async def start(self) -> None:
        if self.readiness is not None:
            await self.readiness.start()

    async def stop(self) -> None:
        if self.readiness is not None:
            await self.readiness.stop()
