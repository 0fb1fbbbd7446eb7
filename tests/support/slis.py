"""Reading a run's SLI summaries (`status.currentRun.slis`, `status.lastRun.slis`) as tests meet them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaosguard.api.models import SliTrend
from chaosguard.decisions.samples import TrendPoint, trend_points


def sli_of(run: Mapping[str, Any], name: str) -> dict[str, Any]:
    """One condition's summary in a run's status; {} while the guard has not judged it."""
    return next((dict(sli) for sli in run.get("slis") or [] if sli.get("name") == name), {})


def trend_of(run: Mapping[str, Any], name: str) -> list[TrendPoint]:
    """The points of one condition's trend (each the worse of the samples it stands for)."""
    trend = sli_of(run, name).get("trend")
    return trend_points(SliTrend.model_validate(trend)) if trend else []
