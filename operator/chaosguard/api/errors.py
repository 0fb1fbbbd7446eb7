"""Turns pydantic validation errors into lines a person can act on: `spec.target.value: <rule>`."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(error: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"] if not str(part).startswith("function-"))
        path = ".".join(part for part in (prefix, location) if part)
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    return lines
