"""Cross-field validation rules written once: each renders the CEL the API server runs and the Python
check `chaosguard validate` and the operator run, with one message.

Why small rule objects and not the CRD's CEL evaluated in Python: the CEL libraries on PyPI
(cel-python 0.5, maintained; Google's young cel-expr-python) implement standard CEL, not the
Kubernetes library our rules need (`isCIDR` for destination CIDRs; `cidr()`, `quantity()` and the
rest alike), so each such function would need a hand-written Python twin, the very duplication this
removes, and a CEL interpreter would join the admission path as a new dependency. Here a rule is
built from a dozen small nodes (has, comparisons, regex, every item, a CIDR check) whose CEL and
Python renderings sit side by side in one class, short enough to read against each other; the
differential test (tests/integration/test_validation_differential.py) holds both to the real API
server.

The Python side sees an object as the API server's CEL does: the fields the author wrote plus the
schema's defaults (a pydantic `default` is in the CRD; a `default_factory` is not), see `served_view`.

Rules that CEL cannot say stay pydantic validators in models.py, and only there: a cron expression's
syntax, an IANA time zone, the safety of an allowedPrometheusURLs prefix (`url_parts`), which windows
Sloth records, and unique names across a policy's conditions and error budgets together. The API
server accepts such an object; `validate` and the operator refuse it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel


class Expr(Protocol):
    def cel(self, var: str) -> str:
        """The expression in CEL, about the object (or list item) named `var`."""

    def holds(self, subject: Any) -> bool:
        """The same judgement in Python, about the object as the API server sees it."""


def _literal(value: object) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return json.dumps(value)


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.12f}".rstrip("0")


def _regex(pattern: str) -> str:
    assert "'" not in pattern, "a regex with a quote needs escaping for CEL"
    return f"r'{pattern}'"


@dataclass(frozen=True)
class Has:
    field: str

    def cel(self, var: str) -> str:
        return f"has({var}.{self.field})"  # a call: safe to negate with !

    def holds(self, subject: Any) -> bool:
        return self.field in subject


@dataclass(frozen=True)
class Is:
    """A field that is always present (required, or with a default) equals a value."""

    field: str
    value: str

    def cel(self, var: str) -> str:
        return f"({var}.{self.field} == {_literal(self.value)})"

    def holds(self, subject: Any) -> bool:
        return bool(subject.get(self.field) == self.value)


@dataclass(frozen=True)
class OneOf:
    field: str
    values: tuple[str, ...]

    def cel(self, var: str) -> str:
        return f"({var}.{self.field} in [{', '.join(map(_literal, self.values))}])"

    def holds(self, subject: Any) -> bool:
        return subject.get(self.field) in self.values


@dataclass(frozen=True)
class Above:
    """A number field present and above `bound`."""

    field: str
    bound: float = 0

    def cel(self, var: str) -> str:
        return f"(has({var}.{self.field}) && {var}.{self.field} > {_number(self.bound)})"

    def holds(self, subject: Any) -> bool:
        return self.field in subject and subject[self.field] > self.bound


@dataclass(frozen=True)
class AtLeast:
    """A number field present and at least `bound`."""

    field: str
    bound: float

    def cel(self, var: str) -> str:
        return f"(has({var}.{self.field}) && {var}.{self.field} >= {_number(self.bound)})"

    def holds(self, subject: Any) -> bool:
        return self.field in subject and subject[self.field] >= self.bound


@dataclass(frozen=True)
class AtMost:
    """A number field absent or at most `bound`."""

    field: str
    bound: float

    def cel(self, var: str) -> str:
        return f"(!has({var}.{self.field}) || {var}.{self.field} <= {_number(self.bound)})"

    def holds(self, subject: Any) -> bool:
        return self.field not in subject or subject[self.field] <= self.bound


@dataclass(frozen=True)
class NonZeroText:
    """A field present whose text (a duration, a rate or an SLO window, already of its pattern's form)
    is above zero: of those forms, exactly the ones with a digit other than 0."""

    field: str

    def cel(self, var: str) -> str:
        return f"(has({var}.{self.field}) && {var}.{self.field}.matches('[1-9]'))"

    def holds(self, subject: Any) -> bool:
        return self.field in subject and re.search("[1-9]", str(subject[self.field])) is not None


@dataclass(frozen=True)
class NonEmpty:
    """A list present with at least one item (a list the author left out is absent on the server)."""

    field: str

    def cel(self, var: str) -> str:
        return f"(has({var}.{self.field}) && size({var}.{self.field}) > 0)"

    def holds(self, subject: Any) -> bool:
        return len(subject.get(self.field) or ()) > 0


@dataclass(frozen=True)
class Contains:
    """A string field absent, or containing `text`."""

    field: str
    text: str

    def cel(self, var: str) -> str:
        return f"(!has({var}.{self.field}) || {var}.{self.field}.contains({_literal(self.text)}))"

    def holds(self, subject: Any) -> bool:
        return self.field not in subject or self.text in subject[self.field]


@dataclass(frozen=True)
class Matches:
    """The subject itself (a list item) matches a regular expression somewhere (RE2 and re agree on
    the plain expressions used here)."""

    pattern: str

    def cel(self, var: str) -> str:
        return f"{var}.matches({_regex(self.pattern)})"  # a call: safe to negate with !

    def holds(self, subject: Any) -> bool:
        return re.search(self.pattern, str(subject)) is not None


@dataclass(frozen=True)
class IsCidr:
    """The subject is a CIDR as Kubernetes' CEL `isCIDR` reads it (Go's netip.ParsePrefix): an address
    without zone or leading zeros, an IPv6 address not IPv4-mapped, and a prefix length in range
    written without leading zeros. Host bits may be set."""

    def cel(self, var: str) -> str:
        return f"isCIDR({var})"

    def holds(self, subject: Any) -> bool:
        return is_cidr(str(subject))


@dataclass(frozen=True)
class CountOrPercent:
    """An int-or-string field absent, a count of 0 or more, or a percentage from 0% to 100%."""

    field: str
    PERCENT = r"^0*([0-9]|[1-9][0-9]|100)%$"

    def cel(self, var: str) -> str:
        value = f"{var}.{self.field}"
        percent = f"string({value}).matches({_regex(self.PERCENT)})"
        return f"(!has({value}) || (type({value}) == int ? {value} >= 0 : {percent}))"

    def holds(self, subject: Any) -> bool:
        if self.field not in subject:
            return True
        value = subject[self.field]
        if isinstance(value, int) and not isinstance(value, bool):
            return value >= 0
        return isinstance(value, str) and re.search(self.PERCENT, value) is not None


@dataclass(frozen=True)
class Each:
    """Every item of a list field (absent: none) satisfies `item`, which is about the variable `item`."""

    field: str
    item: Expr

    def cel(self, var: str) -> str:
        return f"(!has({var}.{self.field}) || {var}.{self.field}.all(item, {self.item.cel('item')}))"

    def holds(self, subject: Any) -> bool:
        return all(self.item.holds(element) for element in subject.get(self.field) or ())


@dataclass(frozen=True)
class Unique:
    """No two items of a list field have the same `key`."""

    field: str
    key: str

    def cel(self, var: str) -> str:
        items = f"{var}.{self.field}"
        return f"(!has({items}) || {items}.all(a, {items}.exists_one(b, b.{self.key} == a.{self.key})))"

    def holds(self, subject: Any) -> bool:
        keys = [element.get(self.key) for element in subject.get(self.field) or ()]
        return len(keys) == len(set(keys))


@dataclass(frozen=True)
class ExactlyOne:
    parts: tuple[Expr, ...]

    def cel(self, var: str) -> str:
        listed = ", ".join(part.cel(var) for part in self.parts)
        return f"([{listed}].filter(given, given).size() == 1)"

    def holds(self, subject: Any) -> bool:
        return sum(part.holds(subject) for part in self.parts) == 1


@dataclass(frozen=True)
class Same:
    left: Expr
    right: Expr

    def cel(self, var: str) -> str:
        return f"({self.left.cel(var)} == {self.right.cel(var)})"

    def holds(self, subject: Any) -> bool:
        return self.left.holds(subject) == self.right.holds(subject)


@dataclass(frozen=True)
class Not:
    inner: Expr

    def cel(self, var: str) -> str:
        return f"!{self.inner.cel(var)}"

    def holds(self, subject: Any) -> bool:
        return not self.inner.holds(subject)


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Expr, ...]

    def cel(self, var: str) -> str:
        return "(" + " && ".join(part.cel(var) for part in self.parts) + ")"

    def holds(self, subject: Any) -> bool:
        return all(part.holds(subject) for part in self.parts)


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Expr, ...]

    def cel(self, var: str) -> str:
        return "(" + " || ".join(part.cel(var) for part in self.parts) + ")"

    def holds(self, subject: Any) -> bool:
        return any(part.holds(subject) for part in self.parts)


@dataclass(frozen=True)
class Implies:
    condition: Expr
    consequence: Expr

    def cel(self, var: str) -> str:
        return f"(!{self.condition.cel(var)} || {self.consequence.cel(var)})"

    def holds(self, subject: Any) -> bool:
        return not self.condition.holds(subject) or self.consequence.holds(subject)


def all_of(*parts: Expr) -> AllOf:
    return AllOf(parts)


def any_of(*parts: Expr) -> AnyOf:
    return AnyOf(parts)


@dataclass(frozen=True)
class Rule:
    expr: Expr
    message: str

    def render(self) -> dict[str, str]:
        return {"rule": self.expr.cel("self"), "message": self.message}


def is_cidr(text: str) -> bool:
    address, slash, bits = text.rpartition("/")
    if not slash or not bits.isascii() or not bits.isdigit() or (len(bits) > 1 and bits.startswith("0")):
        return False
    if "%" in address:
        return False
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return False
    return int(bits) <= parsed.max_prefixlen


def served_view(model: BaseModel) -> dict[str, Any]:
    """The object as the API server's CEL sees it: what the author wrote and the schema's defaults.
    A field with a `default_factory` has no default in the CRD, so it is absent unless written."""
    wire: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    for name, field in type(model).model_fields.items():
        if field.default_factory is not None and name not in model.model_fields_set:
            wire.pop(field.alias or name, None)
    return wire


def broken(rules: Sequence[Rule], subject: Mapping[str, Any]) -> list[str]:
    """The messages of the rules `subject` breaks, in order."""
    return [rule.message for rule in rules if not rule.expr.holds(subject)]


def rendered(rules: Sequence[Rule]) -> list[dict[str, str]]:
    return [rule.render() for rule in rules]


# --------------------------------------------------------------------------- the rules, by model

SELECTOR_REQUIREMENT = (
    Rule(
        Same(OneOf("operator", ("In", "NotIn")), NonEmpty("values")),
        "matchExpressions: operators In and NotIn need at least one entry in values; Exists and DoesNotExist "
        "take no values",
    ),
)

POD_KILL = (
    Rule(
        CountOrPercent("minAvailable"),
        "spec.podKill.minAvailable: write a count such as 2 or a percentage from 0% to 100% such as '50%'",
    ),
)

CONTAINER_RESTART = (
    Rule(
        CountOrPercent("minAvailable"),
        "spec.containerRestart.minAvailable: write a count such as 2 or a percentage from 0% to 100% such as '50%'",
    ),
)

CIDRS_PARSE = Rule(
    Each("destinationCIDRs", IsCidr()),
    "destinationCIDRs: an entry is not a CIDR such as 10.0.0.0/8 or fd00::/8 (an address, a slash, a prefix "
    "length of at most 32 or 128, no leading zeros)",
)

LATENCY = (
    CIDRS_PARSE,
    Rule(NonZeroText("delay"), "spec.latency.delay adds no delay: give a delay above 0, e.g. 200ms"),
    Rule(
        Implies(Above("correlation"), NonZeroText("jitter")),
        "spec.latency.correlation only correlates jitter: set spec.latency.jitter, or drop correlation",
    ),
)

SMALLEST_TC_PERCENT = 0.000001  # tc reads percentages to six decimals (netem.tc_percent)
_PERCENTAGES = ("loss", "corrupt", "duplicate", "reorder")

NETWORK = (
    CIDRS_PARSE,
    Rule(
        any_of(NonZeroText("delay"), *(Above(name) for name in _PERCENTAGES), NonZeroText("rate")),
        "spec.network impairs nothing: set at least one of delay, loss, corrupt, duplicate, reorder or rate, above 0",
    ),
    *(
        Rule(
            Implies(Above(name), AtLeast(name, SMALLEST_TC_PERCENT)),
            f"spec.network.{name} is below the smallest percentage tc takes, {SMALLEST_TC_PERCENT:f}; "
            f"give {SMALLEST_TC_PERCENT:f} or more, or leave {name} out",
        )
        for name in _PERCENTAGES
    ),
    Rule(
        Implies(Above("reorder"), NonZeroText("delay")),
        "spec.network.reorder needs spec.network.delay: netem reorders by sending some packets without the "
        "delay; set a delay such as 10ms",
    ),
    Rule(
        Implies(Above("correlation"), NonZeroText("jitter")),
        "spec.network.correlation only correlates jitter: set spec.network.jitter, or drop correlation",
    ),
    Rule(Implies(Has("lossCorrelation"), Has("loss")), "spec.network.lossCorrelation needs spec.network.loss"),
    Rule(
        Implies(Has("reorderCorrelation"), Has("reorder")),
        "spec.network.reorderCorrelation needs spec.network.reorder",
    ),
    Rule(
        Implies(Has("rate"), NonZeroText("rate")),
        "spec.network.rate caps the bandwidth at 0: give a rate above 0, e.g. 1mbit",
    ),
)

PARTITION = (
    CIDRS_PARSE,
    Rule(
        Each("destinationCIDRs", Not(Matches("/0+$"))),
        "spec.partition.destinationCIDRs: a /0 CIDR covers every address, the node's and the API server's too; "
        "name the addresses to cut off, e.g. 10.1.0.0/16",
    ),
)

STRESS = (
    Rule(
        any_of(Has("cpu"), Has("memory")),
        "spec.stress stresses nothing: set spec.stress.cpu (workers, load) or spec.stress.memory (size), or both",
    ),
)

STRESS_MEMORY = (
    Rule(
        NonZeroText("size"),
        "spec.stress.memory.size holds no memory: give a size above 0, such as 256Mi or 50%",
    ),
)

TARGET = (
    Rule(
        Implies(OneOf("mode", ("fixed", "fixed-percent")), Has("value")),
        "target.value is required for mode fixed and fixed-percent",
    ),
    Rule(
        Implies(OneOf("mode", ("one", "all")), Not(Has("value"))), "target.value must be omitted for mode one and all"
    ),
    Rule(
        Implies(Is("mode", "fixed-percent"), AtMost("value", 100)),
        "target.value is a percentage for fixed-percent: use 1 to 100",
    ),
)


NODE_DRAIN = (
    Rule(
        Implies(OneOf("mode", ("fixed", "fixed-percent")), Has("value")),
        "spec.nodeDrain.value is required for mode fixed and fixed-percent",
    ),
    Rule(
        Implies(OneOf("mode", ("one", "all")), Not(Has("value"))),
        "spec.nodeDrain.value must be omitted for mode one and all",
    ),
    Rule(
        Implies(Is("mode", "fixed-percent"), AtMost("value", 100)),
        "spec.nodeDrain.value is a percentage for fixed-percent: use 1 to 100",
    ),
)


def _conditions_have_endpoints(where: str) -> Rule:
    return Rule(
        Implies(Not(Has("prometheus")), Each("conditions", Has("prometheus"))),
        f"{where}: a condition has no Prometheus: set steadyState.prometheus.url or the condition's own prometheus.url",
    )


STEADY_STATE = (
    Rule(
        NonZeroText("interval"),
        "steadyState.interval must be longer than 0 (the guard asks once per interval), e.g. 5s",
    ),
    _conditions_have_endpoints("steadyState"),
    Rule(Unique("conditions", "name"), "steadyState: condition names must be unique"),
)


def _block(action: str, field: str) -> tuple[Rule, Rule]:
    return (
        Rule(Implies(Is("action", action), Has(field)), f"spec.{field} is required when action is {action}"),
        Rule(Implies(Has(field), Is("action", action)), f"spec.{field} is only allowed when action is {action}"),
    )


EXPERIMENT = (
    *_block("latency", "latency"),
    *_block("network", "network"),
    *_block("partition", "partition"),
    *_block("node-drain", "nodeDrain"),
    *_block("stress", "stress"),
    *_block("container-restart", "containerRestart"),
    Rule(Implies(Has("podKill"), Is("action", "pod-kill")), "spec.podKill is only allowed when action is pod-kill"),
    Rule(
        Implies(Has("interval"), Is("action", "pod-kill")),
        "spec.interval repeats kills and is only allowed when action is pod-kill",
    ),
    Rule(NonZeroText("duration"), "spec.duration must be longer than 0, e.g. 5m"),
    Rule(Implies(Has("interval"), NonZeroText("interval")), "spec.interval must be longer than 0, e.g. 1m"),
)

WINDOW_PLACEHOLDER = "{{.window}}"  # Sloth's placeholder in SLI event queries, so they can be pasted as they are

ERROR_BUDGET = (
    Rule(
        ExactlyOne((any_of(Has("errorQuery"), Has("totalQuery")), Has("ratioQuery"), Has("sloth"), Has("pyrra"))),
        "errorBudgets: give exactly one SLI source (errorQuery with totalQuery, ratioQuery, sloth or pyrra)",
    ),
    Rule(
        Same(Has("errorQuery"), Has("totalQuery")),
        "errorBudgets: errorQuery and totalQuery go together; give both, or use ratioQuery",
    ),
    Rule(
        Same(Has("objective"), Not(any_of(Has("sloth"), Has("pyrra")))),
        "errorBudgets: objective is required with queries (e.g. objective: 99.9) and refused with sloth or pyrra, "
        "which record their own objective",
    ),
    Rule(
        any_of(Has("minBudgetRemaining"), Has("maxBurnRate")),
        "errorBudgets: set minBudgetRemaining, maxBurnRate or both; a gate with neither checks nothing",
    ),
    Rule(
        all_of(*(Contains(name, WINDOW_PLACEHOLDER) for name in ("errorQuery", "totalQuery", "ratioQuery"))),
        f"errorBudgets: a query must contain {WINDOW_PLACEHOLDER} where its range goes, e.g. "
        f"rate(x[{WINDOW_PLACEHOLDER}]), so chaosguard can ask it over the SLO window and the burn-rate window",
    ),
    Rule(
        all_of(NonZeroText("window"), NonZeroText("burnRateWindow")),
        "errorBudgets: window and burnRateWindow must be longer than 0, e.g. 30d and 5m",
    ),
)

POLICY_STEADY_STATE = (
    Rule(NonZeroText("interval"), "steadyState.interval must be longer than 0, e.g. 5s"),
    Rule(
        any_of(NonEmpty("conditions"), NonEmpty("errorBudgets"), Has("quietAlerts")),
        "steadyState needs conditions, errorBudgets or quietAlerts",
    ),
    Rule(
        Implies(any_of(NonEmpty("errorBudgets"), Has("quietAlerts")), Has("prometheus")),
        "errorBudgets and quietAlerts are asked of steadyState.prometheus: set its url",
    ),
    _conditions_have_endpoints("steadyState"),
)
