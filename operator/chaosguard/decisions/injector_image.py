"""Which images the faults' ephemeral containers run, and when the operator must refuse to start.

There is no default image. The operator's own image carries no tc; a reference guessed from it (a
sibling repository with the same tag) may be missing from the user's registry, where every network
fault would sit in ImagePullBackOff instead of being refused up front. Helm (injector.image) and
kustomize (an `images:` entry for chaosguard-injector) always set it, so only a hand-written
manifest or a `chaosguard run` from a laptop can leave it out, and those are told how to fix it.

The stress fault's stressor runs an image of its own (chaosguard-stressor: the injector's content and
stress-ng, whose libraries alone are four times the injector), so that every network fault pulls only
the small injector. It is optional: an operator without it refuses stress experiments, naming the flag.
"""

from __future__ import annotations

INJECTOR_IMAGE_VARIABLE = "CHAOSGUARD_INJECTOR_IMAGE"
INJECTOR_PULL_POLICY_VARIABLE = "CHAOSGUARD_INJECTOR_PULL_POLICY"
STRESSOR_IMAGE_VARIABLE = "CHAOSGUARD_STRESSOR_IMAGE"
PULL_POLICIES = ("IfNotPresent", "Always", "Never")
DEFAULT_PULL_POLICY = PULL_POLICIES[0]


def settings_problem(image: str, pull_policy: str, stressor_image: str = "") -> str | None:
    """Why the operator cannot run with these images and pull policy (flag, rule, fix), or None."""
    if not image.strip():
        return (
            f"--injector-image (or ${INJECTOR_IMAGE_VARIABLE}) is not set, and there is no default: the "
            "network faults' ephemeral containers run that image, and the operator's own has no tc. Give the "
            "image built from deploy/Dockerfile.injector with the operator's tag, e.g. --injector-image "
            "registry.example.com/chaosguard-injector:0.1.0 (the Helm chart sets it from injector.image, "
            "kustomize from an `images:` entry for chaosguard-injector)"
        )
    if any(character.isspace() for character in image.strip()):
        return f"--injector-image {image!r} is not an image reference: it contains white space"
    if any(character.isspace() for character in stressor_image.strip()):
        return f"--stressor-image {stressor_image!r} is not an image reference: it contains white space"
    if pull_policy not in PULL_POLICIES:
        return (
            f"--injector-pull-policy (or ${INJECTOR_PULL_POLICY_VARIABLE}) is {pull_policy!r}, not an "
            f"imagePullPolicy: use one of {', '.join(PULL_POLICIES)}"
        )
    return None


def stressor_missing() -> str:
    """Why a stress fault cannot go in when the operator was given no stressor image: flag and fix."""
    return (
        f"the operator has no stressor image (--stressor-image or ${STRESSOR_IMAGE_VARIABLE}): the stress "
        "fault's stress-ng runs in the image built from deploy/Dockerfile.injector's `stressor` target, e.g. "
        "registry.example.com/chaosguard-stressor:0.1.0 (Helm: stressor.image; kustomize: an `images:` entry "
        "for chaosguard-stressor)"
    )
