"""The only Prometheus HTTP client in chaosguard.

It runs PromQL instant queries and turns every answer into a `chaosguard.decisions.slo.QueryOutcome`:
samples, or unavailable with a reason a person can act on. It never raises for a failed query.
Two transports give the same outcomes and messages: the blocking `query` (prometheus-api-client,
for the CLI) and `QueryBatcher` (aiohttp on the event loop, for the operator's guard, where a
thread and a fresh HTTP session per query cost more CPU than hundreds of runs can afford).

Bounded, always:
- no retries (the library's default retries three times with backoff, which would turn a down
  Prometheus into many seconds of blindness; the guard's next tick is the retry);
- the HTTP client gets the endpoint's timeout, Prometheus gets it as the query's `timeout`
  parameter, and the async entry points also cap the wall-clock time at
  `timeout + WALL_CLOCK_GRACE`, so even a server that trickles bytes cannot hold a tick.

`QueryBatcher` serves the operator: identical (endpoint, query) pairs asked for at once are sent
once and the answer is shared; distinct pairs run concurrently over aiohttp on the event loop
(the blocking `query` stays for the CLI, one query at a time).

Credentials are values: reading the bearer token or CA bundle from a Secret is the caller's job.

What an endpoint says reaches the caller (and from there status and Events, which the experiment's
author reads) only as a status code with its standard reason phrase, or a fixed description of what
went wrong: never the body, the server's own reason phrase or a line it sent. The operator queries
from inside the cluster, so the URL may be an internal service whose answers are not the author's
to read. Redirects are never followed: a token sent to an allowed URL must not travel on to the
address its answer names (and a Prometheus API does not redirect its queries).
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import http
import http.client
import json
import math
import os
import re
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import requests
import urllib3
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from chaosguard.api.durations import to_seconds
from chaosguard.api.models import PrometheusEndpoint
from chaosguard.decisions.slo import QueryOk, QueryOutcome, QueryUnavailable, Sample, UnavailableKind

DEFAULT_TIMEOUT = 2.0
WALL_CLOCK_GRACE = 0.25
DEFAULT_MAX_CONNECTIONS = 100
_DETAIL_LIMIT = 300


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Endpoint:
    """Where and how to query. Hashable, so identical endpoints are batched together.

    `ca` is a PEM CA bundle, either its text or a path to it. `bearer_token` is sent as
    `Authorization: Bearer …` and wins over an Authorization entry in `headers`. Neither is
    shown in repr().
    """

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    bearer_token: str | None = field(default=None, repr=False)
    ca: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def of(
        cls,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
        ca: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Endpoint:
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        token = bearer_token.strip() if bearer_token is not None else None
        return cls(
            url=url.rstrip("/"),
            headers=tuple(sorted((headers or {}).items())),
            bearer_token=token or None,
            ca=ca or None,
            timeout=float(timeout),
        )

    @classmethod
    def from_spec(cls, spec: PrometheusEndpoint, *, bearer_token: str | None = None, ca: str | None = None) -> Endpoint:
        """From `steadyState.prometheus`, with the Secret values already read by the caller.

        A timeout of `0` means the default (2s): an unbounded query is never what a guard wants.
        """
        seconds = to_seconds(spec.timeout)
        return cls.of(
            spec.url,
            headers=spec.headers,
            bearer_token=bearer_token,
            ca=ca,
            timeout=seconds if seconds > 0 else DEFAULT_TIMEOUT,
        )

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.bearer_token:
            for name in [name for name in headers if name.lower() == "authorization"]:
                del headers[name]
            headers["Authorization"] = f"Bearer {self.bearer_token}"
        return headers


@dataclass(frozen=True)
class QueryRequest:
    endpoint: Endpoint
    query: str


# --------------------------------------------------------------------------- CA bundles given as text

_ca_lock = threading.Lock()
_ca_dir: str | None = None
_ca_files: dict[str, str] = {}


def _remove_ca_dir() -> None:
    if _ca_dir is not None:
        shutil.rmtree(_ca_dir, ignore_errors=True)


def _ca_path(ca: str) -> str:
    """requests wants a file: PEM text is written once (per content) to a private temp file."""
    global _ca_dir
    if "-----BEGIN" not in ca:
        return ca
    digest = hashlib.sha256(ca.encode()).hexdigest()
    with _ca_lock:
        path = _ca_files.get(digest)
        if path is None or not os.path.exists(path):
            if _ca_dir is None or not os.path.isdir(_ca_dir):
                _ca_dir = tempfile.mkdtemp(prefix="chaosguard-ca-")
                atexit.register(_remove_ca_dir)
            path = os.path.join(_ca_dir, f"{digest}.pem")
            with open(path, "w", encoding="ascii") as handle:
                handle.write(ca)
            _ca_files[digest] = path
        return path


# --------------------------------------------------------------------------- one query, blocking

# read=False (not 0) re-raises the original error, so a read timeout stays a requests ReadTimeout;
# connect=0 fails at once and requests maps it to ConnectionError/ConnectTimeout.
_NO_RETRY = Retry(total=None, connect=0, read=False, status=0, other=0, redirect=0, raise_on_status=False)


class _NoRedirectSession(requests.Session):
    """A session that hands back a redirect as the answer instead of following it."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"


def _root_cause(error: BaseException) -> BaseException:
    seen: set[int] = set()
    current = error
    while id(current) not in seen:
        seen.add(id(current))
        reason = getattr(current, "reason", None)
        following = current.__cause__ or current.__context__
        if isinstance(reason, BaseException):
            following = reason
        if following is None and current.args and isinstance(current.args[0], BaseException):
            following = current.args[0]
        if following is None:
            break
        current = following
    return current


def _describe(error: BaseException) -> str:
    cause = _root_cause(error)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {cause.verify_message or cause.reason}"
    if isinstance(cause, ssl.SSLError):
        return f"TLS error: {cause.reason or cause}"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    server_said = _server_fault(cause)
    if server_said is not None:
        return server_said
    # urllib3 wraps the useful part: "...: Failed to establish a new connection: [Errno 111] ..."
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(cause))
    # Otherwise only the error's kind: its text may quote what the server sent.
    return _truncate(match.group(1)) if match else type(cause).__name__


def _server_fault(cause: BaseException) -> str | None:
    """A fixed description of an answer that was not HTTP, or was cut short: the exceptions' own
    texts quote what the server sent (a status line, a banner), which must not reach status."""
    if isinstance(cause, http.client.RemoteDisconnected | aiohttp.ServerDisconnectedError):
        return "the server closed the connection without an answer"
    if isinstance(
        cause,
        http.client.HTTPException
        | aiohttp.ClientResponseError
        | aiohttp.http_exceptions.HttpProcessingError
        | urllib3.exceptions.ProtocolError,
    ):
        return "the answer was not valid HTTP"
    if isinstance(cause, aiohttp.ClientPayloadError):
        return "the answer's body was cut short or malformed"
    return None


def http_status_text(status: int) -> str:
    """`HTTP 503 Service Unavailable`: the standard phrase, never the one the server sent."""
    try:
        return f"HTTP {status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


# Prometheus's errorType values (web/api/v1): a word from this list is all of an error body that is
# shown, so that a bad query still says "bad_data" while nothing the server wrote is passed on.
_ERROR_TYPES = frozenset(
    {"bad_data", "execution", "timeout", "canceled", "internal", "unavailable", "not_found", "not_acceptable"}
)
_ERROR_BODY_LIMIT = 64 * 1024


def _error_type(body: bytes) -> str | None:
    try:
        payload = json.loads(body[:_ERROR_BODY_LIMIT])
    except ValueError:
        return None
    kind = payload.get("errorType") if isinstance(payload, dict) else None
    return kind if isinstance(kind, str) and kind in _ERROR_TYPES else None


def _status_hint(status: int) -> str:
    if 300 <= status < 400:
        return "; redirects are not followed: set the url to the address Prometheus answers at itself"
    if status in (401, 403):
        return "; check the endpoint's bearerTokenSecret"
    if status in (400, 422):
        return "; Prometheus refuses a query it cannot parse or evaluate: try the query in its UI"
    return ""


def _status_error(status: int, url: str, body: bytes = b"") -> QueryUnavailable:
    kind = _error_type(body)
    said = f", errorType {kind}" if kind else ""
    return QueryUnavailable(
        UnavailableKind.HTTP_ERROR,
        f"{url} answered {http_status_text(status)}{said} (its body is not shown){_status_hint(status)}",
    )


def _http_error(error: PrometheusApiClientException, url: str, response: requests.Response | None) -> QueryUnavailable:
    match = re.match(r"HTTP Status Code (\d+) ", str(error))
    if not match:
        return QueryUnavailable(UnavailableKind.HTTP_ERROR, f"{url} answered with an error (its body is not shown)")
    return _status_error(int(match.group(1)), url, response.content if response is not None else b"")


def _parse_value(raw: Any) -> float:
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise ValueError("a sample is not [timestamp, value]")
    try:
        return float(raw[1])
    except (TypeError, ValueError):
        raise ValueError("a sample's value is not a number") from None


def parse_result(data: Any, query: str) -> QueryOutcome:
    """`data.result` of /api/v1/query (as custom_query returns it) → samples or unavailable."""
    try:
        if isinstance(data, list) and len(data) == 2 and not isinstance(data[0], dict):
            return QueryOk((Sample({}, _parse_value(data)),))  # a scalar result: [ts, "value"]
        if not isinstance(data, list):
            raise ValueError(f"expected a list, got {type(data).__name__}")
        if not data:
            return QueryUnavailable(
                UnavailableKind.EMPTY, f"the query returned no series (no data or wrong labels): {query}"
            )
        samples: list[Sample] = []
        for item in data:
            if not isinstance(item, dict):
                raise ValueError("a series is not an object")
            if "values" in item and "value" not in item:
                return QueryUnavailable(
                    UnavailableKind.BAD_RESPONSE,
                    "the query returns a range vector; write an instant query "
                    f"(e.g. wrap it in rate(...) or last_over_time(...)): {query}",
                )
            labels = item.get("metric", {})
            if not isinstance(labels, dict):
                raise ValueError("a series' labels are not an object")
            samples.append(Sample({str(k): str(v) for k, v in labels.items()}, _parse_value(item.get("value"))))
        return QueryOk(tuple(samples))
    except (ValueError, TypeError) as error:
        return QueryUnavailable(
            UnavailableKind.BAD_RESPONSE, f"not a Prometheus instant-query result: {_truncate(str(error))}"
        )


def _timeout(url: str, timeout: float) -> QueryUnavailable:
    return QueryUnavailable(
        UnavailableKind.TIMEOUT, f"no answer from {url} within {timeout:g}s (the endpoint's timeout)"
    )


def query(request: QueryRequest) -> QueryOutcome:
    """Runs one instant query, blocking; never raises.

    Bounded by the endpoint's timeout for connecting and for each read (requests' semantics);
    the async entry points additionally cap the total wall-clock time.
    """
    endpoint = request.endpoint
    url = endpoint.url
    timeout = endpoint.timeout
    session = _NoRedirectSession()
    last_response: requests.Response | None = None

    def keep(response: requests.Response, *args: object, **kwargs: object) -> None:
        nonlocal last_response
        last_response = response

    # The library only puts the body in its exception's text; the hook keeps the response itself.
    session.hooks["response"].append(keep)
    try:
        if endpoint.ca:
            session.verify = _ca_path(endpoint.ca)
        client = PrometheusConnect(
            url=url,
            headers=endpoint.request_headers() or None,
            retry=_NO_RETRY,
            session=session,
            timeout=timeout,  # requests takes float seconds
        )
        data = client.custom_query(
            request.query,
            params={"timeout": f"{max(1, round(timeout * 1000))}ms"},  # Prometheus wants whole units
            timeout=(timeout, timeout),  # (connect, read), passed to requests
        )
    except requests.exceptions.Timeout:
        return _timeout(url, timeout)
    except PrometheusApiClientException as error:
        return _http_error(error, url, last_response)
    except requests.exceptions.ConnectionError as error:
        if isinstance(_root_cause(error), TimeoutError | urllib3.exceptions.TimeoutError):
            return _timeout(url, timeout)
        return QueryUnavailable(UnavailableKind.UNREACHABLE, f"cannot connect to {url}: {_describe(error)}")
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.InvalidSchema,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidHeader,
    ) as error:
        return QueryUnavailable(UnavailableKind.INVALID_REQUEST, f"cannot query {url}: {_truncate(str(error))}")
    except requests.exceptions.JSONDecodeError as error:
        return QueryUnavailable(
            UnavailableKind.BAD_RESPONSE, f"{url} did not answer with Prometheus API JSON: {_describe(error)}"
        )
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as error:
        return QueryUnavailable(UnavailableKind.UNREACHABLE, f"cannot query {url}: {_describe(error)}")
    except OSError as error:  # e.g. the CA bundle path does not exist
        return QueryUnavailable(UnavailableKind.INVALID_REQUEST, f"cannot query {url}: {_describe(error)}")
    except (KeyError, TypeError, ValueError) as error:  # 200 but not {"data": {"result": ...}}
        return QueryUnavailable(
            UnavailableKind.BAD_RESPONSE,
            f"{url} did not answer like the Prometheus API ({type(error).__name__})",
        )
    except Exception as error:  # the guard must get an outcome, whatever went wrong
        return QueryUnavailable(
            UnavailableKind.BAD_RESPONSE, f"querying {url} failed: {type(error).__name__}: {_describe(error)}"
        )
    finally:
        session.close()
    return parse_result(data, request.query)


# --------------------------------------------------------------------------- many queries, async

_ssl_contexts: dict[str, ssl.SSLContext] = {}


def _ssl_context(ca: str) -> ssl.SSLContext:
    """One verifying context per CA bundle (text or path), built once: building one parses the CA."""
    context = _ssl_contexts.get(ca)
    if context is None:
        text = "-----BEGIN" in ca
        context = ssl.create_default_context(cadata=ca) if text else ssl.create_default_context(cafile=ca)
        _ssl_contexts[ca] = context
    return context


async def _query_with(session: aiohttp.ClientSession, request: QueryRequest) -> QueryOutcome:
    """One instant query over a shared aiohttp session; never raises. The same outcomes and
    messages as the blocking `query`, bounded in total by the endpoint's timeout."""
    endpoint = request.endpoint
    url, timeout = endpoint.url, endpoint.timeout
    params = {"query": request.query, "timeout": f"{max(1, round(timeout * 1000))}ms"}
    try:
        ssl_option: ssl.SSLContext | bool = _ssl_context(endpoint.ca) if endpoint.ca else True
        async with session.get(
            f"{url}/api/v1/query",
            params=params,
            headers=endpoint.request_headers(),
            ssl=ssl_option,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            if response.status != 200:
                return _status_error(response.status, url, await response.content.read(_ERROR_BODY_LIMIT))
            body = await response.text(errors="replace")
    except (TimeoutError, aiohttp.ServerTimeoutError):
        return _timeout(url, timeout)
    except aiohttp.ClientConnectorCertificateError as error:
        return QueryUnavailable(
            UnavailableKind.UNREACHABLE, f"cannot connect to {url}: {_describe(error.certificate_error)}"
        )
    except aiohttp.ClientConnectorError as error:
        # asyncio words a refused connection "Connect call failed (...)"; the errno says it plainly.
        cause = os.strerror(error.os_error.errno) if error.os_error.errno else _describe(error.os_error)
        return QueryUnavailable(UnavailableKind.UNREACHABLE, f"cannot connect to {url}: {cause}")
    except (aiohttp.InvalidURL, ValueError) as error:
        return QueryUnavailable(UnavailableKind.INVALID_REQUEST, f"cannot query {url}: {_truncate(str(error))}")
    except aiohttp.ClientError as error:
        return QueryUnavailable(UnavailableKind.UNREACHABLE, f"cannot query {url}: {_describe(error)}")
    except OSError as error:  # e.g. the CA bundle path does not exist
        return QueryUnavailable(UnavailableKind.INVALID_REQUEST, f"cannot query {url}: {_describe(error)}")
    try:
        payload = json.loads(body)
    except ValueError:
        return QueryUnavailable(UnavailableKind.BAD_RESPONSE, f"{url} did not answer with Prometheus API JSON")
    try:
        data = payload["data"]["result"]
    except (KeyError, TypeError) as error:
        return QueryUnavailable(
            UnavailableKind.BAD_RESPONSE, f"{url} did not answer like the Prometheus API ({type(error).__name__})"
        )
    return parse_result(data, request.query)


class QueryBatcher:
    """Runs instant queries for the asyncio world, once per distinct (endpoint, query) at a time.

    - `await batcher.query(request)`: if an identical request is already in flight, waits for
      its answer instead of sending another; with `reuse_within > 0`, an answer that completed
      less than that many seconds ago is reused as well (keep it well under the guard interval).
    - `await batcher.query_many(requests)`: one tick's worth; each distinct pair once,
      concurrently; outcomes come back in the order of `requests`.

    Queries go out on the event loop over one aiohttp session with kept-alive connections
    (`max_connections` at once), not on threads: at hundreds of queries a second, a thread and a
    fresh `requests` session per query cost more CPU than the guard may spend. Every query is
    bounded by its endpoint's timeout plus `WALL_CLOCK_GRACE`. Use one batcher per event loop, and
    close it (`async with`, or `await aclose()`).
    """

    def __init__(
        self,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        reuse_within: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._reuse_within = reuse_within
        self._clock = clock
        self._inflight: dict[QueryRequest, asyncio.Task[QueryOutcome]] = {}
        self._recent: dict[QueryRequest, tuple[float, QueryOutcome]] = {}
        self._sent = 0

    @property
    def queries_sent(self) -> int:
        """How many HTTP queries this batcher has started (after de-duplication)."""
        return self._sent

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def _run(self, request: QueryRequest) -> QueryOutcome:
        self._sent += 1
        limit = request.endpoint.timeout + WALL_CLOCK_GRACE
        try:
            return await asyncio.wait_for(_query_with(self._http(), request), timeout=limit)
        except TimeoutError:
            return _timeout(request.endpoint.url, request.endpoint.timeout)
        except Exception as error:  # the guard must get an outcome, whatever went wrong
            return QueryUnavailable(
                UnavailableKind.BAD_RESPONSE,
                f"querying {request.endpoint.url} failed: {type(error).__name__}: {_describe(error)}",
            )

    def _forget(self, request: QueryRequest, task: asyncio.Task[QueryOutcome]) -> None:
        if self._inflight.get(request) is task:
            del self._inflight[request]
        if self._reuse_within > 0 and not task.cancelled() and task.exception() is None:
            self._recent[request] = (self._clock(), task.result())

    async def query(self, request: QueryRequest) -> QueryOutcome:
        if self._reuse_within > 0:
            now = self._clock()
            for stale in [r for r, (at, _) in self._recent.items() if now - at >= self._reuse_within]:
                del self._recent[stale]
            recent = self._recent.get(request)
            if recent is not None:
                return recent[1]
        task = self._inflight.get(request)
        if task is None:
            task = asyncio.ensure_future(self._run(request))
            self._inflight[request] = task
            task.add_done_callback(lambda done: self._forget(request, done))
        # shield: one caller being cancelled must not cancel the query the others wait for
        return await asyncio.shield(task)

    async def query_many(self, requests: Sequence[QueryRequest]) -> list[QueryOutcome]:
        distinct = list(dict.fromkeys(requests))
        outcomes = await asyncio.gather(*(self.query(request) for request in distinct))
        by_request = dict(zip(distinct, outcomes, strict=True))
        return [by_request[request] for request in requests]

    async def aclose(self) -> None:
        """Closes the connections; queries still in flight end with an outcome of their own."""
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> QueryBatcher:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


async def query_many(requests: Sequence[QueryRequest]) -> list[QueryOutcome]:
    """One-shot `QueryBatcher.query_many` with a batcher of its own."""
    async with QueryBatcher() as batcher:
        return await batcher.query_many(requests)


async def query_async(request: QueryRequest) -> QueryOutcome:
    """One query from asyncio code, bounded by the endpoint's timeout (no de-duplication)."""
    return (await query_many([request]))[0]


__all__ = [
    "DEFAULT_TIMEOUT",
    "WALL_CLOCK_GRACE",
    "Endpoint",
    "QueryBatcher",
    "QueryRequest",
    "parse_result",
    "query",
    "query_async",
    "query_many",
]
