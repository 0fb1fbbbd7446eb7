"""A real Prometheus for tests, scraping metrics the test controls, plus small local HTTP helpers.

- `MetricsTarget`: a prometheus-client HTTP server on 127.0.0.1:<free port> exposing
  `demo_error_ratio{app}`, `demo_latency_seconds{app}` (gauges) and
  `demo_http_requests_total{app,code}` (counter), whose values a test flips.
- `PrometheusServer`: runs /usr/bin/prometheus (never the system service) with its own config
  (scrape and evaluation every 1s), storage dir and loopback port, and optional recording and
  alerting rules (`rule_groups`); `stop()`/`start()` again simulate Prometheus going down and
  coming back on the same URL. `jobs=` adds scrape jobs by name (e.g. the operator as job
  chaosguard-metrics, for the dashboard's and the rules' queries).
- `RecordingServer`: a tiny HTTP(S) server that records each request's path and headers and
  either forwards it to an upstream (a counting reverse proxy), answers a canned response, or
  answers only after a delay (a slow Prometheus).
- `make_tls_files`: a throwaway CA and a server certificate for 127.0.0.1.

Nothing here imports chaosguard: the fixture checks Prometheus with plain urllib, so a bug in the
client under test cannot hide behind the fixture.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from chaosguard.admission.webhook_tls import ensure_tls
from localcluster.wait import wait_for

PROMETHEUS_BINARY = os.environ.get("CHAOSGUARD_PROMETHEUS", "/usr/bin/prometheus")
JOB = "demo"

Series = list[tuple[dict[str, str], float]]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prometheus_available() -> bool:
    return os.access(PROMETHEUS_BINARY, os.X_OK)


def instant_query(base_url: str, query: str, timeout: float = 2.0) -> Series:
    """/api/v1/query with plain urllib: [(labels, value)], a scalar as ({}, value)."""
    url = f"{base_url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise AssertionError(f"query {query!r} failed: {body}")
    data = body["data"]
    if data["resultType"] == "scalar":
        return [({}, float(data["result"][1]))]
    if data["resultType"] != "vector":
        raise AssertionError(f"query {query!r} returned a {data['resultType']}, not an instant vector")
    return [(dict(item["metric"]), float(item["value"][1])) for item in data["result"]]


# --------------------------------------------------------------------------- the scraped target


class MetricsTarget:
    """Metrics a test can flip; scraped by `PrometheusServer` as job `demo`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.error_ratio = Gauge("demo_error_ratio", "Share of failed requests.", ["app"], registry=self.registry)
        self.latency = Gauge("demo_latency_seconds", "p99 request latency.", ["app"], registry=self.registry)
        self.requests = Counter("demo_http_requests", "Requests served.", ["app", "code"], registry=self.registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsTarget:
        server, thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("MetricsTarget is not started")
        return f"127.0.0.1:{self._server.server_port}"

    def set_error_ratio(self, value: float, app: str = "checkout") -> None:
        self.error_ratio.labels(app=app).set(value)

    def set_latency(self, seconds: float, app: str = "checkout") -> None:
        self.latency.labels(app=app).set(seconds)

    def add_requests(self, count: float, app: str = "checkout", code: str = "200") -> None:
        self.requests.labels(app=app, code=code).inc(count)

    def remove(self, app: str) -> None:
        """Stops exposing every gauge series of `app` (the series goes stale in Prometheus)."""
        for gauge in (self.error_ratio, self.latency):
            with contextlib.suppress(KeyError):
                gauge.remove(app)

    def __enter__(self) -> MetricsTarget:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- Prometheus itself


class ScrapeTarget(Protocol):
    """Anything Prometheus can scrape: a MetricsTarget, an operator's metrics endpoint."""

    @property
    def address(self) -> str: ...


class PrometheusError(RuntimeError):
    pass


class PrometheusServer:
    """A Prometheus process of our own on 127.0.0.1:<port>, scraping `targets` every second."""

    def __init__(
        self,
        workdir: Path,
        targets: Sequence[MetricsTarget],
        *,
        binary: str = PROMETHEUS_BINARY,
        port: int | None = None,
        startup_timeout: float = 60.0,
        host: str = "127.0.0.1",
        jobs: Mapping[str, Sequence[ScrapeTarget]] | None = None,
        rule_groups: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.workdir = Path(workdir)
        self.host = host  # e.g. a real node's address, where pods reach it (make sandbox)
        self.targets = list(targets)
        # More scrape jobs by name, e.g. {"chaosguard-metrics": [the operator]}, for queries that select a job.
        self.jobs = {name: list(members) for name, members in (jobs or {}).items()}
        self.binary = binary
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.config_path = self.workdir / "prometheus.yml"
        self.storage_path = self.workdir / "data"
        self.log_path = self.workdir / "prometheus.log"
        # Recording and alerting rules, as Prometheus rule groups ({name, rules: [...]}), evaluated every 1s.
        self.rule_groups = [dict(group) for group in rule_groups]
        self.rules_path = self.workdir / "rules.json"
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: list[float] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def write_config(self) -> None:
        # JSON is YAML: no dependency on a YAML writer.
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": [t.address for t in self.targets]}]},
                *(
                    {"job_name": name, "static_configs": [{"targets": [t.address for t in members]}]}
                    for name, members in self.jobs.items()
                ),
            ],
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.rule_groups:
            self.rules_path.write_text(json.dumps({"groups": self.rule_groups}, indent=2))
            config["rule_files"] = [str(self.rules_path)]
        self.config_path.write_text(json.dumps(config, indent=2))

    def start(self) -> PrometheusServer:
        if self.process is not None and self.process.poll() is None:
            raise PrometheusError("Prometheus is already running")
        if not os.access(self.binary, os.X_OK):
            raise PrometheusError(f"{self.binary} is not an executable; install Debian's `prometheus` package")
        self.write_config()
        self.storage_path.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.storage_path}",
                    f"--web.listen-address={self.host}:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C on the test run is handled by our teardown, not Prometheus
            )
        try:
            wait_for(self._ready, timeout=self.startup_timeout, what=f"{self.url}/-/ready", describe=self._log_tail)
            wait_for(
                self._targets_up,
                timeout=self.startup_timeout,
                what=f"{len(self.targets)} scrape target(s) up",
                describe=self._log_tail,
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds.append(time.monotonic() - began)
        return self

    def _check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise PrometheusError(f"Prometheus exited (code {code}); {self._log_tail()}")

    def _ready(self) -> bool:
        self._check_alive()
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _targets_up(self) -> bool:
        self._check_alive()
        up = instant_query(self.url, f'up{{job="{JOB}"}} == 1')
        extra = [instant_query(self.url, f'up{{job="{name}"}} == 1') for name in self.jobs]
        return len(up) == len(self.targets) and all(
            len(found) == len(members) for found, members in zip(extra, self.jobs.values(), strict=True)
        )

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "no log"
        return f"log {self.log_path}:\n" + "\n".join(text)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def query(self, query: str) -> Series:
        return instant_query(self.url, query)

    def wait_for_series(self, query: str, predicate: Callable[[Series], bool], timeout: float = 15.0) -> Series:
        """Polls the query until `predicate(series)` holds; returns the series."""
        last: list[Series] = [[]]

        def check() -> tuple[Series] | None:  # a tuple, so that a matching empty result is truthy
            last[0] = self.query(query)
            return (last[0],) if predicate(last[0]) else None

        found = wait_for(check, timeout=timeout, what=f"{query!r} to match", describe=lambda: f"last: {last[0]}")
        assert found is not None
        return found[0]

    def wait_for_value(self, query: str, predicate: Callable[[float], bool], timeout: float = 15.0) -> float:
        """Polls until the query returns exactly one series whose value satisfies `predicate`."""
        series = self.wait_for_series(query, lambda s: len(s) == 1 and predicate(s[0][1]), timeout)
        return series[0][1]

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def equals(expected: float) -> Callable[[float], bool]:
    """A `wait_for_value` predicate that also accepts NaN when NaN is expected."""
    if math.isnan(expected):
        return math.isnan
    return lambda value: value == expected


# --------------------------------------------------------------------------- a recording HTTP server


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


class RecordingServer:
    """Records requests; forwards them to `upstream`, or answers `response`; after `delay` seconds.

    With `trickle`, the body is sent one byte every `trickle` seconds (a server that is alive but
    never finishes). `headers` are added to every answer (e.g. a Location, for a redirect).
    Waits are on an Event, so `stop()` releases handlers still holding an answer.
    """

    def __init__(
        self,
        *,
        upstream: str | None = None,
        response: tuple[int, str, bytes] | None = None,
        delay: float = 0.0,
        trickle: float = 0.0,
        tls: tuple[Path, Path] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if (upstream is None) == (response is None):
            raise ValueError("give exactly one of upstream or response")
        self.upstream = upstream
        self.response = response
        self.delay = delay
        self.trickle = trickle
        self.headers = dict(headers or {})
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    def queries(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == "/api/v1/query"]

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with owner._lock:
                    owner.requests.append(
                        RecordedRequest(
                            self.command,
                            parsed.path,
                            urllib.parse.parse_qs(parsed.query),
                            {k.lower(): v for k, v in self.headers.items()},
                        )
                    )
                if owner.delay and owner._stopping.wait(owner.delay):
                    return  # stopping: drop the connection without an answer
                status, content_type, payload = owner._answer(self.command, self.path, body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in owner.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    if not owner.trickle:
                        self.wfile.write(payload)
                        return
                    for index in range(len(payload)):  # one byte at a time: no read timeout ever fires
                        self.wfile.write(payload[index : index + 1])
                        self.wfile.flush()
                        if owner._stopping.wait(owner.trickle):
                            return
                except OSError:
                    pass  # the client gave up (timeout): that is the point of a slow server

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _answer(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        if self.response is not None:
            return self.response
        assert self.upstream is not None
        request = urllib.request.Request(f"{self.upstream}{path}", data=body or None, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as upstream:
                return upstream.status, upstream.headers.get("Content-Type", ""), upstream.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Content-Type", ""), error.read()

    def start(self) -> RecordingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- TLS material


@dataclass(frozen=True)
class TlsFiles:
    ca_pem: str
    ca_path: Path
    cert_path: Path
    key_path: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it."""
    files = ensure_tls(directory, ["127.0.0.1", "localhost"])
    return TlsFiles(files.cafile.read_text(), files.cafile, files.certfile, files.keyfile)
