"""README's install section is what the e2e tests run, command for command (localcluster/install.py)."""

from __future__ import annotations

import re

import pytest

from localcluster import install
from localcluster.controlplane import REPO_ROOT


def readme_install_section() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    found = re.search(r"^## Install in a cluster\n(.*?)^## ", text, re.M | re.S)
    assert found, "README has no '## Install in a cluster' section"
    return found.group(1)


def shell_blocks(section: str) -> list[list[str]]:
    return [block.strip().splitlines() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


@pytest.mark.parametrize("name", ["helm", "kustomize"])
def test_readme_shows_the_tested_install_step_for_step(name: str) -> None:
    steps = {"helm": install.HELM_INSTALL, "kustomize": install.KUSTOMIZE_INSTALL}[name]
    wanted = install.readme_commands(steps)
    blocks = shell_blocks(readme_install_section())
    assert wanted in blocks, f"README's {name} install should be exactly:\n" + "\n".join(wanted)
