"""The stress fault's pure parts: sizes, a pod's memory limit, the policy caps, the argv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chaosguard.api.actions import Action
from chaosguard.api.models import ChaosExperimentSpec, ChaosPolicy
from chaosguard.cli.main import main
from chaosguard.decisions import stress
from chaosguard.decisions.policy import combine, static_refusals, stress_refusals

MI = 2**20
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def spec(**block: Any) -> ChaosExperimentSpec:
    return ChaosExperimentSpec.model_validate(
        {"action": "stress", "stress": block, "target": {"selector": {"matchLabels": {"app": "a"}}}, "duration": "1m"}
    )


def policy(name: str = "caps", **fields: Any) -> ChaosPolicy:
    return ChaosPolicy.model_validate({"metadata": {"name": name}, "spec": fields})


def pod(*limits: str | None, pod_level: str | None = None) -> dict[str, Any]:
    containers = [{"name": f"c{i}", "resources": {"limits": {"memory": m}} if m else {}} for i, m in enumerate(limits)]
    body: dict[str, Any] = {"spec": {"containers": containers}}
    if pod_level:
        body["spec"]["resources"] = {"limits": {"memory": pod_level}}
    return body


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256Mi", stress.Size(bytes=256 * MI)),
        ("1G", stress.Size(bytes=10**9)),
        ("500000000", stress.Size(bytes=500_000_000)),
        ("50%", stress.Size(percent=50)),
        ("007%", stress.Size(percent=7)),
    ],
)
def test_sizes(text: str, size: stress.Size) -> None:
    assert stress.parse_size(text) == size


def test_the_pods_memory_limit_is_the_sum_of_its_containers_or_its_own() -> None:
    assert stress.pod_memory_limit(pod("128Mi", "0.5Gi")) == 128 * MI + 512 * MI
    assert stress.pod_memory_limit(pod("128Mi", None)) is None  # the kubelet sets no pod limit then
    assert stress.pod_memory_limit(pod(None, pod_level="1Gi")) == 1024 * MI
    assert stress.pod_memory_limit(pod("1e9")) == 10**9


def test_a_percentage_needs_a_limit_and_says_which_field_and_fix() -> None:
    assert stress.stress_bytes("50%", 256 * MI, "ns/p") == 128 * MI
    assert stress.stress_bytes("64Mi", None, "ns/p") == 64 * MI
    with pytest.raises(stress.StressRefusal) as refused:
        stress.stress_bytes("50%", None, "ns/p")
    assert refused.value.field == "spec.stress.memory.size"
    assert "pod ns/p has none" in str(refused.value) and "give every container" in str(refused.value)
    assert "absolute size such as 256Mi" in str(refused.value)


def test_max_stress_load_caps_workers_times_load() -> None:
    effective = combine([policy(maxStressLoad=100)])
    assert stress_refusals(spec(cpu={"workers": 2, "load": 50}), effective) == []
    (refusal,) = stress_refusals(spec(cpu={"workers": 2, "load": 60}), effective)
    assert refusal.rule == "max-stress-load" and refusal.field == "spec.stress.cpu"
    assert "120% of one CPU" in refusal.message and "ChaosPolicy/caps" in refusal.message
    assert "at most 100" in refusal.message
    # Admission, validate and plan see it through the static rules.
    assert [r.rule for r in static_refusals(spec(cpu={"workers": 4}), "ns", effective, {})] == ["max-stress-load"]


def test_the_tightest_load_cap_wins() -> None:
    effective = combine([policy("a", maxStressLoad=300), policy("b", maxStressLoad=150)])
    assert effective.max_stress_load == (150, "ChaosPolicy/b")


def test_max_stress_memory_of_the_same_form_is_judged_offline() -> None:
    effective = combine([policy(maxStressMemory="256Mi")])
    assert stress_refusals(spec(memory={"size": "256Mi"}), effective) == []
    (refusal,) = stress_refusals(spec(memory={"size": "1Gi"}), effective)
    assert refusal.rule == "max-stress-memory" and refusal.field == "spec.stress.memory.size"
    assert "set spec.stress.memory.size to 256Mi or less" in refusal.message
    percent = combine([policy(maxStressMemory="50%")])
    assert [r.rule for r in stress_refusals(spec(memory={"size": "80%"}), percent)] == ["max-stress-memory"]


def test_max_stress_memory_of_the_other_form_waits_for_the_pods_limit() -> None:
    percent = combine([policy(maxStressMemory="50%")])
    assert stress_refusals(spec(memory={"size": "200Mi"}), percent) == []  # offline: cannot tell
    assert stress_refusals(spec(memory={"size": "200Mi"}), percent, "ns/p", 512 * MI) == []
    (refusal,) = stress_refusals(spec(memory={"size": "300Mi"}), percent, "ns/p", 512 * MI)
    assert "pod ns/p's memory limit is" in refusal.message
    (no_limit,) = stress_refusals(spec(memory={"size": "300Mi"}), percent, "ns/p", None)
    assert no_limit.rule == "max-stress-memory" and "has no memory limit" in no_limit.message
    absolute = combine([policy(maxStressMemory="100Mi")])
    assert [r.rule for r in stress_refusals(spec(memory={"size": "50%"}), absolute, "ns/p", 512 * MI)] == [
        "max-stress-memory"
    ]


def test_every_memory_cap_holds() -> None:
    effective = combine([policy("a", maxStressMemory="1Gi"), policy("b", maxStressMemory="10%")])
    (offline,) = stress_refusals(spec(memory={"size": "20%"}), effective)
    assert "ChaosPolicy/b" in offline.message
    against_a_pod = stress_refusals(spec(memory={"size": "20%"}), effective, "ns/p", 10 * 1024 * MI)
    assert sorted(r.message.split("allowed by ")[1][:13] for r in against_a_pod) == ["ChaosPolicy/a", "ChaosPolicy/b"]


def test_stress_ng_arguments_and_the_argv() -> None:
    assert stress.stress_ng_arguments(2, 50, None) == ["--cpu", "2", "--cpu-load", "50"]
    assert stress.stress_ng_arguments(None, None, 1000) == [
        "--vm", "1", "--vm-bytes", "1000", "--vm-keep", "--vm-hang", "0",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="needs CPU workers or a memory size"):
        stress.stress_ng_arguments(None, None, None)
    argv = stress.stressor_command("SCRIPT", 2_000_000_000, "/dev/shm/x", ["--cpu", "1"], now=1_999_999_000)
    assert argv == ["sh", "-c", "SCRIPT", stress.PROG, "2000000000", "/dev/shm/x", "--", "--cpu", "1"]
    with pytest.raises(ValueError, match="24 h"):
        stress.stressor_command("SCRIPT", 2_000_000_000, "/dev/shm/x", ["--cpu", "1"], now=1_000_000_000)
    assert stress.clear_command(stress.stop_file("run 7/x"))[-1] == "/dev/shm/chaosguard-stress-stop-run-7-x"


def test_the_row_needs_no_capability_and_the_ephemeral_container_right() -> None:
    facts = Action.STRESS.facts
    assert facts.capabilities == () and facts.forbidden_by_pod_security == ()
    assert str(facts.permission) == "patch pods/ephemeralcontainers"
    assert not facts.injector and not facts.repeats and facts.record_kind == "Stress"
    assert (
        static_refusals(spec(cpu={}), "ns", combine([]), {"ns": {"pod-security.kubernetes.io/enforce": "restricted"}})
        == []
    )


def test_validate_judges_the_stress_examples_offline_by_the_policy_caps(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "caps.yaml"
    policy.write_text(
        "apiVersion: chaosguard.dev/v1alpha1\nkind: ChaosPolicy\nmetadata: {name: caps}\n"
        "spec: {allowedActions: [stress], maxStressLoad: 160, maxStressMemory: 50%}\n"
    )
    examples = ["-f", str(EXAMPLES / "stress-cpu.yaml"), "-f", str(EXAMPLES / "stress-memory.yaml")]
    assert main(["validate", *examples, "--policy", str(policy)]) == 0, capsys.readouterr().out
    capsys.readouterr()
    policy.write_text(policy.read_text().replace("160", "100").replace("50%", "40%"))
    assert main(["validate", *examples, "--policy", str(policy)]) == 1
    out = capsys.readouterr().out
    assert "REFUSED max-stress-load: spec.stress.cpu asks for 2 workers at 80%, 160% of one CPU" in out, out
    assert "REFUSED max-stress-memory: spec.stress.memory.size 50% is more than the 40%" in out, out
    shipped = ["--policy", str(EXAMPLES / "policy-default.yaml")]
    assert main(["validate", *examples, *shipped]) == 1
    assert "REFUSED allowed-actions: action 'stress' is not allowed" in capsys.readouterr().out
