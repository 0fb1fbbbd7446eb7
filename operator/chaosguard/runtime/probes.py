"""The kubelet's probes, served by `chaosguard run` next to kopf.

- readiness (`--readiness http://0.0.0.0:8081/readyz`), for the whole life of the process: 200 once
  the operator can do its job: without leader election, once kopf has started; with it, while the
  API server answers the election (the leader and a healthy standby alike, so that a rolling update
  proceeds: a new pod is ready as a standby, and takes over when the old leader steps down).
- liveness (`--liveness`) is kopf's own endpoint while kopf runs. A standby runs no kopf, so it
  answers the same URL itself while it stands by (200 while its election loop goes round), and
  closes it just before kopf starts and binds it.
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
    """Readiness for the process's lifetime; liveness only until kopf takes its URL over."""

    def __init__(
        self,
        readiness: Endpoint | None,
        standby_liveness: Endpoint | None,
        ready: Callable[[], dict[str, object]],
        alive: Callable[[], dict[str, object]],
    ) -> None:
        self.readiness = _Site(readiness, ready) if readiness else None
        self.liveness = _Site(standby_liveness, alive) if standby_liveness else None

    async def start(self) -> None:
        for site in (self.readiness, self.liveness):
            if site is not None:
                await site.start()

    async def hand_liveness_to_kopf(self) -> None:
        if self.liveness is not None:
            await self.liveness.stop()

    async def stop(self) -> None:
        for site in (self.liveness, self.readiness):
            if site is not None:
                await site.stop()
