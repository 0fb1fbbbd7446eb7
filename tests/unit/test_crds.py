from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from chaosguard.api import crdgen
from chaosguard.api.crdgen import CrdGenerationError, stale_files, structural_schema
from chaosguard.api.models import ChaosExperimentSpec

CRDS = Path(__file__).resolve().parents[2] / "crds"


def walk(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(walk(value))
    return found


def test_committed_crds_match_the_models() -> None:
    assert stale_files(CRDS) == [], "crds/ is out of date with the models: run `make crds`"


def test_a_model_change_without_make_crds_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    class ChangedSpec(ChaosExperimentSpec):
        new_knob: int = 3

    monkeypatch.setattr(crdgen, "ChaosExperimentSpec", ChangedSpec)
    assert [path.name for path in stale_files(CRDS)] == ["chaosguard.dev_chaosexperiments.yaml"]


def test_schemas_are_structural() -> None:
    for crd in crdgen.all_crds().values():
        for node in walk(crd["spec"]["versions"][0]["schema"]):
            assert not {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "const"} & node.keys(), node
            assert node.get("additionalProperties") is not False


def test_cross_field_rules_reach_the_api_server() -> None:
    schema = crdgen.experiment_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    messages = [rule["message"] for rule in spec["x-kubernetes-validations"]]
    assert "spec.latency is required when action is latency" in messages
    target_rules = spec["properties"]["target"]["x-kubernetes-validations"]
    assert any("target.value is required" in rule["message"] for rule in target_rules)
    assert spec["properties"]["podKill"]["properties"]["minAvailable"]["x-kubernetes-int-or-string"] is True


def test_unions_that_cannot_be_structural_are_refused() -> None:
    class Ambiguous(BaseModel):
        value: int | list[str]

    with pytest.raises(CrdGenerationError, match="union of 2 types"):
        structural_schema(Ambiguous)
