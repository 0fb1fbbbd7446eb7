"""`chaosguard run` is told the injector image, or refuses to start: there is no default (see
chaosguard.decisions.injector_image for why)."""

from __future__ import annotations

import pytest

from chaosguard.cli.main import EXIT_UNREADABLE, main
from chaosguard.decisions.injector_image import (
    INJECTOR_IMAGE_VARIABLE,
    INJECTOR_PULL_POLICY_VARIABLE,
    PULL_POLICIES,
    STRESSOR_IMAGE_VARIABLE,
    settings_problem,
    stressor_missing,
)


def test_an_image_and_a_pull_policy_are_enough() -> None:
    for policy in PULL_POLICIES:
        assert settings_problem("registry.example.com/chaosguard-injector:0.1.0", policy) is None
    assert settings_problem("chaosguard-injector@sha256:" + "0" * 64, "IfNotPresent") is None


@pytest.mark.parametrize("image", ["", "   "])
def test_no_image_is_refused_naming_the_flag_the_variable_and_the_fix(image: str) -> None:
    problem = settings_problem(image, "IfNotPresent")
    assert problem is not None
    assert "--injector-image" in problem and INJECTOR_IMAGE_VARIABLE in problem
    assert "deploy/Dockerfile.injector" in problem and "injector.image" in problem


def test_a_reference_with_white_space_or_an_unknown_pull_policy_is_refused() -> None:
    assert "white space" in (settings_problem("chaosguard-injector :dev", "IfNotPresent") or "")
    problem = settings_problem("chaosguard-injector:dev", "Sometimes") or ""
    assert "--injector-pull-policy" in problem and INJECTOR_PULL_POLICY_VARIABLE in problem and "Never" in problem


def test_run_refuses_to_start_without_an_injector_image(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(INJECTOR_IMAGE_VARIABLE, raising=False)
    assert main(["run"]) == EXIT_UNREADABLE
    assert "ERROR --injector-image" in capsys.readouterr().err


def test_run_refuses_an_unknown_pull_policy_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(INJECTOR_IMAGE_VARIABLE, "chaosguard-injector:dev")
    monkeypatch.setenv(INJECTOR_PULL_POLICY_VARIABLE, "always")
    assert main(["run"]) == EXIT_UNREADABLE
    assert "'always', not an imagePullPolicy" in capsys.readouterr().err


def test_the_stressor_image_is_optional_but_must_be_a_reference() -> None:
    assert settings_problem("chaosguard-injector:dev", "IfNotPresent", "") is None
    assert settings_problem("chaosguard-injector:dev", "IfNotPresent", "chaosguard-stressor:dev") is None
    problem = settings_problem("chaosguard-injector:dev", "IfNotPresent", "chaosguard stressor") or ""
    assert "--stressor-image" in problem and "white space" in problem


def test_a_missing_stressor_names_the_flag_the_variable_and_where_the_image_comes_from() -> None:
    problem = stressor_missing()
    assert "--stressor-image" in problem and STRESSOR_IMAGE_VARIABLE in problem
    assert "deploy/Dockerfile.injector" in problem and "stressor.image" in problem
