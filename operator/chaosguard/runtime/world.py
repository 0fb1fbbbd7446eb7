"""World reads for one experiment: the policies, namespace labels, policy guards and invalid policies it
is judged by, from the watch-backed cache on every step and fresh from the API right before anything
irreversible (a kill, an injection, a start), and the victim's workload as it is now. Also owns the
fall-back from a watch cache that is down to the API (`cache_is_live`)."""

from __future__ import annotations

import asyncio

from chaosguard.api.models import ChaosExperimentSpec, ChaosPolicy
from chaosguard.clients import informers
from chaosguard.clients.informers import CacheNotReady
from chaosguard.clients.kube import Cluster
from chaosguard.decisions.platform_guards import platform_guards
from chaosguard.decisions.policy import applicable_policies, combine, target_namespaces
from chaosguard.decisions.selection import PodView, WorkloadState, workload_states
from chaosguard.runtime.context import World
from chaosguard.runtime.driverbase import DriverBase


class WorldReads(DriverBase):
    def cache_is_live(self, *kinds: str) -> bool:
        """Whether these watch caches are synced and connected: a decision reads them only then,
        and reads the API instead while a watch is down (when unsure, ask; never guess)."""
        try:
            self.context.cache.require_fresh(*kinds)
        except CacheNotReady as error:
            if kinds not in self.bypassed:  # said once per outage, not on every step
                self.logger.warning("reading from the API instead of the cache: %s", error)
            self.bypassed.add(kinds)
            return False
        if kinds in self.bypassed:
            self.logger.info("the watch caches of %s are live again; reading from them", ", ".join(kinds))
            self.bypassed.discard(kinds)
        return True

    async def world(self, spec: ChaosExperimentSpec) -> World:
        """The policies and namespace labels as the watch-backed cache has them (every step)."""
        if not self.cache_is_live(informers.NAMESPACES, informers.POLICIES):
            return await self.fresh_world(spec)
        cache = self.context.cache
        namespaces = {*target_namespaces(spec, self.namespace), self.namespace}
        return self.world_of(spec, cache.policies(), cache.labels_of(namespaces), cache.invalid_policies())

    async def fresh_world(self, spec: ChaosExperimentSpec) -> World:
        """The same, read from the API right now: a kill cannot be undone, so the policy and the
        labels it is judged by must be the current ones, not the cache's view of a moment ago."""
        namespaces = sorted({*target_namespaces(spec, self.namespace), self.namespace})
        policies = asyncio.ensure_future(self.context.api.call(Cluster.policies_checked))
        labels = await asyncio.gather(
            *(self.context.api.call(Cluster.namespace_labels_of, namespace) for namespace in namespaces)
        )
        known = {namespace: found for namespace, found in zip(namespaces, labels, strict=True) if found is not None}
        valid, invalid = await policies
        return self.world_of(spec, valid, known, invalid)

    def world_of(
        self,
        spec: ChaosExperimentSpec,
        policies: list[ChaosPolicy],
        labels: dict[str, dict[str, str]],
        invalid: dict[str, str] | None = None,
    ) -> World:
        targets = target_namespaces(spec, self.namespace)
        chosen = applicable_policies(policies, [*targets, self.namespace], labels)
        guards = platform_guards(chosen, targets)
        return World(combine(chosen, self.context.operator_namespace), labels, guards, dict(invalid or {}))

    async def live_workload(self, victim: PodView) -> tuple[list[PodView], WorkloadState]:
        """The victim's workload as it is now, read fresh: its pods (only those its own selector
        picks, where the cache knows the selector) and its desired replicas."""
        selector = None
        if victim.workload is not None:
            selector = self.context.cache.workload_label_selector(victim.namespace, victim.workload)
        desired: dict[str, int] = {}
        if victim.workload is not None and victim.workload_key is not None:
            pods, replicas = await asyncio.gather(
                self.context.api.call(Cluster.live_pods, victim.namespace, selector),
                self.context.api.call(Cluster.desired_replicas, victim.namespace, victim.workload),
            )
            if replicas is not None:
                desired[victim.workload_key] = replicas
        else:
            pods = await self.context.api.call(Cluster.live_pods, victim.namespace, selector)
        states = workload_states(pods, desired)
        key = victim.workload_key or victim.key
        return pods, states.get(key, WorkloadState(key=key, desired=1, ready=1 if victim.ready else 0))
