"""Time to select targets among 10,000 pods: classify + count + choose + the cap check of every
chosen pod, i.e. the pure work the operator does per round, measured with time.perf_counter."""

from __future__ import annotations

import random
import statistics
import time

from chaosguard.api.models import ChaosPolicy, LabelSelector, TargetSpec
from chaosguard.decisions.policy import combine
from chaosguard.decisions.selection import PodView, choose, classify, kill_refusal, requested_count, workload_states

POD_COUNT = 10_000
REPEATS = 20


def population(rng: random.Random) -> list[PodView]:
    pods = []
    for index in range(POD_COUNT):
        workload = f"Deployment/app-{index % 200}"
        pods.append(
            PodView(
                namespace=f"ns-{index % 20}",
                name=f"pod-{index}",
                uid=f"uid-{index}",
                labels={"app": "checkout" if index % 2 else "cart", "tier": "web"},
                phase="Running",
                ready=rng.random() > 0.05,
                terminating=rng.random() < 0.01,
                workload=workload,
            )
        )
    return pods


def run() -> dict[str, tuple[float, str]]:
    rng = random.Random(7)
    pods = population(rng)
    labels = {f"ns-{i}": {"chaosguard.dev/chaos": "allowed"} for i in range(20)}
    policy = ChaosPolicy.model_validate(
        {
            "metadata": {"name": "bench"},
            "spec": {
                "maxPercentage": 30,
                "requireNamespaceOptIn": True,
                "protectedSelector": {"matchLabels": {"protected": "true"}},
            },
        }
    )
    effective = combine([policy])
    selector = LabelSelector(matchLabels={"app": "checkout"})
    target = TargetSpec(mode="fixed-percent", value=25)
    desired = {f"ns-{i % 20}/Deployment/app-{i}": 50 for i in range(200)}
    timings = []
    for repeat in range(REPEATS):
        started = time.perf_counter()
        eligibility = classify(pods, selector, effective, labels)
        chosen = choose(eligibility.eligible, requested_count(target, len(eligibility.eligible)), random.Random(repeat))
        states = workload_states(pods, desired)
        for pod in chosen:
            key = pod.workload_key
            if key is not None:
                kill_refusal(pod, states[key], effective, None)
        timings.append((time.perf_counter() - started) * 1000)
    median = statistics.median(timings)
    print(f"# select_10k_pods: median of {REPEATS} runs over {POD_COUNT} pods, 200 workloads, 20 namespaces")
    return {"select_10k_pods": (median, "ms")}
