"""Generates the CustomResourceDefinitions in crds/ from the pydantic models.

pydantic's JSON Schema is close to, but not, the structural OpenAPI v3 schema that the API
server demands: `$ref`s must be inlined, `anyOf` with null must become a plain optional field,
`additionalProperties: false` is refused, `const` is spelt `enum`, and an int-or-string field
needs its own marker. This module does exactly those rewrites and refuses anything it does not
know how to express (a `oneOf`, a discriminator), so that a model change can never produce a CRD
that silently accepts less, or more, than the models do. Pure: models in, dicts out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from chaosguard.api.models import (
    GROUP,
    VERSION,
    ChaosApprovalSpec,
    ChaosExperimentSpec,
    ChaosExperimentStatus,
    ChaosPolicySpec,
    ChaosPolicyStatus,
)

HEADER = "# Generated from operator/chaosguard/api/models.py by `make crds`. Do not edit by hand.\n"

# Keys that pydantic emits and that carry no meaning for the API server.
_DROPPED_KEYS = {"title", "discriminator", "x-chaosguard-duration"}
_REFUSED_KEYS = {"oneOf", "allOf", "not", "const_union"}


class CrdGenerationError(ValueError):
    """A model uses a schema construct that cannot be expressed in a structural CRD schema."""


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    return _rewrite(raw, definitions, path=model.__name__)


def _resolve(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    ref = node["$ref"].rsplit("/", 1)[-1]
    merged = dict(definitions[ref])
    merged.update({key: value for key, value in node.items() if key != "$ref"})
    return merged


def _rewrite(node: dict[str, Any], definitions: dict[str, Any], path: str) -> dict[str, Any]:
    if "$ref" in node:
        node = _resolve(node, definitions)
    refused = _REFUSED_KEYS & node.keys()
    if refused:
        raise CrdGenerationError(f"{path}: {sorted(refused)} cannot be expressed in a structural CRD schema")

    if "anyOf" in node:
        node = _collapse_any_of(node, definitions, path)

    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "const":
            result["enum"] = [value]
        elif key == "properties":
            result["properties"] = {
                name: _rewrite(child, definitions, f"{path}.{name}") for name, child in value.items()
            }
        elif key == "items":
            result["items"] = _rewrite(value, definitions, f"{path}[]")
        elif key == "additionalProperties":
            if isinstance(value, dict):
                result["additionalProperties"] = _rewrite(value, definitions, f"{path}{{}}")
            # `false` is refused by the API server; unknown fields are pruned there instead.
        elif key == "default" and value is None:
            continue
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            result[bound] = value
            result[key] = True
        else:
            result[key] = value

    if result.get("x-kubernetes-int-or-string") and "type" in result:
        # A string field that also takes the number 0 (e.g. `for: 0`): the API server wants no type
        # here, so the string's pattern becomes a CEL rule.
        result.pop("type")
        pattern = result.pop("pattern", ".*")
        result.setdefault("x-kubernetes-validations", []).append(
            {
                "rule": f"type(self) == int ? self == 0 : string(self).matches(r'{pattern}')",
                "message": "write a duration such as 10s, 1m or 500ms, or 0",
            }
        )
    if result.get("type") == "object" and "properties" not in result and "additionalProperties" not in result:
        result["x-kubernetes-preserve-unknown-fields"] = True
    if result.get("format") == "date-time":
        result.pop("default", None)
    return result


def _collapse_any_of(node: dict[str, Any], definitions: dict[str, Any], path: str) -> dict[str, Any]:
    branches = [branch for branch in node["anyOf"] if branch.get("type") != "null"]
    rest = {key: value for key, value in node.items() if key != "anyOf"}
    if node.get("x-kubernetes-int-or-string"):
        types = sorted(branch.get("type", "") for branch in branches)
        if types != ["integer", "string"]:
            raise CrdGenerationError(f"{path}: int-or-string field must be exactly int | str, got {types}")
        return {**rest}
    if len(branches) != 1:
        raise CrdGenerationError(
            f"{path}: a union of {len(branches)} types cannot be expressed in a structural CRD schema"
        )
    branch = branches[0]
    if "$ref" in branch:
        branch = _resolve(branch, definitions)
    return {**branch, **rest}


def _crd(
    *,
    kind: str,
    plural: str,
    scope: str,
    short_names: list[str],
    spec_model: type[BaseModel],
    status_model: type[BaseModel] | None,
    printer_columns: list[dict[str, Any]],
    description: str,
    spec_required: bool,
) -> dict[str, Any]:
    spec_schema = structural_schema(spec_model)
    spec_schema["description"] = spec_schema.get("description") or f"Desired state of the {kind}."
    root: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
        },
    }
    if status_model is not None:
        status_schema = structural_schema(status_model)
        status_schema["description"] = f"Observed state of the {kind}, written by the operator."
        root["properties"]["status"] = status_schema
    if spec_required:
        root["required"] = ["spec"]
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "additionalPrinterColumns": printer_columns,
        "schema": {"openAPIV3Schema": root},
    }
    if status_model is not None:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["chaosguard"],
            },
            "versions": [version],
        },
    }


def experiment_crd() -> dict[str, Any]:
    return _crd(
        kind="ChaosExperiment",
        plural="chaosexperiments",
        scope="Namespaced",
        short_names=["chaosexp", "cex"],
        spec_model=ChaosExperimentSpec,
        status_model=ChaosExperimentStatus,
        description="A chaos experiment: a fault, its targets, its SLI guard and its schedule.",
        spec_required=True,
        printer_columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Action", "type": "string", "jsonPath": ".spec.action"},
            {
                "name": "Targets",
                "type": "integer",
                "jsonPath": ".status.hits",
                "description": "Pods killed or faulted by the current run, else by the last one.",
            },
            {
                "name": "Paused",
                "type": "boolean",
                "jsonPath": ".spec.paused",
                "description": "spec.paused: no fault is in and no round plays (a schedule skips its slots).",
            },
            {"name": "Last-Run", "type": "string", "jsonPath": ".status.lastRun.phase", "priority": 1},
            {"name": "Next-Run", "type": "date", "jsonPath": ".status.nextRunAt", "priority": 1},
            {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def policy_crd() -> dict[str, Any]:
    return _crd(
        kind="ChaosPolicy",
        plural="chaospolicies",
        scope="Cluster",
        short_names=["chaospol"],
        spec_model=ChaosPolicySpec,
        status_model=ChaosPolicyStatus,
        description="Cluster-wide blast-radius policy. Every matching policy applies; the strictest value wins.",
        spec_required=False,
        printer_columns=[
            {"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspend"},
            {"name": "Max-Percent", "type": "integer", "jsonPath": ".spec.maxPercentage"},
            {"name": "Opt-In", "type": "boolean", "jsonPath": ".spec.requireNamespaceOptIn"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def approval_crd() -> dict[str, Any]:
    return _crd(
        kind="ChaosApproval",
        plural="chaosapprovals",
        scope="Namespaced",
        short_names=["capp"],
        spec_model=ChaosApprovalSpec,
        status_model=None,
        description=(
            "An approval of a ChaosExperiment's exact spec. The approver is stamped (and signed) by the "
            "operator's admission webhook from the authenticated request; `chaosguard approve` creates one."
        ),
        spec_required=True,
        printer_columns=[
            {"name": "Experiment", "type": "string", "jsonPath": ".spec.experiment"},
            {"name": "Approver", "type": "string", "jsonPath": ".metadata.annotations.chaosguard\\.dev/approver"},
            {"name": "Comment", "type": "string", "jsonPath": ".spec.comment", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name in crds/ -> CRD object."""
    return {
        f"{GROUP}_chaosexperiments.yaml": experiment_crd(),
        f"{GROUP}_chaospolicies.yaml": policy_crd(),
        f"{GROUP}_chaosapprovals.yaml": approval_crd(),
    }


def render(crd: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=True, width=100)


def stale_files(directory: Path) -> list[Path]:
    """CRD files in `directory` that are missing or differ from what the models generate."""
    stale = []
    for filename, crd in all_crds().items():
        path = directory / filename
        if not path.exists() or path.read_text() != render(crd):
            stale.append(path)
    return stale
