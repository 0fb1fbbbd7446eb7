"""`chaosguard validate` and the API server judge every object of the table alike.

The API server's verdict comes from a server-side dry run (dryRun=All, strict field validation: what
`kubectl apply --dry-run=server` sends) against the generated CRDs, with no webhook, so it is the schema
and its CEL rules alone. The Python verdict is validate's own: the schema refusals of `judge` for an
experiment, the model for a policy. They must agree on accept or refuse, and a refusal must name a
field the other side names too.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from chaosguard.api.errors import describe_validation_error
from chaosguard.api.models import GROUP, VERSION, ChaosPolicy
from chaosguard.cli.offline import Document, judge
from localcluster.controlplane import ControlPlane

from .validation_table import Case, cases, python_only_cases

pytestmark = pytest.mark.controlplane

TABLE = cases()
Verdict = frozenset[str]  # the fields a refusal names; empty: accepted


def _field(path: str) -> str:
    """`spec.target.selector.matchExpressions.0.values` -> `spec.target.selector.matchExpressions[0].values`,
    without pydantic's union branch (`.int`, `.str`)."""
    path = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", path)
    return re.sub(r"\.(int|str|float|bool)$", "", path)


def python_verdict(case: Case) -> Verdict:
    if case.kind == "ChaosPolicy":
        try:
            ChaosPolicy.model_validate(case.body)
        except ValidationError as error:
            return frozenset(_field(line.split(": ", 1)[0]) for line in describe_validation_error(error))
        return frozenset()
    refusals = judge(Document("table", case.body), [], datetime(2026, 11, 24, 14, tzinfo=UTC))
    return frozenset(_field(refusal.message.split(": ", 1)[0]) for refusal in refusals if refusal.rule == "schema")


def server_verdict(api: client.ApiClient, case: Case) -> Verdict:
    objects = client.CustomObjectsApi(api)
    try:
        if case.kind == "ChaosPolicy":
            objects.create_cluster_custom_object(
                GROUP, VERSION, "chaospolicies", case.body, dry_run="All", field_validation="Strict"
            )
        else:
            objects.create_namespaced_custom_object(
                GROUP, VERSION, "default", "chaosexperiments", case.body, dry_run="All", field_validation="Strict"
            )
    except ApiException as error:
        if error.status not in (400, 422):
            raise
        status = json.loads(error.body)
        fields = {cause["field"] for cause in (status.get("details") or {}).get("causes", []) if cause.get("field")}
        # A strict-decoding refusal names the unknown field only in its message.
        fields |= set(re.findall(r'unknown field "([^"]+)"', status.get("message", "")))
        return frozenset(fields or {"?"})
    return frozenset()


def agree(python: Verdict, server: Verdict) -> bool:
    if not python or not server:
        return python == server
    return bool(python & server)


@pytest.fixture(scope="module")
def verdicts(chaosguard_crds: ControlPlane) -> dict[str, tuple[Verdict, Verdict]]:
    with chaosguard_crds.api_client() as api, ThreadPoolExecutor(max_workers=4) as pool:
        served = dict(zip([c.id for c in TABLE], pool.map(lambda case: server_verdict(api, case), TABLE), strict=True))
    return {case.id: (python_verdict(case), served[case.id]) for case in TABLE}


def test_the_table_covers_every_kind_and_both_verdicts(verdicts: dict[str, tuple[Verdict, Verdict]]) -> None:
    assert len(TABLE) >= 100
    accepted = [name for name, (_, server) in verdicts.items() if not server]
    refused = [name for name, (_, server) in verdicts.items() if server]
    assert len(accepted) >= 30 and len(refused) >= 30, (len(accepted), len(refused))
    for prefix in ("latency", "network", "partition", "policy", "min-available", "mode"):
        assert any(case.id.startswith(prefix) for case in TABLE), prefix


@pytest.mark.parametrize("case", TABLE, ids=[case.id for case in TABLE])
def test_validate_and_the_api_server_agree(case: Case, verdicts: dict[str, tuple[Verdict, Verdict]]) -> None:
    python, server = verdicts[case.id]
    assert agree(python, server), (
        f"validate: {'refused ' + ', '.join(sorted(python)) if python else 'accepted'}; "
        f"API server: {'refused ' + ', '.join(sorted(server)) if server else 'accepted'}"
    )


def _python_refusals(case: Case) -> str:
    if case.kind == "ChaosPolicy":
        try:
            ChaosPolicy.model_validate(case.body)
        except ValidationError as error:
            return "; ".join(describe_validation_error(error))
        return ""
    refusals = judge(Document("table", case.body), [], datetime(2026, 11, 24, 14, tzinfo=UTC))
    return "; ".join(refusal.message for refusal in refusals)


@pytest.mark.parametrize(("case", "says"), python_only_cases(), ids=[case.id for case, _ in python_only_cases()])
def test_what_cel_cannot_say_is_refused_by_validate_alone(case: Case, says: str, chaosguard_crds: ControlPlane) -> None:
    with chaosguard_crds.api_client() as api:
        assert server_verdict(api, case) == frozenset()
    assert says in _python_refusals(case)
