"""The operator's log lines: text for people, JSON (`--log-format json`) for log pipelines.

Every line the engine logs for an experiment carries the experiment (`experiment`: namespace/name;
kopf adds `object` with its apiVersion, kind, namespace, name and uid) and the run (`run`: the run in
progress, or the last one once it has ended; null before the first). In JSON they are fields of
their own; in text they prefix the message: `[shop/checkout-pod-kill] [run r1-20261122T010000Z] ...`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

FORMATS = ("text", "json")


class ExperimentLogger(logging.LoggerAdapter[Any]):
    """Adds `experiment` and `run` to every record (kopf's object logger, wrapped, adds `object`)."""

    def __init__(
        self, logger: logging.Logger | logging.LoggerAdapter[Any], experiment: str, run: Callable[[], str | None]
    ):
        super().__init__(logger, {"experiment": experiment})
        self.experiment = experiment
        self.run = run

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {"experiment": self.experiment, "run": self.run(), **(kwargs.get("extra") or {})}
        return msg, kwargs


class RunPrefixFormatter(logging.Formatter):
    """Text format: puts `[run ID]` in front of the message of records that carry a run."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        run = getattr(record, "run", None)
        if run:
            record = copy.copy(record)
            record.msg = f"[run {run}] {record.msg}"
        return self.inner.format(record)


def configure(log_format: str, verbose: bool = False) -> None:
    """kopf's logging set-up (the root logger's handler, levels), in text or JSON."""
    import kopf

    if log_format == "json":
        kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON)
        return
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.FULL, log_prefix=True)
    handler = logging.getLogger().handlers[-1]  # the one kopf.configure just added
    if handler.formatter is not None:
        handler.setFormatter(RunPrefixFormatter(handler.formatter))
