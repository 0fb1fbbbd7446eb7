"""The operator at scale (issue 10): N guarded pod-kill runs at once, each steadyState condition at a
1 s guard interval, then every SLI breached at the same moment. `run_100` (100 distinct queries) and
`run_1000` (50 distinct queries shared by the runs) return the figures `scale_<N>_<figure>`.

Method, on the local control plane (etcd, kube-apiserver, KCM, scheduler, kwok), a real Prometheus
scraping a metrics target every second, and the operator as a process (`chaosguard run`):

- Workloads: a few opted-in namespaces, each with a few small Deployments of pause pods (kept modest
  so that KCM and kwok are not the bottleneck); several experiments target one Deployment. Each run
  kills one pod (`mode: one`, an `interval` longer than the run) and lasts longer than the whole
  measurement. No ChaosPolicy exists, so no cap refuses a kill (kills by result are reported).
- apply -> Running: the N experiments are created through the API all at once (8 POSTs in flight:
  one `kubectl apply` creates them one after another, which took 45-175 s for 1000 on a loaded
  machine); one WATCH of chaosexperiments (opened before) stamps each experiment's creation (its
  ADDED event) and its first `status.phase: Running`; the figure is Running - created of each run
  (the figure from the first POST is printed as a comment). A run that is not Running within the
  time limit (counted from the first POST) is a failure and counts with the time limit as its value.
- Prometheus's per-query timeout is the default (2 s); runs that end before the breach (e.g. an
  unavailable SLI aborts them, the default onUnavailable) are counted by reason.
- The steady window (once every run is Running and its first round is over: its kill recorded as
  done and the killed pod recovered; or the time limits passed; plus a few seconds to settle):
  operator CPU from /proc/<pid>/stat (utime+stime delta over wall time, % of one core); RSS from
  /proc/<pid>/status (the largest VmRSS sampled each second); status writes from the API server's
  own /metrics (`apiserver_request_total{resource="chaosexperiments",subresource="status",
  verb="PATCH"}`, delta over the window, per run Running through the window, per second); guard tick
  lateness from the operator's histogram `chaosguard_guard_tick_lateness_seconds` (delta of the
  buckets over the window, p99 interpolated within buckets as histogram_quantile does) or, where the
  operator does not export it (an operator from before 2026-11-29, measured for a baseline), from
  the gaps between consecutive `sliSamples` timestamps of each run, which such an operator still
  wrote (gap - interval: how late each tick started after the previous one plus the interval).
- breach -> Aborted: every series flips to the breaching value under one lock that the metrics
  target's collection also takes, so that one scrape carries all flips; a 20 ms poll of an aggregate
  query stamps when Prometheus first answers the breaching value; each run's Aborted is stamped from
  the same watch. Runs not Aborted within the time limit count with the time limit as their value.

With CHAOSGUARD_BENCH_PYSPY=<dir>, `py-spy record` (raw collapsed stacks) samples the operator over
the start, the steady window and the 20 s after the breach, and `py-spy dump` takes snapshots of its
stacks in the steady window; all land in <dir>.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import math
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from bench.apply_to_kill import percentile
from localcluster.controlplane import ControlPlane, default_bin_dir
from localcluster.operator import (
    GROUP,
    VERSION,
    OperatorProcess,
    _free_port,
    install_crds,
    label_namespace,
    running_operator,
    signing_key_file,
)
from localcluster.prometheus import MetricsTarget, PrometheusServer, instant_query

FIGURES: dict[str, str] = {
    "apply_to_running_p95": "s",
    "guard_tick_late_p99": "s",
    "breach_to_faults_removed_p95": "s",
    "breach_to_aborted_p95": "s",
    "operator_cpu_pct": "%",
    "operator_rss_mb": "MB",
    "status_writes_per_run_per_s": "writes/run/s",
    "standby_cpu_pct": "%",
    "standby_rss_mb": "MB",
    "status_size_p95": "KiB",
}
HEALTHY, BREACHING, THRESHOLD = 0.001, 0.5, 0.05
GUARD_INTERVAL = 1.0
POLL = 0.02
SETTLE = 5.0
APP_PREFIX = "scale-"
EXPERIMENTS = "chaosexperiments"


@dataclass(frozen=True)
class Scale:
    runs: int
    distinct_queries: int
    namespaces: int
    deployments_per_namespace: int
    replicas: int
    running_limit: float  # seconds from the apply for every run to be Running
    window: float  # the steady window
    abort_limit: float  # seconds from the breach for every run to be Aborted
    first_rounds_limit: float  # seconds, after every run is Running, for their first rounds to be over

    @property
    def duration(self) -> str:  # every run outlasts the whole measurement
        return f"{int(self.running_limit + self.first_rounds_limit + self.window + self.abort_limit + 600)}s"


SCALES = {
    100: Scale(100, 100, 4, 5, 4, running_limit=180, window=30, abort_limit=120, first_rounds_limit=120),
    1000: Scale(1000, 50, 4, 10, 5, running_limit=300, window=30, abort_limit=180, first_rounds_limit=300),
}

EXPERIMENT = """\
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  action: pod-kill
  podKill: {{gracePeriodSeconds: 1}}
  target: {{selector: {{matchLabels: {{app: {workload}}}}}, mode: one}}
  duration: {duration}
  interval: 2h
  steadyState:
    prometheus: {{url: {url}}}
    interval: 1s
    conditions:
      - {{name: error-ratio, query: 'demo_error_ratio{{app="{app}"}}', operator: "<", threshold: {threshold}}}
"""


# --------------------------------------------------------------------------- the flip, in one scrape


class AtomicFlip:
    """Takes the metrics target's collection under a lock, so that a flip of many series lands in one scrape."""

    def __init__(self, target: MetricsTarget) -> None:
        self.target = target
        self.lock = threading.Lock()
        original = target.registry.collect

        def collect() -> Iterator[Any]:
            with self.lock:
                collected = list(original())
            return iter(collected)

        target.registry.collect = collect  # type: ignore[method-assign]

    def set_all(self, apps: list[str], value: float) -> None:
        with self.lock:
            for app in apps:
                self.target.set_error_ratio(value, app=app)


# --------------------------------------------------------------------------- one watch of all experiments


@dataclass
class Stamps:
    created: dict[str, float] = field(default_factory=dict)  # first sighting (ADDED), perf_counter
    running: dict[str, float] = field(default_factory=dict)  # first Running, perf_counter
    aborted: dict[str, float] = field(default_factory=dict)  # first Aborted after `aborted_after`
    phase: dict[str, str] = field(default_factory=dict)  # the latest phase seen
    events: int = 0
    reconnects: int = 0
    relists: int = 0


class ExperimentWatch:
    """One raw WATCH of chaosexperiments in all namespaces; stamps each first Running and each Aborted.

    Raw HTTP and json, not the Python client: at N=1000 the stream carries every status write."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        parsed = urllib.parse.urlsplit(plane.server)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 443
        self.context = ssl.create_default_context(cafile=str(plane.ca_file))
        self.token = plane.token_for("admin")
        self.stamps = Stamps()
        self.lock = threading.Lock()
        self.aborted_after: float | None = None  # perf_counter; Aborted counts only after this moment
        self.stopping = threading.Event()
        self.error: str | None = None
        self.resource_version = ""
        self.thread = threading.Thread(target=self._loop, name="experiment-watch", daemon=True)
        self._connection: http.client.HTTPSConnection | None = None

    def _get(self, path: str, timeout: float) -> http.client.HTTPResponse:
        connection = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)
        connection.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        self._connection = connection
        return connection.getresponse()

    def _path(self, **query: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/{EXPERIMENTS}?" + urllib.parse.urlencode(query)

    def _relist(self) -> None:
        response = self._get(self._path(), timeout=120)
        body = json.loads(response.read())
        now = time.perf_counter()
        for item in body.get("items", []):
            self._observe(item, now)
        self.resource_version = body["metadata"]["resourceVersion"]
        self.stamps.relists += 1

    def start(self) -> ExperimentWatch:
        self._relist()
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        sock = self._connection.sock if self._connection is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=10)

    def _observe(self, item: dict[str, Any], now: float) -> None:
        meta = item.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        phase = (item.get("status") or {}).get("phase") or ""
        with self.lock:
            self.stamps.created.setdefault(key, now)
            self.stamps.phase[key] = phase
            if phase == "Running" and key not in self.stamps.running:
                self.stamps.running[key] = now
            if (
                phase == "Aborted"
                and self.aborted_after is not None
                and now >= self.aborted_after
                and key not in self.stamps.aborted
            ):
                self.stamps.aborted[key] = now

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                path = self._path(
                    watch="1", resourceVersion=self.resource_version, allowWatchBookmarks="true", timeoutSeconds="300"
                )
                response = self._get(path, timeout=330)
                if response.status != 200:
                    raise RuntimeError(f"watch: HTTP {response.status} {response.read()[:300]!r}")
                for line in response:
                    now = time.perf_counter()
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    item = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if item.get("code") == 410:  # resourceVersion expired: list again
                            response.close()
                            self._relist()
                            break
                        raise RuntimeError(f"watch error: {item}")
                    version = (item.get("metadata") or {}).get("resourceVersion")
                    if version:
                        self.resource_version = version
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self.stamps.events += 1
                        self._observe(item, now)
                self.stamps.reconnects += 1
            except Exception as error:
                if self.stopping.is_set():
                    return
                self.error = f"{type(error).__name__}: {error}"
                self.stamps.reconnects += 1
                time.sleep(0.5)

    def snapshot(self) -> Stamps:
        with self.lock:
            return Stamps(
                dict(self.stamps.created),
                dict(self.stamps.running),
                dict(self.stamps.aborted),
                dict(self.stamps.phase),
                self.stamps.events,
                self.stamps.reconnects,
                self.stamps.relists,
            )


class PhasePoller:
    """A cross-check of the watch: GETs a few experiments round-robin on one kept-alive connection and
    stamps when each is first seen Aborted (a watch that lagged would show here)."""

    def __init__(self, watch: ExperimentWatch, keys: list[str]) -> None:
        self.watch, self.keys = watch, keys
        self.aborted: dict[str, float] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="phase-poller", daemon=True)

    def start(self) -> PhasePoller:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        connection = http.client.HTTPSConnection(
            self.watch.host, self.watch.port, context=self.watch.context, timeout=10
        )
        headers = {"Authorization": f"Bearer {self.watch.token}"}
        while not self.stopping.is_set() and len(self.aborted) < len(self.keys):
            for key in self.keys:
                if key in self.aborted:
                    continue
                namespace, name = key.split("/")
                try:
                    connection.request(
                        "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{EXPERIMENTS}/{name}", headers=headers
                    )
                    body = json.loads(connection.getresponse().read())
                except (OSError, http.client.HTTPException, ValueError):
                    connection.close()
                    continue
                if (body.get("status") or {}).get("phase") == "Aborted":
                    self.aborted[key] = time.perf_counter()
            time.sleep(POLL)
        connection.close()


# --------------------------------------------------------------------------- reading figures


def daemon_pids(plane: ControlPlane) -> dict[str, int]:
    """The pid of each control-plane process by name. ControlPlane has no public accessor for them;
    its process list is read here rather than matched by command line."""
    return {process.name: process.popen.pid for process in plane._processes if process.running()}


def proc_cpu_seconds(pid: int, tid: int | None = None) -> float:
    stat = Path(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5), after pid and comm
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return math.nan


def apiserver_requests(plane: ControlPlane) -> Counter[str]:
    """The API server's own counters: apiserver_request_total summed by "VERB resource[/subresource]"
    (every client: the operator, the controllers, kwok, this benchmark), and the summed latency of
    chaosexperiments/status PATCHes as "latency_sum" and "latency_count"."""
    status, text = plane.request("GET", "/metrics", timeout=30)
    if status != 200 or not isinstance(text, str):
        raise RuntimeError(f"GET /metrics of the API server: HTTP {status}")
    totals: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            subresource = f"/{labels['subresource']}" if labels.get("subresource") else ""
            totals[f"{labels.get('verb')} {labels.get('resource')}{subresource}"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith(("apiserver_request_duration_seconds_sum{", "apiserver_request_duration_seconds_count{")):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            if (labels.get("resource"), labels.get("subresource"), labels.get("verb")) == (
                EXPERIMENTS,
                "status",
                "PATCH",
            ):
                kind = "latency_sum" if "_sum{" in line else "latency_count"
                totals[kind] += float(line.rsplit(" ", 1)[1])
    return totals


@dataclass
class OperatorMetrics:
    lateness_buckets: dict[float, float] | None  # le -> cumulative count; None when not exported
    status_writes: float | None
    # le -> cumulative count of chaosguard_guard_verdict_handover_seconds (guard's thread -> kopf's loop)
    handover_buckets: dict[float, float] = field(default_factory=dict)
    # generation -> (collections, seconds paused, le -> cumulative count): chaosguard_gc_pause_seconds
    gc_pauses: dict[str, tuple[float, float, dict[float, float]]] = field(default_factory=dict)


def gc_pause_line(before: OperatorMetrics, after: OperatorMetrics) -> str:
    """Each generation's collections over the window: how many, their pauses in all, and the bound of the
    smallest histogram bucket that holds every one of them (the longest pause is at most that)."""
    parts = []
    for generation, (count, seconds, buckets) in sorted(after.gc_pauses.items()):
        count_before, seconds_before, buckets_before = before.gc_pauses.get(generation, (0.0, 0.0, {}))
        new = count - count_before
        bound = next(
            (le for le, total in sorted(buckets.items()) if total - buckets_before.get(le, 0.0) >= new), math.inf
        )
        parts.append(
            f"gen {generation}: {new:.0f} collections, {seconds - seconds_before:.2f} s paused in all, "
            f"each <= {bound:g} s"
        )
    return "; ".join(parts)


def operator_metrics(text: str) -> OperatorMetrics:
    buckets: dict[float, float] | None = None
    writes: float | None = None
    pauses: dict[str, tuple[float, float, dict[float, float]]] = {}
    handover: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "chaosguard_guard_verdict_handover_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    handover[float(sample.labels["le"])] = sample.value
        elif family.name == "chaosguard_gc_pause_seconds":
            for sample in family.samples:
                count, seconds, by_le = pauses.get(sample.labels["generation"], (0.0, 0.0, {}))
                if sample.name.endswith("_bucket"):
                    by_le[float(sample.labels["le"])] = sample.value
                elif sample.name.endswith("_count"):
                    count = sample.value
                elif sample.name.endswith("_sum"):
                    seconds = sample.value
                pauses[sample.labels["generation"]] = (count, seconds, by_le)
        if family.name == "chaosguard_guard_tick_lateness_seconds":
            buckets = {}
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
        elif family.name == "chaosguard_status_writes":  # the parser drops the counter's _total
            writes = sum(s.value for s in family.samples if s.name.endswith("_total"))
    return OperatorMetrics(buckets, writes, gc_pauses=pauses, handover_buckets=handover)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """As PromQL's histogram_quantile: linear interpolation inside the bucket holding the rank."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return math.nan
    total = ordered[-1][1]
    rank = q * total
    previous_le, previous_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):  # the rank is in the +Inf bucket: the highest finite bound
                return previous_le
            if count == previous_count:
                return le
            return previous_le + (le - previous_le) * (rank - previous_count) / (count - previous_count)
        previous_le, previous_count = le, count
    return ordered[-1][0]


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def list_experiments(plane: ControlPlane) -> list[dict[str, Any]]:
    status, body = plane.request("GET", f"/apis/{GROUP}/{VERSION}/{EXPERIMENTS}", timeout=120)
    if status != 200:
        raise RuntimeError(f"listing experiments: HTTP {status}")
    return list(body.get("items", []))


def tick_gaps(items: list[dict[str, Any]], since: float, until: float) -> tuple[list[float], int]:
    """Seconds between consecutive guard samples of each run that both fall in [since, until], and how
    many conditions have fewer than half the ticks the window should hold (their gaps are mostly open)."""
    gaps: list[float] = []
    sparse = 0
    for item in items:
        run = (item.get("status") or {}).get("currentRun") or {}
        for points in (run.get("sliSamples") or {}).values():
            times = sorted(t for t in (parse_time(p["at"]) for p in points if p.get("at")) if since <= t <= until)
            gaps.extend(later - earlier for earlier, later in itertools.pairwise(times))
            sparse += len(times) < (until - since) / GUARD_INTERVAL / 2
    return gaps, sparse


def kill_results(items: list[dict[str, Any]]) -> Counter[str]:
    results: Counter[str] = Counter()
    for item in items:
        status = item.get("status") or {}
        for run in (status.get("currentRun"), status.get("lastRun")):
            for kill in (run or {}).get("kills") or []:
                results[str(kill.get("result"))] += 1
    return results


def first_rounds_settled(items: list[dict[str, Any]]) -> tuple[int, int]:
    """(runs Running, of them those whose first round is over): a kill recorded and finished, and a pod it
    killed back (recovery tracked to its end). Until then the operator still picks, kills and watches pods
    recover, which is start-up work, not the steady state of guarding."""
    running = settled = 0
    for item in items:
        status = item.get("status") or {}
        run = status.get("currentRun") or {}
        if status.get("phase") != "Running":
            continue
        running += 1
        kills = run.get("kills") or []
        if (
            kills
            and all(kill.get("method") != "pending" for kill in kills)
            and all(kill.get("recoveredAfterSeconds") is not None for kill in kills if kill.get("result") == "Killed")
        ):
            settled += 1
    return running, settled


def wait_until(predicate: Callable[[], bool], limit: float, poll: float = 0.2) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()


# --------------------------------------------------------------------------- workloads


def create_workloads(api: client.ApiClient, scale: Scale) -> list[tuple[str, str]]:
    """Opted-in namespaces with small Deployments of pause pods; (namespace, deployment) for each."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    workloads: list[tuple[str, str]] = []
    for n in range(scale.namespaces):
        namespace = f"scale-{n}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        label_namespace(api, namespace, {"chaosguard.dev/chaos": "allowed"})
        for d in range(scale.deployments_per_namespace):
            name = f"web-{d}"
            body = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "replicas": scale.replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {
                            "terminationGracePeriodSeconds": 1,
                            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                        },
                    },
                },
            }
            apps.create_namespaced_deployment(namespace, body)
            workloads.append((namespace, name))

    def all_ready() -> bool:
        ready = 0
        for namespace in {ns for ns, _ in workloads}:
            for deployment in apps.list_namespaced_deployment(namespace).items:
                ready += min(deployment.status.ready_replicas or 0, scale.replicas)
        return ready == len(workloads) * scale.replicas

    if not wait_until(all_ready, 180, poll=1.0):
        raise RuntimeError("the scale workloads did not all become Ready within 180 s")
    return workloads


def manifest(scale: Scale, workloads: list[tuple[str, str]], prometheus_url: str) -> tuple[list[str], list[str]]:
    documents, keys = [], []
    for index in range(scale.runs):
        namespace, workload = workloads[index % len(workloads)]
        name = f"scale-{index:04d}"
        documents.append(
            EXPERIMENT.format(
                name=name,
                namespace=namespace,
                workload=workload,
                duration=scale.duration,
                url=prometheus_url,
                app=f"{APP_PREFIX}{index % scale.distinct_queries}",
                threshold=THRESHOLD,
            )
        )
        keys.append(f"{namespace}/{name}")
    return documents, keys


def create_all(plane: ControlPlane, documents: list[str], workers: int = 8) -> list[str]:
    """POSTs every experiment, `workers` at a time, as fast as the API server takes them; the errors."""

    def create(document: str) -> str | None:
        body = yaml.safe_load(document)
        namespace = body["metadata"]["namespace"]
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{EXPERIMENTS}"
        status, answer = plane.request("POST", path, body, timeout=60)
        return None if status == 201 else f"{namespace}/{body['metadata']['name']}: HTTP {status} {str(answer)[:200]}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [error for error in pool.map(create, documents) if error is not None]


# --------------------------------------------------------------------------- profiling (optional)


def _py_spy() -> tuple[str, Path] | None:
    directory = os.environ.get("CHAOSGUARD_BENCH_PYSPY")
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not directory or not os.access(spy, os.X_OK):
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    return spy, Path(directory)


def start_profile(pid: int, seconds: float, runs: int, phase: str) -> list[subprocess.Popen[bytes]]:
    """Two samplers: on-CPU stacks, and all threads' stacks idle or not (wall time)."""
    found = _py_spy()
    if found is None:
        return []
    spy, out = found
    processes = []
    # --gil: only the thread holding the GIL, so that a thread waiting for it does not show as busy.
    for kind, extra in (("cpu", ["-r", "100", "--gil"]), ("wall", ["-r", "50", "--idle", "--threads"])):
        command = [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "--nonblocking", *extra]
        command += ["--format", "raw", "-o", str(out / f"scale_{runs}.{phase}.{kind}.collapsed")]
        log = (out / f"scale_{runs}.{phase}.{kind}.log").open("wb")
        processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
    return processes


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """Each thread's CPU seconds so far (the kernel's utime+stime of /proc/<pid>/task/<tid>)."""
    seconds: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            seconds[int(task.name)] = proc_cpu_seconds(pid, int(task.name))
    return seconds


def thread_names(pid: int) -> dict[int, str]:
    """Python's names of the process's threads by native id (`py-spy dump` prints both); {} without py-spy."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(spy, os.X_OK):
        return {}
    dump = subprocess.run([spy, "dump", "-p", str(pid)], capture_output=True, text=True, timeout=60, check=False)
    return {int(tid): name for tid, name in re.findall(r'^Thread (\d+) \([^)]*\): "([^"]*)"', dump.stdout, re.M)}


def cpu_by_thread_group(before: dict[int, float], after: dict[int, float], names: dict[int, str], wall: float) -> str:
    """ "name 12%, ..." per group of threads (pool threads' numbers folded), largest first, % of one core."""
    groups: Counter[str] = Counter()
    for tid, seconds in after.items():
        name = re.sub(r"_\d+$", "_*", names.get(tid, "unnamed"))
        groups[name] += seconds - before.get(tid, 0.0)
    return ", ".join(f"{name} {100 * used / wall:.1f}%" for name, used in groups.most_common() if used / wall >= 0.005)


def dump_profile(pid: int, runs: int) -> None:
    found = _py_spy()
    if found is None:
        return
    spy, out = found
    with (out / f"scale_{runs}.dump.txt").open("ab") as dump:
        dump.write(f"==== {datetime.now().isoformat()}\n".encode())
        dump.flush()
        subprocess.run([spy, "dump", "-p", str(pid)], stdout=dump, stderr=subprocess.STDOUT, timeout=60, check=False)


# --------------------------------------------------------------------------- the benchmark


STANDBY_NAMESPACE = "chaosguard-system"


@contextlib.contextmanager
def standby_replica(plane: ControlPlane, workdir: Path) -> Iterator[OperatorProcess]:
    """A `--leader-elect` replica that stays a standby all along: the Lease is held by a stand-in leader
    (the bench's operator, which runs without election) for an hour. It guards every running run, as
    every replica does, so its CPU and memory are what a standby costs."""
    api = plane.api_client()
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=STANDBY_NAMESPACE)))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "chaosguard-leader", "namespace": STANDBY_NAMESPACE},
        "spec": {"holderIdentity": "bench-operator", "leaseDurationSeconds": 3600, "renewTime": now},
    }
    client.CoordinationV1Api(api).create_namespaced_lease(STANDBY_NAMESPACE, lease)
    # The stand-in leader's signing key, as replicas of an install share the Secret's: a standby verifies the
    # leader's sealed run records, and acts on them when the leader is slow to.
    args = [
        "--leader-elect",
        f"--readiness=http://127.0.0.1:{_free_port()}/readyz",
        "--signing-key-file",
        str(signing_key_file(plane.kubeconfig)),
    ]
    env = {"CHAOSGUARD_NAMESPACE": STANDBY_NAMESPACE}
    standby = OperatorProcess(plane.kubeconfig, workdir / "standby.log", env, args=args).start()
    try:
        yield standby
    finally:
        standby.stop()


def run_scale(scale: Scale) -> dict[str, tuple[float, str]]:
    began = time.monotonic()
    prefix = f"scale_{scale.runs}"
    workdir = Path(tempfile.mkdtemp(prefix=f"chaosguard-bench-{prefix}-"))
    apps = [f"{APP_PREFIX}{i}" for i in range(scale.distinct_queries)]
    aggregate = f'demo_error_ratio{{app=~"{APP_PREFIX}.*"}}'
    notes: list[str] = []
    with (
        MetricsTarget() as target,
        PrometheusServer(workdir / "prometheus", [target]) as prometheus,
        ControlPlane(workdir / "cp", default_bin_dir()) as plane,
    ):
        flip = AtomicFlip(target)
        flip.set_all(apps, HEALTHY)
        prometheus.wait_for_series(
            aggregate, lambda s: len(s) == len(apps) and all(v == HEALTHY for _, v in s), timeout=30
        )
        install_crds(plane)
        api = plane.api_client()
        workloads = create_workloads(api, scale)
        documents, keys = manifest(scale, workloads, prometheus.url)
        with running_operator(plane, workdir) as operator, standby_replica(plane, workdir) as standby:
            assert operator.process is not None and standby.process is not None
            pid, standby_pid = operator.process.pid, standby.process.pid
            watch = ExperimentWatch(plane).start()
            try:
                # ---- apply -> Running
                starting = start_profile(pid, 60, scale.runs, "start")
                applied = time.perf_counter()
                create_errors = create_all(plane, documents)
                apply_seconds = time.perf_counter() - applied
                wait_until(
                    lambda: len(watch.snapshot().running) >= scale.runs,
                    max(0.0, scale.running_limit - (time.perf_counter() - applied)),
                )
                stamps = watch.snapshot()
                # Each run from its own creation (the watch's ADDED event), not from the first POST.
                to_running = [
                    stamps.running[k] - stamps.created.get(k, applied) if k in stamps.running else scale.running_limit
                    for k in keys
                ]
                from_first = [stamps.running[k] - applied if k in stamps.running else scale.running_limit for k in keys]
                started = [k for k in keys if k in stamps.running]
                late_starts = sum(1 for k in started if stamps.running[k] - applied > scale.running_limit)
                not_started = scale.runs - len(started)

                # ---- start-up: each run's first round (one kill, then that pod's recovery; runs of one workload
                # take turns) still goes on after every run is Running; steady state is once it is over.
                settle_from, settle_cpu_from = time.perf_counter(), proc_cpu_seconds(pid)
                rounds: list[tuple[int, int]] = [(0, 0)]

                def first_rounds_over() -> bool:
                    rounds[0] = first_rounds_settled(list_experiments(plane))
                    return rounds[0][0] > 0 and rounds[0][1] == rounds[0][0]

                wait_until(first_rounds_over, scale.first_rounds_limit, poll=3.0)
                settle_wall = time.perf_counter() - settle_from
                notes.append(
                    f"# {prefix}: start-up after the last run was Running: first rounds (a kill and its pod's "
                    f"recovery) over in {rounds[0][1]} of {rounds[0][0]} Running runs after {settle_wall:.0f} s "
                    f"(limit {scale.first_rounds_limit:.0f} s); operator CPU meanwhile "
                    f"{100 * (proc_cpu_seconds(pid) - settle_cpu_from) / settle_wall:.0f}% of a core"
                )

                # ---- the steady window
                time.sleep(SETTLE)
                guarded = {k for k, phase in watch.snapshot().phase.items() if phase == "Running"}
                api_before = apiserver_requests(plane)
                op_before = operator_metrics(operator.metrics())
                names, threads_before = thread_names(pid), thread_cpu_seconds(pid)
                cpu_before, wall_before = proc_cpu_seconds(pid), time.perf_counter()
                standby_cpu_before = proc_cpu_seconds(standby_pid)
                standby_rss: list[float] = []
                window_from = time.time()
                profile = start_profile(pid, scale.window, scale.runs, "steady")
                rss: list[float] = []
                dumps = [scale.window * f for f in (0.25, 0.5, 0.75)] if profile else []
                while time.perf_counter() - wall_before < scale.window:
                    rss.append(proc_status_kb(pid, "VmRSS") / 1024)
                    standby_rss.append(proc_status_kb(standby_pid, "VmRSS") / 1024)
                    if dumps and time.perf_counter() - wall_before > dumps[0]:
                        dump_profile(pid, scale.runs)
                        dumps.pop(0)
                    time.sleep(1.0)
                cpu_after, wall_after = proc_cpu_seconds(pid), time.perf_counter()
                threads_after = thread_cpu_seconds(pid)
                if names:
                    names.update(thread_names(pid))
                    notes.append(
                        f"# {prefix}: operator CPU in the steady window by thread (the kernel's per-thread times; "
                        "names from py-spy dump): "
                        + cpu_by_thread_group(threads_before, threads_after, names, wall_after - wall_before)
                    )
                standby_cpu_pct = (
                    100.0 * (proc_cpu_seconds(standby_pid) - standby_cpu_before) / (wall_after - wall_before)
                )
                window_until = time.time()
                load = os.getloadavg()
                api_after = apiserver_requests(plane)
                op_after = operator_metrics(operator.metrics())
                rss.append(proc_status_kb(pid, "VmRSS") / 1024)
                peak_rss = proc_status_kb(pid, "VmHWM") / 1024
                wall = wall_after - wall_before
                still = {k for k, phase in watch.snapshot().phase.items() if phase == "Running"}
                through = guarded & still
                cpu_pct = 100.0 * (cpu_after - cpu_before) / wall
                # What a reader of a running experiment gets (`kubectl get -o yaml`), every run at one moment.
                running_sizes = [
                    len(json.dumps(item.get("status") or {})) / 1024
                    for item in list_experiments(plane)
                    if (item.get("status") or {}).get("phase") == "Running"
                ]
                api_delta = api_after - api_before
                status_patches = api_delta.get(f"PATCH {EXPERIMENTS}/status", 0.0)
                patch_latency = api_delta.get("latency_sum", 0.0) / max(1.0, api_delta.get("latency_count", 0.0))
                writes_per_run = status_patches / max(1, len(through)) / wall if through else math.nan
                for sampler in [*starting, *profile]:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        sampler.wait(timeout=60)
                requests = ", ".join(
                    f"{name} {count / wall:.1f}/s"
                    for name, count in api_delta.most_common()
                    if not name.startswith(("latency", "WATCH")) and count / wall >= 0.1
                )
                if op_before.status_writes is not None and op_after.status_writes is not None:
                    own = (op_after.status_writes - op_before.status_writes) / max(1, len(through)) / wall
                    notes.append(
                        f"# {prefix}: the operator's own chaosguard_status_writes_total: {own:.3f} writes/run/s"
                    )

                if op_after.gc_pauses:
                    notes.append(
                        f"# {prefix}: the operator's garbage collections in the window: "
                        + gc_pause_line(op_before, op_after)
                    )

                # ---- guard tick lateness
                delta = {
                    le: count - (op_before.lateness_buckets or {}).get(le, 0.0)
                    for le, count in (op_after.lateness_buckets or {}).items()
                }
                if delta.get(math.inf, 0.0) > 0:
                    late_p99 = histogram_quantile(0.99, delta)
                    late_method = (
                        f"chaosguard_guard_tick_lateness_seconds over the window "
                        f"({delta.get(math.inf, 0):.0f} ticks), histogram_quantile(0.99)"
                    )
                else:
                    items = list_experiments(plane)
                    gaps, sparse = tick_gaps(
                        [i for i in items if f"{i['metadata']['namespace']}/{i['metadata']['name']}" in through],
                        window_from,
                        window_until,
                    )
                    lateness = [max(0.0, g - GUARD_INTERVAL) for g in gaps]
                    late_p99 = percentile(lateness, 0.99) if lateness else math.nan
                    gap_p50 = percentile(gaps, 0.5) if gaps else math.nan
                    gap_p99 = percentile(gaps, 0.99) if gaps else math.nan
                    late_method = (
                        "no chaosguard_guard_tick_lateness_seconds observed in the window (the operator does not "
                        "export it): lateness = gap between "
                        f"consecutive sliSamples timestamps - 1 s, {len(gaps)} gaps in the window, {sparse} runs with "
                        "fewer than half the ticks the window should hold "
                        f"(tick gap p50 {gap_p50:.2f} s, p99 {gap_p99:.2f} s)"
                    )

                # ---- breach -> Aborted
                breach_set = {k for k, phase in watch.snapshot().phase.items() if phase == "Running"}
                op_at_breach = operator_metrics(operator.metrics())
                api_at_breach = apiserver_requests(plane)
                # Who had the cores while the verdicts were written (the API server's share limits the rate).
                busy_pids = daemon_pids(plane) | {
                    "operator": pid,
                    "standby": standby_pid,
                    "bench (this process)": os.getpid(),
                }
                if prometheus.process is not None:
                    busy_pids["prometheus"] = prometheus.process.pid
                cpu_at_breach = {name: proc_cpu_seconds(process_id) for name, process_id in busy_pids.items()}
                watch.aborted_after = time.perf_counter()
                poller = PhasePoller(watch, sorted(breach_set)[:: max(1, len(breach_set) // 5)][:5]).start()
                breach_profile = start_profile(pid, 20, scale.runs, "breach")
                flip.set_all(apps, BREACHING)
                minimum = f"min({aggregate})"
                breach_at: float | None = None
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    if any(value == BREACHING for _, value in instant_query(prometheus.url, minimum)):
                        breach_at = time.perf_counter()
                        breach_wall = datetime.now(UTC)
                        break
                    time.sleep(POLL)
                if breach_at is None:
                    raise RuntimeError("Prometheus never answered the breaching value within 30 s")
                wait_until(
                    lambda: breach_set <= set(watch.snapshot().aborted),
                    max(0.0, scale.abort_limit - (time.perf_counter() - breach_at)),
                )
                poller.stop()
                op_after_breach = operator_metrics(operator.metrics())
                # The standby judges the same breach: how often it also took up a run (a read, a patch the API
                # refused, a second read) or wrote the abort itself while the stand-in leader lived.
                standby_log = standby.log_path.read_text(errors="replace")
                notes.append(
                    f"# {prefix}: the standby after the breach: {standby_log.count('was ended by another replica')} "
                    f"runs taken up and found ended by the leader, {standby_log.count('aborted by the')} aborts it "
                    "wrote itself"
                )
                # What the API server was asked while the verdicts were being written: what they shared it with.
                breach_wall_seconds = time.perf_counter() - breach_at
                cores = {
                    name: (proc_cpu_seconds(process_id) - cpu_at_breach[name]) / breach_wall_seconds
                    for name, process_id in busy_pids.items()
                }
                notes.append(
                    f"# {prefix}: cores used from the breach until every run was Aborted: "
                    + ", ".join(f"{name} {used:.2f}" for name, used in sorted(cores.items(), key=lambda i: -i[1]))
                    + f" (of {os.cpu_count()})"
                )
                breach_requests = (apiserver_requests(plane) - api_at_breach).most_common()
                notes.append(
                    f"# {prefix}: API requests from the breach until every run was Aborted "
                    f"({breach_wall_seconds:.1f} s), all clients: "
                    + ", ".join(
                        f"{name} {count:.0f}"
                        for name, count in breach_requests
                        if not name.startswith(("latency", "WATCH")) and count >= 5
                    )
                )
                handed = {
                    le: count - op_at_breach.handover_buckets.get(le, 0.0)
                    for le, count in op_after_breach.handover_buckets.items()
                }
                if handed.get(math.inf, 0.0) > 0:
                    notes.append(
                        f"# {prefix}: after the breach, verdicts waited for kopf's loop "
                        f"(chaosguard_guard_verdict_handover_seconds, {handed[math.inf]:.0f} verdicts): p50 "
                        f"{histogram_quantile(0.5, handed):.3f} s, p95 {histogram_quantile(0.95, handed):.3f} s"
                    )
                for sampler in breach_profile:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        sampler.wait(timeout=60)
                stamps = watch.snapshot()
                cross_check = [
                    (stamps.aborted[k] - breach_at, poller.aborted[k] - breach_at)
                    for k in poller.keys
                    if k in stamps.aborted and k in poller.aborted
                ]
                to_aborted = [
                    stamps.aborted[k] - breach_at if k in stamps.aborted else scale.abort_limit for k in breach_set
                ]
                not_aborted = sum(1 for k in breach_set if k not in stamps.aborted)
                end_phases = Counter(stamps.phase.get(k, "?") for k in keys)
                final = list_experiments(plane)
                kills = kill_results(final)
                # The runs' own record of when they ended (the operator's clock, before the write lands).
                # The safety figure: the operator stamps finishedAt once the run's faults are out and no kill
                # may start (abort_requested was set before); a kill recorded after it would break that.
                ended_runs = [
                    run
                    for item in final
                    if f"{item['metadata']['namespace']}/{item['metadata']['name']}" in breach_set
                    for run in [(item.get("status") or {}).get("lastRun") or {}]
                    if run.get("finishedAt")
                ]
                finished = [parse_time(run["finishedAt"]) - breach_wall.timestamp() for run in ended_runs]
                kills_after_end = sum(
                    1
                    for run in ended_runs
                    for kill in run.get("kills") or []
                    if kill.get("result") == "Killed" and parse_time(kill["at"]) > parse_time(run["finishedAt"])
                )
                early: Counter[str] = Counter()  # runs not Running at the flip, by how they ended
                for item in final:
                    if f"{item['metadata']['namespace']}/{item['metadata']['name']}" not in breach_set:
                        status = item.get("status") or {}
                        run = status.get("currentRun") or status.get("lastRun") or {}
                        early[f"{status.get('phase')} {run.get('reason') or ''}".strip()] += 1
                status_bytes = sum(len(json.dumps(i.get("status") or {})) for i in final) / max(1, len(final))
            finally:
                watch.stop()
    figures: dict[str, float] = {
        "apply_to_running_p95": percentile(to_running, 0.95),
        "guard_tick_late_p99": late_p99,
        "breach_to_faults_removed_p95": percentile(finished, 0.95) if finished else math.nan,
        "breach_to_aborted_p95": percentile(to_aborted, 0.95) if to_aborted else math.nan,
        "operator_cpu_pct": cpu_pct,
        "operator_rss_mb": max(rss),
        "status_writes_per_run_per_s": writes_per_run,
        "standby_cpu_pct": standby_cpu_pct,
        "standby_rss_mb": max(standby_rss),
        "status_size_p95": percentile(running_sizes, 0.95) if running_sizes else math.nan,
    }
    pods = scale.namespaces * scale.deployments_per_namespace * scale.replicas
    print(
        f"# {prefix}: N={scale.runs} guarded pod-kill runs, {scale.distinct_queries} distinct queries, guard "
        f"interval 1 s; {pods} pods in {scale.namespaces * scale.deployments_per_namespace} Deployments of "
        f"{scale.replicas} in {scale.namespaces} namespaces; the {scale.runs} experiments were created through "
        f"the API, 8 POSTs at a time, in {apply_seconds:.1f} s"
        + (f"; {len(create_errors)} failed, e.g. {create_errors[0]}" if create_errors else ""),
        flush=True,
    )
    print(
        f"# {prefix}: Running within {scale.running_limit:.0f} s of the apply: {len(started) - late_starts}; "
        f"not Running (counted as {scale.running_limit:.0f} s): {not_started + late_starts}; apply->Running "
        f"p50 {percentile(to_running, 0.5):.2f} s, max {max(to_running):.2f} s, each from its creation (ADDED in the "
        f"watch); from the first POST instead: p50 {percentile(from_first, 0.5):.2f} s, p95 "
        f"{percentile(from_first, 0.95):.2f} s",
        flush=True,
    )
    print(
        f"# {prefix}: steady window {wall:.1f} s (from {SETTLE:.0f} s after the last start) with {len(through)} runs "
        f"Running throughout; operator CPU {cpu_pct:.0f}% of a core, RSS max {max(rss):.0f} MB (VmHWM "
        f"{peak_rss:.0f} MB); status PATCHes {status_patches:.0f} (API server's apiserver_request_total; all of "
        "them, also those of experiments not yet Running, over the runs Running throughout), "
        f"their mean latency in the API server {1000 * patch_latency:.0f} ms; a standby replica (--leader-elect, the "
        f"Lease held by a stand-in leader) guarding the same runs: CPU {standby_cpu_pct:.0f}% of a core, RSS max "
        f"{max(standby_rss):.0f} MB",
        flush=True,
    )
    print(
        f"# {prefix}: API requests in the window, all clients (apiserver_request_total): {requests}",
        flush=True,
    )
    print(f"# {prefix}: guard tick lateness: {late_method}", flush=True)
    print(
        f"# {prefix}: breach: {len(breach_set)} runs Running at the flip (the others, by phase and reason at the "
        f"end: {dict(early) or 'none'}); Aborted within {scale.abort_limit:.0f} s: "
        f"{len(breach_set) - not_aborted}; not Aborted (counted as {scale.abort_limit:.0f} s): {not_aborted}; "
        f"breach->Aborted p50 {percentile(to_aborted, 0.5) if to_aborted else math.nan:.2f} s, max "
        f"{max(to_aborted) if to_aborted else math.nan:.2f} s (from Prometheus first answering the breach, 20 ms poll, "
        f"at {breach_wall:%H:%M:%S.%f} UTC)",
        flush=True,
    )
    print(
        f"# {prefix}: phases at the end {dict(end_phases)}; kills by result {dict(kills) or 'none'}; mean status "
        f"size at the end {status_bytes / 1024:.1f} KiB; load average over the window {load[0]:.1f} (1 min), "
        f"{load[2]:.1f} (15 min) on {os.cpu_count()} CPUs; watch "
        f"{stamps.events} events, {stamps.reconnects} reconnects, {stamps.relists} lists"
        + (f", last error {watch.error}" if watch.error else "")
        + f"; wall {time.monotonic() - began:.0f} s; logs in {workdir}",
        flush=True,
    )
    if finished:
        print(
            f"# {prefix}: breach->faults removed (the safety figure): finishedAt in the runs' own status, stamped "
            "once a run's faults are out and after which no kill may start (operator's clock, before the write "
            f"lands): p50 {percentile(finished, 0.5):.2f} s, p95 {percentile(finished, 0.95):.2f} s, max "
            f"{max(finished):.2f} s ({len(finished)} runs); kills recorded after their run's finishedAt: "
            f"{kills_after_end}",
            flush=True,
        )
    if running_sizes:
        print(
            f"# {prefix}: status of a Running experiment (len of its JSON, one LIST at the end of the steady "
            f"window, {len(running_sizes)} runs): mean {sum(running_sizes) / len(running_sizes):.1f} KiB, p95 "
            f"{percentile(running_sizes, 0.95):.1f} KiB, max {max(running_sizes):.1f} KiB",
            flush=True,
        )
    if cross_check:
        print(
            f"# {prefix}: cross-check of the watch: {len(cross_check)} runs also polled (GET every ~20 ms): Aborted "
            "seen by the watch / by the poll after the breach: "
            + ", ".join(f"{w:.2f}/{p:.2f} s" for w, p in cross_check),
            flush=True,
        )
    for note in notes:
        print(note, flush=True)
    return {f"{prefix}_{name}": (value, FIGURES[name]) for name, value in figures.items()}


def run_100() -> dict[str, tuple[float, str]]:
    return run_scale(SCALES[100])


def run_1000() -> dict[str, tuple[float, str]]:
    return run_scale(SCALES[1000])


def run() -> dict[str, tuple[float, str]]:
    return {**run_100(), **run_1000()}


# --------------------------------------------------------------------------- summarising a profile

_WAIT_LEAF = re.compile(
    r"^(SSLSocket\.(read|recv_into)|EpollSelector\.select|_PollLikeSelector\.select|poll_wait_for_socket|"
    r"Condition\.wait|_worker \(concurrent/futures/thread\.py:81|SimpleQueue|Lock|_wait_for_tstate_lock|select \(|"
    r"BaseSelectorEventLoop\._write_to_self|sleep)"
)
_CPU_SHARES = (
    ("Kubernetes client calls (pool threads)", r"chaosguard/kube\.py"),
    ("  status PATCH", r"patch_experiment_status"),
    ("  LIST namespaces", r"Cluster\.namespace_labels"),
    ("  LIST chaospolicies", r"Cluster\.policies"),
    ("  pods, workloads, kills", r"Cluster\.(pods|desired_replicas|workload_object|kill)"),
    ("  kubernetes model (de)serialisation", r"sanitize_for_serialization|__deserialize|from_dict"),
    ("TLS (ssl.py)", r"\(ssl\.py"),
    ("Prometheus queries", r"chaosguard/prometheus\.py"),
    ("event-loop thread", r"_run_module_as_main"),
    ("  kopf", r"\(kopf/"),
    ("  aiohttp", r"\(aiohttp/"),
    ("JSON encode/decode", r"\(json/"),
    ("pydantic model_validate/model_dump", r"pydantic/main\.py"),
    ("chaosguard engine", r"chaosguard/engine\.py"),
)


def summarize_profile(path: Path) -> str:
    """Shares of a py-spy raw profile: for a --threads (wall) profile, each thread group's time by the
    chaosguard call it was in; otherwise on-CPU shares, leaving out samples whose leaf is a blocking wait."""
    groups: dict[str, Counter[str]] = {}
    shares: Counter[str] = Counter()
    kept = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples, frames = int(count), stack.split(";")
        thread = re.match(r"thread \(\d+\): ?(.*)", frames[0])
        if thread is not None:
            if len(frames) == 1:
                continue
            group = re.sub(r"_\d+$", "_*", thread.group(1)) or "?"
            call = re.search(r"(Cluster\.\w+|chaosguard/prometheus\.py)", stack)
            if call is not None:
                what = call.group(1)
            elif _WAIT_LEAF.match(frames[-1]):
                what = "waiting (idle)"
            else:
                own = [f for f in frames if "(chaosguard/" in f or "(kopf/" in f]
                what = (own[-1] if own else frames[-1]).split(" (")[0]
            groups.setdefault(group, Counter())[what] += samples
        elif not _WAIT_LEAF.match(frames[-1]):
            kept += samples
            for name, pattern in _CPU_SHARES:
                if re.search(pattern, stack):
                    shares[name] += samples
    lines = [f"# {path.name}"]
    for group, counts in sorted(groups.items(), key=lambda item: -sum(item[1].values())):
        total = sum(counts.values())
        lines.append(
            f"{group} ({total} samples): " + ", ".join(f"{w} {100 * n / total:.1f}%" for w, n in counts.most_common(8))
        )
    if kept and not groups:
        lines.append(f"on-CPU ({kept} samples not in a blocking wait):")
        lines += [f"  {100 * shares[name] / kept:5.1f}%  {name}" for name, _ in _CPU_SHARES]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m bench.scale summarize <dir or .collapsed files>
    if len(sys.argv) < 3 or sys.argv[1] != "summarize":
        raise SystemExit("usage: python -m bench.scale summarize <py-spy dir or .collapsed files>")
    for argument in sys.argv[2:]:
        target = Path(argument)
        for found in sorted(target.glob("*.collapsed")) if target.is_dir() else [target]:
            print(summarize_profile(found), end="\n\n")
