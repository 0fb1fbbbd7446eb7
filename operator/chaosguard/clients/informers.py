"""Watch-backed caches of what the engine reads on every step (issue 10, "Reads from memory").

Why: listing namespaces, policies, experiments, approvals and pods on every engine step made the
operator's cost grow with the number of running experiments times the size of the cluster. Here
each kind is listed once and then watched; the engine reads plain, immutable projections from
memory, and only the read that guards a kill needs to go to the API server.

How: one `Informer` per kind runs list-then-watch in its own daemon thread with the synchronous
`kubernetes` client, on raw JSON (the client's model deserialization costs more than the rest of
the work together). Its semantics follow client-go's reflector:

- the first list fills the store and makes the informer `synced`; the watch starts from the
  list's resourceVersion and every event (and BOOKMARK) moves that position forward;
- a watch that ends (the server's timeout) or breaks (a connection error) resumes from the last
  resourceVersion seen, so nothing that happened in between is lost;
- "410 Gone" (an HTTP 410, or an ERROR event with code 410: the server no longer has that
  resourceVersion) means events were lost for good: the informer lists again and *replaces* the
  store, so objects deleted while it was away disappear;
- errors never end the thread: it logs, backs off briefly (capped) and tries again.

`ClusterCache` owns the informers chaosguard needs and answers the same questions as the fresh
reads of `kube.Cluster` (same names, same meaning), so the engine switches by changing the
receiver. A read of a kind that has never synced raises `CacheNotReady` rather than answering
from an empty store: "no policies" would read as "nothing restricts chaos", the unsafe answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import json
import logging
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Generic, TypeVar, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from chaosguard.api.errors import describe_validation_error
from chaosguard.api.models import GROUP, VERSION, ChaosPolicy, LabelSelector, Phase
from chaosguard.decisions.selection import PodView
from chaosguard.decisions.stamps import parse_time

logger = logging.getLogger("chaosguard.informers")

T = TypeVar("T")

#: (namespace, name); the namespace is "" for cluster-scoped kinds (namespaces, policies).
ObjectKey = tuple[str, str]

CACHE_STALENESS = Gauge(
    "chaosguard_cache_staleness_seconds",
    "Seconds since each watch cache last heard from the API server (an event, a bookmark or a (re)connect). "
    "An idle kind with a healthy watch also grows this until the next bookmark (about once a minute).",
    ["kind"],
)
CACHE_RELISTS = Counter(
    "chaosguard_cache_relists_total",
    "Lists after the first one, each replacing a watch cache's whole store (resourceVersion expired, or a "
    "failed list retried).",
    ["kind"],
)
CACHE_EVENTS = Counter(
    "chaosguard_cache_events_total", "Watch events (ADDED, MODIFIED, DELETED) applied to a watch cache.", ["kind"]
)

#: A watch stream closed this recently still counts as connected: resuming takes milliseconds.
CONNECTED_GRACE_SECONDS = 5.0
#: The server ends each watch after about this long (jittered), and the informer resumes.
WATCH_TIMEOUT_SECONDS = 240
#: No byte for this long on an open watch means the peer vanished without closing: reconnect.
#: The server sends a bookmark about once a minute, so a healthy idle stream never gets here.
WATCH_READ_TIMEOUT_SECONDS = 90.0
CONNECT_TIMEOUT_SECONDS = 10.0
LIST_TIMEOUT_SECONDS = 60.0
#: Items per list page. json.loads of a page holds the GIL throughout (5-10 ms of CPU for 250 pods),
#: which the operator's event loop waits out; smaller pages keep that short.
LIST_PAGE_SIZE = 250
BACKOFF_FIRST_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 5.0
#: A watch cycle counts as productive (no backoff before the next one) after this long open.
PRODUCTIVE_STREAM_SECONDS = 1.0


class CacheNotReady(RuntimeError):
    """A read needed a kind whose informer has not synced (or is not fresh), with the reasons."""


class ResourceVersionExpired(Exception):
    """The server no longer has the resourceVersion the watch asked for (410 Gone): list again."""


class WatchError(Exception):
    """An ERROR event other than 410 in a watch stream; the informer resumes after a backoff."""


# --------------------------------------------------------------------------- projections


@dataclass(frozen=True, slots=True)
class WorkloadFacts:
    """A Deployment, StatefulSet or ReplicaSet: its replicas, pod selector and (ReplicaSets) Deployment."""

    replicas: int | None
    selector: str | None  # as a label-selector string; None when missing, empty or not expressible
    deployment: str | None = None  # the controlling Deployment's name, for ReplicaSets


@dataclass(frozen=True, slots=True)
class ExperimentFacts:
    namespace: str
    name: str
    phase: str | None


def _metadata(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    return cast(Mapping[str, Any], raw.get("metadata") or {})


def object_key(raw: Mapping[str, Any]) -> ObjectKey:
    metadata = _metadata(raw)
    return (str(metadata.get("namespace") or ""), str(metadata["name"]))


def _controller(raw: Mapping[str, Any]) -> tuple[str, str] | None:
    for reference in _metadata(raw).get("ownerReferences") or []:
        if reference.get("controller"):
            return sys.intern(str(reference["kind"])), str(reference["name"])
    return None


def _frozen_labels(raw: Mapping[str, Any]) -> Mapping[str, str]:
    # Interned keys: the same few label keys repeat on every pod of a large cluster.
    labels = _metadata(raw).get("labels") or {}
    return MappingProxyType({sys.intern(str(key)): str(value) for key, value in labels.items()})


def selector_string(selector: Mapping[str, Any] | None) -> str | None:
    """A metav1.LabelSelector as a `label_selector=` string, or None when missing, empty or invalid.

    Empty is None on purpose: an empty string selects every pod of the namespace, which is never
    the population of one workload."""
    if not selector:
        return None
    try:
        parsed = LabelSelector.model_validate(selector)
    except ValidationError:
        return None
    if parsed.is_empty():
        return None
    return parsed.to_label_selector_string()


def project_namespace_labels(raw: Mapping[str, Any]) -> Mapping[str, str]:
    return _frozen_labels(raw)


def project_policy(raw: Mapping[str, Any]) -> ChaosPolicy:
    """Validated once per event, not once per read; raises ValidationError for an invalid policy."""
    return ChaosPolicy.model_validate(raw)


def project_experiment(raw: Mapping[str, Any]) -> ExperimentFacts:
    namespace, name = object_key(raw)
    phase = (raw.get("status") or {}).get("phase")
    return ExperimentFacts(namespace=namespace, name=name, phase=None if phase is None else str(phase))


def running_keys(experiments: Iterable[ExperimentFacts]) -> set[str]:
    """The "namespace/name" of those experiments whose status.phase is Running."""
    return {f"{facts.namespace}/{facts.name}" for facts in experiments if facts.phase == Phase.RUNNING.value}


def project_approval(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """The item as the API returns it, minus managedFields (bookkeeping nobody here reads)."""
    item = dict(raw)
    metadata = dict(_metadata(raw))
    metadata.pop("managedFields", None)
    item["metadata"] = metadata
    return MappingProxyType(item)


def project_pod(raw: Mapping[str, Any]) -> PodView:
    """The pod as selection sees it, except that `workload` is its direct controller ("ReplicaSet/x"):
    which Deployment owns a ReplicaSet is the ReplicaSet's business, resolved when pods are read."""
    metadata = _metadata(raw)
    status = raw.get("status") or {}
    ready_condition = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready" and c.get("status") == "True"),
        None,
    )
    transition = ready_condition.get("lastTransitionTime") if ready_condition is not None else None
    controller = _controller(raw)
    return PodView(
        namespace=sys.intern(str(metadata.get("namespace") or "")),
        name=str(metadata["name"]),
        uid=str(metadata.get("uid") or ""),
        labels=_frozen_labels(raw),
        phase=sys.intern(str(status.get("phase") or "Unknown")),
        ready=ready_condition is not None,
        terminating=metadata.get("deletionTimestamp") is not None,
        workload=f"{controller[0]}/{controller[1]}" if controller is not None else None,
        ready_since=parse_time(str(transition)) if transition else None,
    )


def carry_ready_sighting(previous: PodView | None, pod: PodView) -> PodView:
    """Stamps when this watch first saw the pod Ready (kept while it stays Ready since the same
    transition): recovery times use it to refine the Ready condition's whole-second timestamp."""
    if not pod.ready:
        return pod
    if previous is not None and previous.ready and previous.ready_since == pod.ready_since:
        return dataclasses.replace(pod, ready_seen_at=previous.ready_seen_at)
    return dataclasses.replace(pod, ready_seen_at=datetime.now(UTC))


def project_workload(raw: Mapping[str, Any]) -> WorkloadFacts:
    spec = raw.get("spec") or {}
    replicas = spec.get("replicas")
    controller = _controller(raw)
    return WorkloadFacts(
        replicas=None if replicas is None else int(replicas),
        selector=selector_string(spec.get("selector")),
        deployment=controller[1] if controller is not None and controller[0] == "Deployment" else None,
    )


# --------------------------------------------------------------------------- the store


class Store(Generic[T]):
    """The projected objects of one kind by namespace, then name; changed and read under a lock.

    Projections are immutable, so a read hands out the very objects it holds in a fresh list: a
    snapshot that later events never change. An object whose projection fails (a policy that does
    not validate) is kept out of the store, and the reason is kept in `rejected` and logged, so
    it never vanishes silently."""

    def __init__(
        self, kind: str, project: Callable[[Mapping[str, Any]], T], carry: Callable[[T | None, T], T] | None = None
    ) -> None:
        self.kind = kind
        self._project = project
        # `carry(previous, new)`: what a new projection keeps of the one it replaces (what only the
        # watch knows, such as when a pod was first seen Ready); called under the lock.
        self._carry = carry
        self._lock = threading.Lock()
        self._by_namespace: dict[str, dict[str, T]] = {}
        self._rejected: dict[ObjectKey, str] = {}
        # Change counters, so that readers can keep what they derive from a namespace until it changes.
        self._changes = 0
        self._replaced_at = 0
        self._namespace_changed_at: dict[str, int] = {}

    def _changed(self, namespace: str) -> None:
        self._changes += 1
        self._namespace_changed_at[namespace] = self._changes

    def replace(self, raw_items: Iterable[Mapping[str, Any]]) -> None:
        """Everything the store holds becomes exactly these objects (a list, after a 410 a re-list)."""
        fresh: dict[str, dict[str, T]] = {}
        rejected: dict[ObjectKey, str] = {}
        for raw in raw_items:
            key = object_key(raw)
            projected = self._projected(key, raw, rejected)
            if projected is not None:
                fresh.setdefault(key[0], {})[key[1]] = projected
        with self._lock:
            if self._carry is not None:
                for space, names in fresh.items():
                    before = self._by_namespace.get(space, {})
                    for name, item in names.items():
                        names[name] = self._carry(before.get(name), item)
            self._by_namespace, self._rejected = fresh, rejected
            self._changes += 1
            self._replaced_at, self._namespace_changed_at = self._changes, {}

    def upsert(self, raw: Mapping[str, Any]) -> None:
        key = object_key(raw)
        rejected: dict[ObjectKey, str] = {}
        projected = self._projected(key, raw, rejected)
        with self._lock:
            self._changed(key[0])
            if projected is None:
                self._drop(key)
                self._rejected.update(rejected)
            else:
                names = self._by_namespace.setdefault(key[0], {})
                if self._carry is not None:
                    projected = self._carry(names.get(key[1]), projected)
                names[key[1]] = projected
                self._rejected.pop(key, None)

    def delete(self, raw: Mapping[str, Any]) -> None:
        key = object_key(raw)
        with self._lock:
            self._changed(key[0])
            self._drop(key)
            self._rejected.pop(key, None)

    def _drop(self, key: ObjectKey) -> None:
        names = self._by_namespace.get(key[0])
        if names is not None:
            names.pop(key[1], None)
            if not names:
                del self._by_namespace[key[0]]

    def _projected(self, key: ObjectKey, raw: Mapping[str, Any], rejected: dict[ObjectKey, str]) -> T | None:
        try:
            return self._project(raw)
        except Exception as error:  # a projection bug or an invalid object must not stop the watch
            shown = "/".join(part for part in key if part)
            if isinstance(error, ValidationError):
                message = "; ".join(describe_validation_error(error))
            else:
                message = f"{type(error).__name__}: {error}".replace("\n", "; ")
            logger.error("%s %s left out of the cache: it does not project: %s", self.kind, shown, message)
            rejected[key] = message
            return None

    def get(self, namespace: str, name: str) -> T | None:
        with self._lock:
            return self._by_namespace.get(namespace, {}).get(name)

    def items(self, namespace: str | None = None) -> list[T]:
        """A snapshot of one namespace's objects (None: all), in (namespace, name) order."""
        return [item for _, item in self.entries(namespace)]

    def entries(self, namespace: str | None = None) -> list[tuple[ObjectKey, T]]:
        """Like `items`, with each object's key; one lock, so keys and objects always agree."""
        with self._lock:
            spaces = [namespace] if namespace is not None else sorted(self._by_namespace)
            return [
                ((space, name), names[name])
                for space in spaces
                for names in (self._by_namespace.get(space, {}),)
                for name in sorted(names)
            ]

    def version(self, namespace: str) -> int:
        """A number that grows whenever anything in this namespace changes (or the store is replaced)."""
        with self._lock:
            return self._version(namespace)

    def _version(self, namespace: str) -> int:
        return max(self._replaced_at, self._namespace_changed_at.get(namespace, 0))

    def namespace_snapshot(self, namespace: str) -> tuple[int, dict[str, T]]:
        """The namespace's objects by name, with the `version` they are at."""
        with self._lock:
            return self._version(namespace), dict(self._by_namespace.get(namespace, {}))

    def rejected(self) -> dict[ObjectKey, str]:
        with self._lock:
            return dict(self._rejected)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(names) for names in self._by_namespace.values())


# --------------------------------------------------------------------------- the informer


@dataclass(frozen=True)
class InformerHealth:
    """One informer's state, for metrics, logs and the engine's freshness checks."""

    kind: str
    synced: bool
    connected: bool  # watching, or was a moment ago (CONNECTED_GRACE_SECONDS): resuming takes that little
    watching: bool  # a watch stream is open right now
    staleness_seconds: float
    objects: int
    relists: int
    events: int
    bookmarks: int
    failures: int
    last_error: str | None


class Informer(Generic[T]):
    """List, then watch, one kind into a `Store`, in a daemon thread (see the module docstring).

    `list_call` is a `kubernetes` list function with its positional arguments bound (e.g.
    `CoreV1Api(api).list_pod_for_all_namespaces`, or a partial of `list_cluster_custom_object`);
    it is called with `_preload_content=False` for lists and for watches."""

    def __init__(
        self,
        kind: str,
        list_call: Callable[..., Any],
        project: Callable[[Mapping[str, Any]], T],
        *,
        watch_timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
        page_size: int = LIST_PAGE_SIZE,
        carry: Callable[[T | None, T], T] | None = None,
    ) -> None:
        self.kind = kind
        self.store: Store[T] = Store(kind, project, carry)
        self._list_call = list_call
        self._watch_timeout_seconds = watch_timeout_seconds
        self._page_size = page_size
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self._stream_open = False
        self._stream_closed_at = float("-inf")
        self._stream_opened_at: float | None = None
        self._cycle_events = 0
        self._lists = 0
        self._last_logged_error: str | None = None
        self.resource_version: str | None = None  # where the next watch resumes; None: list first
        self.last_heard_monotonic: float | None = None  # a list, a watch (re)connect, an event or a bookmark
        self.last_event_monotonic: float | None = None  # an event or a bookmark
        self.relists = 0
        self.events = 0
        self.bookmarks = 0
        self.failures = 0  # list or watch attempts that failed (each logged), over the informer's life
        self.last_error: str | None = None  # the latest failure, cleared once a list or watch works again

    # -- state --

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    @property
    def watching(self) -> bool:
        return self._stream_open

    @property
    def connected(self) -> bool:
        with self._lock:
            if self._stream_open:
                return True
            return time.monotonic() - self._stream_closed_at < CONNECTED_GRACE_SECONDS

    def staleness(self) -> float:
        """Seconds since the server was last heard from (inf before the first list)."""
        heard = self.last_heard_monotonic
        return float("inf") if heard is None else max(0.0, time.monotonic() - heard)

    def health(self) -> InformerHealth:
        return InformerHealth(
            kind=self.kind,
            synced=self.synced,
            connected=self.connected,
            watching=self.watching,
            staleness_seconds=self.staleness(),
            objects=len(self.store),
            relists=self.relists,
            events=self.events,
            bookmarks=self.bookmarks,
            failures=self.failures,
            last_error=self.last_error,
        )

    def _heard(self) -> None:
        self.last_heard_monotonic = time.monotonic()

    # -- life cycle --

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.kind}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the thread promptly: the open watch is shut down under its blocking read."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def request_stop(self) -> None:
        """`stop` without the wait, so that many informers can be stopped at once."""
        self._stopping.set()
        self.interrupt()

    def interrupt(self) -> None:
        """Breaks the open watch stream as a dropped connection would; the informer then resumes
        from the last resourceVersion it saw (used by `stop`, and by tests of reconnects)."""
        with self._lock:
            response = self._response
        if response is not None:
            _shut_down(response)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._cycle_events = 0
            self._stream_opened_at = None
            try:
                if self.resource_version is None:
                    self._list()
                self._watch()
            except ResourceVersionExpired as expired:
                logger.info("watch of %s: %s; listing again", self.kind, expired)
                self.resource_version = None
            except Exception as error:
                if self._stopping.is_set():
                    break
                self._note_failure(error, failures)
            opened_at = self._stream_opened_at
            productive = self._cycle_events > 0 or (
                opened_at is not None and time.monotonic() - opened_at >= PRODUCTIVE_STREAM_SECONDS
            )
            failures = 0 if productive else failures + 1
            if failures:
                delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (failures - 1))
                self._stopping.wait(delay * random.uniform(0.8, 1.2))

    def _note_failure(self, error: Exception, failures: int) -> None:
        message = _describe(error)
        self.failures += 1
        self.last_error = message
        position = f"from resourceVersion {self.resource_version}" if self.resource_version else "by listing"
        if failures == 0 or message != self._last_logged_error:
            logger.warning("watch cache of %s: %s; retrying %s", self.kind, message, position)
        else:
            logger.debug("watch cache of %s: %s; retrying %s", self.kind, message, position)
        self._last_logged_error = message

    # -- list --

    def _list(self) -> None:
        pages: list[str] = []  # the list's resourceVersion, known once the last page is read
        self.store.replace(self._listed_items(pages))
        self.resource_version = pages[-1]
        self._lists += 1
        if self._lists > 1:
            self.relists += 1
            CACHE_RELISTS.labels(kind=self.kind).inc()
        self._heard()
        self.last_error = None
        self._last_logged_error = None
        self._synced.set()

    def _listed_items(self, versions: list[str]) -> Iterator[Mapping[str, Any]]:
        """Every item, page by page (one page in memory at a time); appends the list's RV to `versions`."""
        token: str | None = None
        while True:
            options: dict[str, Any] = {"limit": self._page_size}
            if token:
                options["_continue"] = token
            response = self._list_call(
                _preload_content=False, _request_timeout=(CONNECT_TIMEOUT_SECONDS, LIST_TIMEOUT_SECONDS), **options
            )
            try:
                body = json.loads(response.data)
            finally:
                response.release_conn()
            yield from body.get("items") or []
            metadata = body.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                versions.append(str(metadata["resourceVersion"]))
                return

    # -- watch --

    def _watch(self) -> None:
        timeout = int(self._watch_timeout_seconds * random.uniform(0.9, 1.1))
        try:
            response = self._list_call(
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=self.resource_version,
                timeout_seconds=timeout,
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, WATCH_READ_TIMEOUT_SECONDS),
            )
        except ApiException as error:
            if error.status == 410:
                raise ResourceVersionExpired(f"HTTP 410: {_api_reason(error)}") from error
            raise
        with self._lock:
            self._response = response
            self._stream_open = True
        self._stream_opened_at = time.monotonic()
        self._heard()
        self.last_error = None
        try:
            if self._stopping.is_set():  # stop() came before the response was there to shut down
                return
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if line:
                    self.apply_event(json.loads(line))
            logger.debug("watch of %s ended; resuming from resourceVersion %s", self.kind, self.resource_version)
        finally:
            with self._lock:
                self._response = None
                self._stream_open = False
                self._stream_closed_at = time.monotonic()
            with contextlib.suppress(Exception):
                response.close()
                response.release_conn()

    def apply_event(self, event: Mapping[str, Any]) -> None:
        """One watch event: change the store, move the resourceVersion; 410 raises ResourceVersionExpired."""
        kind_of_event = event.get("type")
        obj = cast(Mapping[str, Any], event.get("object") or {})
        if kind_of_event == "ERROR":
            code, reason, message = obj.get("code"), obj.get("reason"), obj.get("message")
            if code == 410:
                raise ResourceVersionExpired(f"ERROR event 410 {reason}: {message}")
            raise WatchError(f"ERROR event {code} {reason}: {message}")
        if kind_of_event in ("ADDED", "MODIFIED"):
            self.store.upsert(obj)
        elif kind_of_event == "DELETED":
            self.store.delete(obj)
        elif kind_of_event != "BOOKMARK":
            logger.warning("watch of %s: ignoring an event of unknown type %r", self.kind, kind_of_event)
            return
        version = _metadata(obj).get("resourceVersion")
        if version:
            self.resource_version = str(version)
        self._cycle_events += 1
        if kind_of_event == "BOOKMARK":
            self.bookmarks += 1
        else:
            self.events += 1
            CACHE_EVENTS.labels(kind=self.kind).inc()
        self._heard()
        self.last_event_monotonic = self.last_heard_monotonic


def _shut_down(response: Any) -> None:
    """Unblocks a thread reading this response: shutting the socket down ends a blocked recv at once
    (closing it from another thread would not)."""
    try:
        response.shutdown()
        return
    except Exception:  # an older urllib3, or already released: fall back to the socket itself
        pass
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _api_reason(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "").get("message") or error.reason)
    except (TypeError, ValueError):
        return str(error.reason)


def _describe(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status}: {_api_reason(error)}"
    return f"{type(error).__name__}: {error}".replace("\n", "; ")


# --------------------------------------------------------------------------- the cluster cache


def _deployment_of(pod: PodView, replica_sets: Mapping[str, WorkloadFacts]) -> str | None:
    """The Deployment a pod belongs to through its controlling ReplicaSet, if any."""
    kind, _, name = (pod.workload or "").partition("/")
    replica_set = replica_sets.get(name) if kind == "ReplicaSet" else None
    return None if replica_set is None else replica_set.deployment


@dataclass(frozen=True)
class _ResolvedPods:
    """One namespace's pods as `ClusterCache.pods` returns them, and the store versions they reflect."""

    versions: tuple[int, int]
    by_name: dict[str, tuple[PodView, str | None, PodView]]  # name -> (stored pod, its Deployment, the view)
    views: list[PodView]


#: The metric's staleness callbacks read the informer currently registered for each kind.
_LIVE_INFORMERS: dict[str, Informer[Any]] = {}
_LIVE_LOCK = threading.Lock()


def _live_staleness(kind: str) -> float:
    with _LIVE_LOCK:
        informer = _LIVE_INFORMERS.get(kind)
    return float("nan") if informer is None else informer.staleness()


NAMESPACES = "namespaces"
POLICIES = "chaospolicies"
EXPERIMENTS = "chaosexperiments"
APPROVALS = "chaosapprovals"
PODS = "pods"
REPLICA_SETS = "replicasets"
DEPLOYMENTS = "deployments"
STATEFUL_SETS = "statefulsets"


class ClusterCache:
    """The informers chaosguard reads from, answering as `kube.Cluster`'s fresh reads do.

    Give it its own `ApiClient` (each informer holds one connection open for its watch, and must
    not compete with the operator's other calls for the pool); without one it makes its own from
    the loaded default configuration, with a pool large enough for every watch."""

    def __init__(
        self,
        api_client: client.ApiClient | None = None,
        *,
        watch_timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
        page_size: int = LIST_PAGE_SIZE,
        list_functions: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        """`list_functions` replaces the list function of some kinds, by kind (e.g. a partial that adds a
        label_selector to narrow one; unit tests use fakes): it gets the same keyword arguments."""
        self._owns_api_client = api_client is None
        if api_client is None:
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, 16)
            api_client = client.ApiClient(configuration)
        self.api_client = api_client
        core, apps, custom = (
            client.CoreV1Api(api_client),
            client.AppsV1Api(api_client),
            client.CustomObjectsApi(api_client),
        )
        overrides = dict(list_functions or {})

        def informer(
            kind: str,
            list_call: Callable[..., Any],
            project: Callable[[Mapping[str, Any]], T],
            carry: Callable[[T | None, T], T] | None = None,
        ) -> Informer[T]:
            chosen = overrides.pop(kind, list_call)
            return Informer(
                kind, chosen, project, watch_timeout_seconds=watch_timeout_seconds, page_size=page_size, carry=carry
            )

        def custom_list(plural: str) -> Callable[..., Any]:
            return functools.partial(custom.list_cluster_custom_object, GROUP, VERSION, plural)

        self._namespaces = informer(NAMESPACES, core.list_namespace, project_namespace_labels)
        self._policies = informer(POLICIES, custom_list(POLICIES), project_policy)
        self._experiments = informer(EXPERIMENTS, custom_list(EXPERIMENTS), project_experiment)
        self._approvals = informer(APPROVALS, custom_list(APPROVALS), project_approval)
        self._pods = informer(PODS, core.list_pod_for_all_namespaces, project_pod, carry_ready_sighting)
        self._replica_sets = informer(REPLICA_SETS, apps.list_replica_set_for_all_namespaces, project_workload)
        self._deployments = informer(DEPLOYMENTS, apps.list_deployment_for_all_namespaces, project_workload)
        self._stateful_sets = informer(STATEFUL_SETS, apps.list_stateful_set_for_all_namespaces, project_workload)
        if overrides:
            raise ValueError(f"list_functions names unknown kinds: {', '.join(sorted(overrides))}")
        self.informers: Mapping[str, Informer[Any]] = {
            each.kind: each
            for each in (
                self._namespaces,
                self._policies,
                self._experiments,
                self._approvals,
                self._pods,
                self._replica_sets,
                self._deployments,
                self._stateful_sets,
            )
        }
        self._pod_views: dict[str, _ResolvedPods] = {}
        self._pod_views_lock = threading.Lock()
        self._workloads: Mapping[str, Informer[WorkloadFacts]] = {
            "Deployment": self._deployments,
            "StatefulSet": self._stateful_sets,
            "ReplicaSet": self._replica_sets,
        }

    # -- life cycle and health --

    def start(self) -> None:
        with _LIVE_LOCK:
            _LIVE_INFORMERS.update(self.informers)
        for kind, informer in self.informers.items():
            CACHE_STALENESS.labels(kind=kind).set_function(functools.partial(_live_staleness, kind))
            informer.start()

    def stop(self, timeout: float = 5.0) -> None:
        for informer in self.informers.values():
            informer.request_stop()
        deadline = time.monotonic() + timeout
        for informer in self.informers.values():
            informer.stop(max(0.0, deadline - time.monotonic()))
        with _LIVE_LOCK:
            for kind, informer in self.informers.items():
                if _LIVE_INFORMERS.get(kind) is informer:
                    del _LIVE_INFORMERS[kind]
        if self._owns_api_client:
            self.api_client.close()  # type: ignore[no-untyped-call]

    @property
    def synced(self) -> bool:
        return all(informer.synced for informer in self.informers.values())

    @property
    def healthy(self) -> bool:
        """Every informer has synced and has a watch open (or had one a moment ago)."""
        return all(informer.synced and informer.connected for informer in self.informers.values())

    async def wait_synced(self, timeout: float) -> None:
        """Returns once every informer has listed; raises CacheNotReady naming the ones that have not."""
        deadline = time.monotonic() + timeout
        while not self.synced:
            if time.monotonic() >= deadline:
                raise CacheNotReady(
                    f"watch caches not synced after {timeout:g}s: {self._describe_unready(self.informers, fresh=False)}"
                )
            await asyncio.sleep(0.05)

    def staleness(self) -> dict[str, float]:
        """Seconds since each informer last heard from the server (event, bookmark or (re)connect)."""
        return {kind: informer.staleness() for kind, informer in self.informers.items()}

    def informer_health(self) -> dict[str, InformerHealth]:
        return {kind: informer.health() for kind, informer in self.informers.items()}

    def require_fresh(self, *kinds: str) -> None:
        """For a decision that relies on freshness: raises CacheNotReady unless each of these kinds
        (default: all) is synced and connected, naming what is not and the last error seen."""
        unknown = sorted(set(kinds) - set(self.informers))
        if unknown:
            raise ValueError(f"no watch cache for {', '.join(unknown)}; there are: {', '.join(self.informers)}")
        chosen = {kind: self.informers[kind] for kind in kinds} if kinds else dict(self.informers)
        if any(not (informer.synced and informer.connected) for informer in chosen.values()):
            raise CacheNotReady(f"watch caches not fresh: {self._describe_unready(chosen, fresh=True)}")

    @staticmethod
    def _describe_unready(informers: Mapping[str, Informer[Any]], *, fresh: bool) -> str:
        parts = []
        for kind, informer in informers.items():
            if informer.synced and (informer.connected or not fresh):
                continue
            state = "disconnected" if informer.synced else "not synced"
            error = f" (last error: {informer.last_error})" if informer.last_error else ""
            parts.append(f"{kind} {state}{error}")
        return "; ".join(parts)

    def _synced_store(self, informer: Informer[T]) -> Store[T]:
        if not informer.synced:
            reason = self._describe_unready({informer.kind: informer}, fresh=False)
            raise CacheNotReady(f"the {informer.kind} watch cache has not synced yet: {reason}")
        return informer.store

    # -- the reads of kube.Cluster, from memory --

    def namespace_labels(self) -> dict[str, dict[str, str]]:
        return {name: dict(labels) for (_, name), labels in self._synced_store(self._namespaces).entries()}

    def labels_of(self, namespaces: Iterable[str]) -> dict[str, dict[str, str]]:
        """The labels of just these namespaces (those that exist): what one experiment's step needs,
        without copying every namespace of the cluster on every step."""
        store = self._synced_store(self._namespaces)
        found = {name: store.get("", name) for name in namespaces}
        return {name: dict(labels) for name, labels in found.items() if labels is not None}

    def policies(self) -> list[ChaosPolicy]:
        """The valid policies (shared instances: treat them as read-only); see invalid_policies()."""
        return self._synced_store(self._policies).items()

    def invalid_policies(self) -> dict[str, str]:
        """Policies left out because they do not validate, by name, with the reason.

        The CRD schema (and its CEL rules) keeps most such objects out of the API, but not every
        check of the model (repeated names, {{.window}} in queries): while this is not empty the
        engine starts no run and injects nothing, and running runs keep the guards they had."""
        return {name: reason for (_, name), reason in self._synced_store(self._policies).rejected().items()}

    def running_experiments(self) -> set[str]:
        """The "namespace/name" of every experiment whose status.phase is Running (for the concurrency cap)."""
        return running_keys(self._synced_store(self._experiments).items())

    def approvals(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's ChaosApproval items as the API returns them (deep copies, in name order)."""
        return [copy.deepcopy(dict(item)) for item in self._synced_store(self._approvals).items(namespace)]

    def pods(self, namespace: str) -> list[PodView]:
        """Every pod of the namespace, in name order, with its top workload resolved as
        kube._OwnerResolver does (a ReplicaSet's pods belong to the Deployment controlling it).

        The resolved list is kept until the namespace's pods or ReplicaSets change, and each pod's
        view until that pod or its owner does: engine steps ask for the same namespaces again and
        again, and most of their pods have not changed in between."""
        pod_store, replica_set_store = self._synced_store(self._pods), self._synced_store(self._replica_sets)
        with self._pod_views_lock:
            known = self._pod_views.get(namespace)
        if known is not None and known.versions == (pod_store.version(namespace), replica_set_store.version(namespace)):
            return list(known.views)
        pods_version, pods = pod_store.namespace_snapshot(namespace)
        replica_sets_version, replica_sets = replica_set_store.namespace_snapshot(namespace)
        previous = known.by_name if known is not None else {}
        by_name: dict[str, tuple[PodView, str | None, PodView]] = {}
        for name in sorted(pods):
            pod = pods[name]
            deployment = _deployment_of(pod, replica_sets)
            before = previous.get(name)
            if before is not None and before[0] is pod and before[1] == deployment:
                by_name[name] = before
            else:
                view = pod if deployment is None else dataclasses.replace(pod, workload=f"Deployment/{deployment}")
                by_name[name] = (pod, deployment, view)
        resolved = _ResolvedPods(
            (pods_version, replica_sets_version), by_name, [view for _, _, view in by_name.values()]
        )
        with self._pod_views_lock:
            if pods:
                self._pod_views[namespace] = resolved
            else:  # nothing worth keeping, and namespaces come and go
                self._pod_views.pop(namespace, None)
        return list(resolved.views)

    def _workload(self, namespace: str, workload: str) -> WorkloadFacts | None:
        kind, _, name = workload.partition("/")
        informer = self._workloads.get(kind)
        return None if informer is None else self._synced_store(informer).get(namespace, name)

    def desired_replicas(self, namespace: str, workload: str) -> int | None:
        """As Cluster.desired_replicas: None for other kinds or a missing object; unset replicas is 1."""
        facts = self._workload(namespace, workload)
        if facts is None:
            return None
        return 1 if facts.replicas is None else facts.replicas

    def workload_label_selector(self, namespace: str, workload: str) -> str | None:
        """The workload's spec.selector as a `label_selector=` string, for the fresh read that guards a
        kill; None when the workload is unknown or its selector is not expressible."""
        facts = self._workload(namespace, workload)
        return None if facts is None else facts.selector
