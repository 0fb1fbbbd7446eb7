"""The rule objects: one source renders the CRD's CEL and the Python check (the differential
integration test holds both to the real API server; these hold the plumbing)."""

from __future__ import annotations

from typing import Any

import pytest

from chaosguard.api import crdgen, rules
from chaosguard.api.models import ApiModel, LabelSelectorRequirement, NetworkSpec, TargetSpec


def _every_validations_list(node: Any) -> list[list[dict[str, str]]]:
    found = []
    if isinstance(node, dict):
        if "x-kubernetes-validations" in node:
            found.append(node["x-kubernetes-validations"])
        for child in node.values():
            found += _every_validations_list(child)
    elif isinstance(node, list):
        for child in node:
            found += _every_validations_list(child)
    return found


def _models_with_rules() -> list[type[ApiModel]]:
    seen: list[type[ApiModel]] = []
    pending: list[type[ApiModel]] = [ApiModel]
    while pending:
        for sub in pending.pop().__subclasses__():
            pending.append(sub)
            if sub.validation_rules and not sub.__subclasses__():  # a base class's rules reach the CRD in its leaves
                seen.append(sub)
    return seen


@pytest.mark.parametrize("model", _models_with_rules(), ids=lambda m: m.__name__)
def test_every_models_rules_reach_the_crd_as_cel(model: type[ApiModel]) -> None:
    published = _every_validations_list([crd for crd in crdgen.all_crds().values()])
    expected = rules.rendered(model.validation_rules)
    assert any(validations[: len(expected)] == expected for validations in published), model.__name__


def test_the_python_check_uses_the_rules_message() -> None:
    with pytest.raises(ValueError, match=r"spec\.network\.reorder needs spec\.network\.delay"):
        NetworkSpec.model_validate({"reorder": 5, "delay": "0ms"})
    NetworkSpec.model_validate({"reorder": 5, "delay": "1ms"})


def test_the_python_side_sees_schema_defaults_but_not_unwritten_lists() -> None:
    target = TargetSpec.model_validate({"mode": "fixed", "value": 2})
    view = rules.served_view(target)
    assert view["mode"] == "fixed" and "namespaces" not in view and "selector" not in view
    requirement = LabelSelectorRequirement.model_validate({"key": "a", "operator": "Exists"})
    assert "values" not in rules.served_view(requirement)


@pytest.mark.parametrize(
    ("text", "is_cidr"),
    [
        ("10.0.0.0/8", True),
        ("10.1.2.3/16", True),
        ("0.0.0.0/0", True),
        ("fd00::/8", True),
        ("64:ff9b::10.0.0.0/96", True),
        ("10.0.0.0/33", False),
        ("fd00::/129", False),
        ("10.0.0.0", False),
        ("10.0.0.0/016", False),
        ("010.0.0.0/8", False),
        ("::ffff:10.0.0.0/104", False),
        ("fe80::1%eth0/64", False),
        (" 10.0.0.0/8", False),
        ("10.0.0.0/+8", False),
        ("10.0.0.0/٨", False),
    ],
)
def test_cidrs_are_read_as_kubernetes_iscidr_reads_them(text: str, is_cidr: bool) -> None:
    assert rules.is_cidr(text) is is_cidr


def test_rendered_cel_negates_and_combines_with_parentheses() -> None:
    expr = rules.all_of(rules.Implies(rules.Has("a"), rules.Has("b")), rules.Not(rules.Is("c", "x")))
    assert expr.cel("self") == "((!has(self.a) || has(self.b)) && !(self.c == 'x'))"
    assert expr.holds({"a": 1, "b": 2, "c": "y"}) and not expr.holds({"a": 1, "c": "y"})
