"""Asks Prometheus about one experiment's steady state: resolves endpoints (bearer tokens and CAs
from Secrets), sends every condition's query through the operator-wide batcher (identical queries
from concurrent experiments go out once), and hands the answers to the pure `slo.evaluate`.
A Secret that cannot be read makes its conditions unavailable, which is an abort by default."""

from __future__ import annotations

import asyncio
from datetime import datetime

from chaosguard.kube import Cluster
from chaosguard.models import PrometheusEndpoint, SecretKeyRef, SteadyStateSpec
from chaosguard.prometheus import Endpoint, QueryBatcher, QueryRequest
from chaosguard.slo import GuardState, QueryOutcome, UnavailableKind, Verdict, evaluate, unavailable


class SteadyStateProbe:
    def __init__(self, cluster: Cluster, batcher: QueryBatcher, namespace: str, spec: SteadyStateSpec) -> None:
        self.cluster = cluster
        self.batcher = batcher
        self.namespace = namespace
        self.spec = spec
        self._endpoints: dict[str, Endpoint | str] = {}

    async def _secret(self, ref: SecretKeyRef | None) -> str | None:
        if ref is None:
            return None
        return await asyncio.to_thread(self.cluster.secret_value, self.namespace, ref.name, ref.key)

    async def _endpoint(self, spec: PrometheusEndpoint) -> Endpoint | str:
        """The endpoint, or a reason it cannot be used (a Secret that cannot be read)."""
        if spec.url not in self._endpoints:
            try:
                token = await self._secret(spec.bearer_token_secret)
                ca = await self._secret(spec.ca_secret)
                self._endpoints[spec.url] = Endpoint.from_spec(spec, bearer_token=token, ca=ca)
            except Exception as error:  # a missing Secret must not crash the guard: it is "unavailable"
                return f"cannot read the Prometheus credentials for {spec.url}: {error}"
        return self._endpoints[spec.url]

    async def check(self, state: GuardState, now: datetime) -> Verdict:
        outcomes: dict[str, QueryOutcome] = {}
        requests: list[tuple[str, QueryRequest]] = []
        for condition in self.spec.conditions:
            endpoint_spec = condition.prometheus or self.spec.prometheus
            assert endpoint_spec is not None  # the model refuses conditions without an endpoint
            endpoint = await self._endpoint(endpoint_spec)
            if isinstance(endpoint, str):
                outcomes[condition.name] = unavailable(UnavailableKind.INVALID_REQUEST, endpoint)
            else:
                requests.append((condition.name, QueryRequest(endpoint, condition.query)))
        answers = await self.batcher.query_many([request for _, request in requests])
        outcomes.update({name: answer for (name, _), answer in zip(requests, answers, strict=True)})
        return evaluate(self.spec.conditions, outcomes, state, now, self.spec.on_unavailable)
