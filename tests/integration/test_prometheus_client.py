"""chaosguard.clients.prometheus against a real Prometheus (and small real HTTP servers for the edge cases)."""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chaosguard.api.models import OnUnavailable, PrometheusEndpoint, SteadyStateCondition
from chaosguard.clients.prometheus import (
    WALL_CLOCK_GRACE,
    Endpoint,
    QueryBatcher,
    QueryRequest,
    query,
    query_async,
    query_many,
)
from chaosguard.decisions.slo import (
    GuardState,
    QueryOk,
    QueryOutcome,
    QueryUnavailable,
    UnavailableKind,
    VerdictKind,
    evaluate,
)
from localcluster.prometheus import (
    MetricsTarget,
    PrometheusServer,
    RecordingServer,
    TlsFiles,
    equals,
    free_port,
    make_tls_files,
    prometheus_available,
)

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(not prometheus_available(), reason="needs /usr/bin/prometheus (Debian package prometheus)"),
]

CHECKOUT = 'demo_error_ratio{app="checkout"}'


@pytest.fixture(scope="module")
def target() -> Iterator[MetricsTarget]:
    with MetricsTarget() as metrics:
        metrics.set_error_ratio(0.001, app="checkout")
        metrics.set_error_ratio(0.002, app="cart")
        metrics.set_latency(0.12, app="checkout")
        metrics.add_requests(100, app="checkout", code="200")
        metrics.add_requests(3, app="checkout", code="500")
        yield metrics


@pytest.fixture(scope="module")
def prometheus(target: MetricsTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with PrometheusServer(tmp_path_factory.mktemp("prometheus"), [target]) as server:
        yield server


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def ok_samples(outcome: QueryOutcome) -> dict[str, float]:
    assert isinstance(outcome, QueryOk), outcome
    return {",".join(f"{k}={v}" for k, v in sorted(s.labels.items())): s.value for s in outcome.samples}


def flip(prometheus: PrometheusServer, target: MetricsTarget, app: str, value: float) -> None:
    target.set_error_ratio(value, app=app)
    prometheus.wait_for_value(f'demo_error_ratio{{app="{app}"}}', equals(value))


# --------------------------------------------------------------------------- values


def test_a_query_returns_the_flipped_value(prometheus: PrometheusServer, target: MetricsTarget) -> None:
    endpoint = Endpoint.of(prometheus.url, timeout=2)
    try:
        for value in (0.5, 0.0042):
            flip(prometheus, target, "checkout", value)
            outcome = query(QueryRequest(endpoint, CHECKOUT))
            assert ok_samples(outcome) == {
                f"__name__=demo_error_ratio,app=checkout,instance={target.address},job=demo": value
            }
    finally:
        flip(prometheus, target, "checkout", 0.001)


def test_several_series_come_back_with_their_labels(prometheus: PrometheusServer) -> None:
    endpoint = Endpoint.of(prometheus.url)
    outcome = query(QueryRequest(endpoint, "sum by (app) (demo_error_ratio)"))
    assert ok_samples(outcome) == {"app=cart": 0.002, "app=checkout": 0.001}
    outcome = query(QueryRequest(endpoint, 'sum by (code) (demo_http_requests_total{app="checkout"})'))
    assert ok_samples(outcome) == {"code=200": 100.0, "code=500": 3.0}
    assert ok_samples(query(QueryRequest(endpoint, "scalar(sum(demo_error_ratio)) * 1000"))) == {"": 3.0}


def test_a_flipped_value_breaches_the_guard_end_to_end(prometheus: PrometheusServer, target: MetricsTarget) -> None:
    condition = SteadyStateCondition.model_validate(
        {"name": "checkout-error-ratio", "query": CHECKOUT, "operator": "<", "threshold": 0.01}
    )
    endpoint = Endpoint.from_spec(PrometheusEndpoint(url=prometheus.url))
    try:
        flip(prometheus, target, "checkout", 0.034)
        outcome = query(QueryRequest(endpoint, condition.query))
        now = datetime.now(UTC)
        verdict = evaluate([condition], {condition.name: outcome}, GuardState(), now, OnUnavailable.ABORT)
        assert verdict.kind is VerdictKind.BREACHED and verdict.abort
        assert verdict.message.startswith(
            f'SLI checkout-error-ratio breached: value 0.034 demo_error_ratio{{app="checkout",'
            f'instance="{target.address}",job="demo"}} is not < 0.01'
        )
        flip(prometheus, target, "checkout", math.nan)
        outcome = query(QueryRequest(endpoint, condition.query))
        verdict = evaluate([condition], {condition.name: outcome}, GuardState(), now, OnUnavailable.CONTINUE)
        assert verdict.kind is VerdictKind.UNAVAILABLE and not verdict.abort
        assert verdict.unavailable[0].kind is UnavailableKind.NAN
    finally:
        flip(prometheus, target, "checkout", 0.001)


# --------------------------------------------------------------------------- unavailable


def test_empty_result_is_unavailable(prometheus: PrometheusServer) -> None:
    outcome = query(QueryRequest(Endpoint.of(prometheus.url), 'demo_error_ratio{app="no-such-app"}'))
    assert isinstance(outcome, QueryUnavailable) and outcome.kind is UnavailableKind.EMPTY
    assert "returned no series" in outcome.detail and "no-such-app" in outcome.detail


def test_promql_error_is_unavailable_with_prometheus_error_type_only(prometheus: PrometheusServer) -> None:
    request = QueryRequest(Endpoint.of(prometheus.url), "sum(demo_error_ratio")
    outcome = query(request)
    assert isinstance(outcome, QueryUnavailable) and outcome.kind is UnavailableKind.HTTP_ERROR
    assert outcome.detail == (
        f"{prometheus.url} answered HTTP 400 Bad Request, errorType bad_data (its body is not shown); "
        "Prometheus refuses a query it cannot parse or evaluate: try the query in its UI"
    )
    assert asyncio.run(query_async(request)) == outcome


def test_a_range_vector_is_refused_with_a_hint(prometheus: PrometheusServer) -> None:
    outcome = query(QueryRequest(Endpoint.of(prometheus.url), "demo_error_ratio[5s]"))
    assert isinstance(outcome, QueryUnavailable) and outcome.kind is UnavailableKind.BAD_RESPONSE
    assert "range vector" in outcome.detail


def test_unreachable_prometheus_is_unavailable_fast_and_recovers(prometheus: PrometheusServer) -> None:
    endpoint = Endpoint.of(prometheus.url, timeout=2)
    request = QueryRequest(endpoint, CHECKOUT)
    prometheus.stop()
    try:
        began = time.monotonic()
        outcome = query(request)
        elapsed = time.monotonic() - began
        assert isinstance(outcome, QueryUnavailable) and outcome.kind is UnavailableKind.UNREACHABLE
        assert outcome.detail == f"cannot connect to {prometheus.url}: Connection refused"
        assert elapsed < 1.0, f"no retries with backoff: took {elapsed:.2f}s"
        async_outcome = asyncio.run(query_async(request))
        assert async_outcome == outcome
    finally:
        prometheus.start()
    assert ok_samples(query(request))  # the same URL answers again


def test_unknown_host_is_unreachable() -> None:
    outcome = query(QueryRequest(Endpoint.of("http://no-such-host.invalid:9090", timeout=2), "up"))
    assert isinstance(outcome, QueryUnavailable) and outcome.kind is UnavailableKind.UNREACHABLE
    assert outcome.detail.startswith("cannot connect to http://no-such-host.invalid:9090: ")


def test_a_slow_prometheus_is_bounded_by_the_timeout() -> None:
    timeout = 0.5
    with RecordingServer(response=(200, "application/json", b"{}"), delay=30) as slow:
        request = QueryRequest(Endpoint.of(slow.url, timeout=timeout), "up")
        began = time.monotonic()
        outcome = asyncio.run(query_async(request))
        elapsed = time.monotonic() - began
        assert isinstance(outcome, QueryUnavailable) and outcome.kind is UnavailableKind.TIMEOUT
        assert outcome.detail == f"no answer from {slow.url} within 0.5s (the endpoint's timeout)"
        assert timeout <= elapsed < timeout + WALL_CLOCK_GRACE + 0.3, elapsed
        # the blocking entry point is bounded by requests' read timeout
        began = time.monotonic()
        assert query(request) == outcome
        assert time.monotonic() - began < timeout + 0.3
        # Prometheus is asked to give up too
        assert slow.queries()[0].query["timeout"] == ["500ms"]


def test_a_server_that_trickles_bytes_is_cut_off_at_the_timeout() -> None:
    """requests' read timeout is per read; the async entry points also bound the total time."""
    timeout = 0.5
    body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
    with RecordingServer(response=(200, "application/json", body), trickle=0.1) as trickling:
        began = time.monotonic()
        outcome = asyncio.run(query_async(QueryRequest(Endpoint.of(trickling.url, timeout=timeout), "up")))
        elapsed = time.monotonic() - began
        assert isinstance(outcome, QueryUnavailable) and outcome.kind is UnavailableKind.TIMEOUT
        assert elapsed < timeout + WALL_CLOCK_GRACE + 0.3, elapsed


def test_a_cancelled_caller_does_not_cancel_the_shared_query(prometheus: PrometheusServer) -> None:
    with RecordingServer(upstream=prometheus.url, delay=0.3) as proxy:
        request = QueryRequest(Endpoint.of(proxy.url), CHECKOUT)

        async def tick() -> QueryOutcome:
            async with QueryBatcher() as batcher:
                first = asyncio.ensure_future(batcher.query(request))
                second = asyncio.ensure_future(batcher.query(request))
                await asyncio.sleep(0)  # let both join the same query in flight
                first.cancel()
                return await second

        assert ok_samples(asyncio.run(tick()))
        assert len(proxy.queries()) == 1


def test_slow_queries_in_one_tick_run_concurrently() -> None:
    timeout = 0.5
    with RecordingServer(response=(200, "application/json", b"{}"), delay=30) as slow:
        endpoint = Endpoint.of(slow.url, timeout=timeout)
        requests = [QueryRequest(endpoint, f"up{{n='{n}'}}") for n in range(4)]
        began = time.monotonic()
        outcomes = asyncio.run(query_many(requests))
        elapsed = time.monotonic() - began
        assert [o.kind for o in outcomes if isinstance(o, QueryUnavailable)] == [UnavailableKind.TIMEOUT] * 4
        assert elapsed < 2 * timeout, f"4 slow queries took {elapsed:.2f}s: not concurrent"
        assert len(slow.queries()) == 4


def test_http_errors_are_not_retried() -> None:
    with RecordingServer(response=(503, "text/plain", b"overloaded, try later")) as failing:
        began = time.monotonic()
        outcome = query(QueryRequest(Endpoint.of(failing.url), "up"))
        assert time.monotonic() - began < 1.0
        assert isinstance(outcome, QueryUnavailable) and outcome.kind is UnavailableKind.HTTP_ERROR
        assert outcome.detail == f"{failing.url} answered HTTP 503 Service Unavailable (its body is not shown)"
        assert len(failing.queries()) == 1


def test_something_that_is_not_prometheus_is_a_bad_response() -> None:
    with RecordingServer(response=(200, "text/html", b"<html>login</html>")) as html:
        outcome = query(QueryRequest(Endpoint.of(html.url), "up"))
        assert isinstance(outcome, QueryUnavailable) and outcome.kind is UnavailableKind.BAD_RESPONSE
        assert outcome.detail.startswith(f"{html.url} did not answer with Prometheus API JSON")


def test_nothing_listening_on_a_free_port_is_refused_quickly() -> None:
    outcome = query(QueryRequest(Endpoint.of(f"http://127.0.0.1:{free_port()}"), "up"))
    assert isinstance(outcome, QueryUnavailable) and outcome.kind is UnavailableKind.UNREACHABLE


# --------------------------------------------------------------------------- batching


def test_identical_queries_in_one_tick_hit_prometheus_once(prometheus: PrometheusServer) -> None:
    with RecordingServer(upstream=prometheus.url) as proxy:
        # ten experiments each build their own (equal) endpoint and request
        requests = [QueryRequest(Endpoint.of(proxy.url + "/", timeout=2), CHECKOUT) for _ in range(10)]
        outcomes = asyncio.run(query_many(requests))
        assert len(proxy.queries()) == 1
        assert all(outcome == outcomes[0] for outcome in outcomes)
        assert list(ok_samples(outcomes[0]).values()) == [0.001]

        other = Endpoint.of(proxy.url, timeout=2, headers={"X-Scope-OrgID": "team-b"})
        mixed = [
            *requests,
            QueryRequest(requests[0].endpoint, 'demo_error_ratio{app="cart"}'),
            QueryRequest(other, CHECKOUT),
            QueryRequest(other, CHECKOUT),
        ]
        outcomes = asyncio.run(query_many(mixed))
        assert len(proxy.queries()) == 1 + 3
        assert [list(ok_samples(o).values()) for o in outcomes[9:]] == [[0.001], [0.002], [0.001], [0.001]]


def test_concurrent_callers_share_one_query_in_flight(prometheus: PrometheusServer) -> None:
    with RecordingServer(upstream=prometheus.url, delay=0.3) as proxy:

        async def tick() -> tuple[list[QueryOutcome], int]:
            async with QueryBatcher() as batcher:
                # independent experiment daemons, each asking for itself
                outcomes = await asyncio.gather(
                    *(batcher.query(QueryRequest(Endpoint.of(proxy.url), CHECKOUT)) for _ in range(10))
                )
                return list(outcomes), batcher.queries_sent

        outcomes, sent = asyncio.run(tick())
        assert sent == 1 and len(proxy.queries()) == 1
        assert all(ok_samples(o) == ok_samples(outcomes[0]) for o in outcomes)


def test_recent_answers_are_reused_only_within_the_window(prometheus: PrometheusServer) -> None:
    with RecordingServer(upstream=prometheus.url) as proxy:
        request = QueryRequest(Endpoint.of(proxy.url), CHECKOUT)
        now = [100.0]

        async def ticks() -> None:
            async with QueryBatcher(reuse_within=0.5, clock=lambda: now[0]) as batcher:
                await batcher.query(request)
                now[0] += 0.4
                await batcher.query(request)
                assert len(proxy.queries()) == 1
                now[0] += 0.1
                await batcher.query(request)
                assert len(proxy.queries()) == 2

        asyncio.run(ticks())


# --------------------------------------------------------------------------- headers, token, TLS


def test_headers_and_bearer_token_are_sent(prometheus: PrometheusServer) -> None:
    with RecordingServer(upstream=prometheus.url) as proxy:
        spec = PrometheusEndpoint.model_validate(
            {"url": proxy.url, "headers": {"X-Scope-OrgID": "tenant-a", "Authorization": "Basic dXNlcg=="}}
        )
        endpoint = Endpoint.from_spec(spec, bearer_token="s3cret-token\n")  # as read from a Secret
        assert "s3cret" not in repr(endpoint)
        outcome = query(QueryRequest(endpoint, CHECKOUT))
        assert ok_samples(outcome)
        [recorded] = proxy.queries()
        assert recorded.headers["x-scope-orgid"] == "tenant-a"
        assert recorded.headers["authorization"] == "Bearer s3cret-token"
        assert recorded.query["query"] == [CHECKOUT]


def test_tls_with_a_ca_bundle_given_as_text_or_path(prometheus: PrometheusServer, tls: TlsFiles) -> None:
    with RecordingServer(upstream=prometheus.url, tls=(tls.cert_path, tls.key_path)) as https:
        assert https.url.startswith("https://")
        for ca in (tls.ca_pem, str(tls.ca_path)):
            assert ok_samples(query(QueryRequest(Endpoint.of(https.url, ca=ca), CHECKOUT)))
        untrusted = query(QueryRequest(Endpoint.of(https.url), CHECKOUT))
        assert isinstance(untrusted, QueryUnavailable) and untrusted.kind is UnavailableKind.UNREACHABLE
        assert "TLS certificate verification failed" in untrusted.detail
        missing = query(QueryRequest(Endpoint.of(https.url, ca=str(Path(tls.ca_path).with_name("nope.pem"))), "up"))
        assert isinstance(missing, QueryUnavailable) and missing.kind is UnavailableKind.INVALID_REQUEST
        assert len(https.queries()) == 2


# --------------------------------------------------------------------------- what an endpoint may learn, and say

SECRET_BODY = b'{"errorType": "internal-secret", "error": "db password hunter2-internal-only"}'


@pytest.mark.parametrize("status", [500, 404, 200])
def test_an_answer_body_never_reaches_the_outcome(status: int) -> None:
    """The operator asks from inside the cluster: an internal service's answer is not the author's to read."""
    with RecordingServer(response=(status, "application/json", SECRET_BODY), headers={"X-Leak": "hunter2"}) as inner:
        request = QueryRequest(Endpoint.of(inner.url), "up")
        for outcome in (query(request), asyncio.run(query_async(request))):
            assert isinstance(outcome, QueryUnavailable), outcome
            assert "hunter2" not in outcome.detail and "internal-secret" not in outcome.detail, outcome.detail
            if status != 200:
                assert outcome.detail.startswith(f"{inner.url} answered HTTP {status} "), outcome.detail


def test_a_server_that_does_not_speak_http_is_not_quoted() -> None:
    """A banner (an SSH or Redis port) would otherwise come back in the exception's text."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                with connection:
                    connection.recv(4096)
                    connection.sendall(b"SSH-2.0-hunter2-banner\r\n")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            request = QueryRequest(Endpoint.of(url), "up")
            for outcome in (query(request), asyncio.run(query_async(request))):
                assert isinstance(outcome, QueryUnavailable), outcome
                assert "hunter2" not in outcome.detail, outcome.detail
                assert "not valid HTTP" in outcome.detail or "closed the connection" in outcome.detail, outcome.detail
        finally:
            stop.set()
            listener.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_with_the_token(code: int) -> None:
    with RecordingServer(response=(200, "application/json", b"{}")) as foreign:
        location = f"{foreign.url}/api/v1/query?query=up"
        with RecordingServer(response=(code, "text/plain", b""), headers={"Location": location}) as allowed:
            request = QueryRequest(Endpoint.of(allowed.url, bearer_token="t0ken-for-allowed"), "up")
            for outcome in (query(request), asyncio.run(query_async(request))):
                assert isinstance(outcome, QueryUnavailable) and outcome.kind is UnavailableKind.HTTP_ERROR
                assert outcome.detail.startswith(f"{allowed.url} answered HTTP {code} "), outcome.detail
                assert "redirects are not followed" in outcome.detail
            assert [r.headers.get("authorization") for r in allowed.queries()] == ["Bearer t0ken-for-allowed"] * 2
        assert foreign.requests == []
