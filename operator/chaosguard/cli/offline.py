"""What `validate`, `plan` and `apply` share: the YAML they are given (files, folders of .yaml/.yml, or
`-` for stdin) read into documents, and the judgement of one experiment by every offline rule."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from chaosguard.api.errors import describe_validation_error
from chaosguard.api.models import ChaosExperiment, ChaosPolicy
from chaosguard.decisions.policy import (
    Refusal,
    applicable_policies,
    combine,
    static_refusals,
    target_namespaces,
    time_refusal,
)
from chaosguard.decisions.prometheus_access import endpoint_refusals


class UnreadableInput(Exception):
    pass


@dataclass(frozen=True)
class Document:
    source: str
    body: dict[str, Any]


def read_documents(paths: Iterable[str]) -> list[Document]:
    documents: list[Document] = []
    for raw_path in paths:
        path = Path(raw_path)
        files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
        for file in files:
            try:
                text = sys.stdin.read() if str(file) == "-" else file.read_text()
                loaded = [doc for doc in yaml.safe_load_all(text) if doc is not None]
            except OSError as error:
                raise UnreadableInput(f"{file}: cannot read: {error.strerror}") from None
            except yaml.YAMLError as error:
                raise UnreadableInput(f"{file}: not valid YAML: {error}") from None
            for doc in loaded:
                if not isinstance(doc, dict):
                    raise UnreadableInput(f"{file}: a document is not a mapping")
                documents.append(Document(str(file), doc))
    return documents


def split_documents(documents: Sequence[Document]) -> tuple[list[Document], list[Document]]:
    experiments = [d for d in documents if d.body.get("kind") == "ChaosExperiment"]
    policies = [d for d in documents if d.body.get("kind") == "ChaosPolicy"]
    return experiments, policies


def judge(
    doc: Document,
    policies: list[ChaosPolicy],
    at: datetime,
    prometheus_url: str | None = None,
    *,
    judge_endpoints: bool = False,
) -> list[Refusal]:
    """Every offline rule for one experiment document. With `judge_endpoints`, also where its Prometheus
    queries and credentials may go, `prometheus_url` being the operator's configured Prometheus (the
    only one a bearer token may go to when no policy lists allowedPrometheusURLs); without, that is
    left to the operator (a caller that does not know its configuration must not guess)."""
    try:
        experiment = ChaosExperiment.model_validate(doc.body)
    except ValidationError as error:
        return [Refusal("schema", line) for line in describe_validation_error(error)]
    namespace = experiment.metadata.namespace or "default"
    spec = experiment.spec
    chosen = applicable_policies(policies, [*target_namespaces(spec, namespace), namespace], None)
    effective = combine(chosen)
    refusals = static_refusals(spec, namespace, effective, None)
    if judge_endpoints:
        refusals += endpoint_refusals(spec, effective, prometheus_url)
    if spec.schedule is None:
        refusal = time_refusal(effective, at)
        if refusal is not None:
            refusals.append(refusal)
    return refusals
