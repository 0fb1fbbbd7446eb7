"""The operator's clock, injectable so tests can stand on a Tuesday afternoon or in a holiday freeze.

`CHAOSGUARD_CLOCK_OFFSET_SECONDS` shifts the operator's idea of now by a fixed amount, read once
at start-up. A fixed offset (not a fixed instant) keeps time moving and stays consistent across a
restart of the operator, so a run that straddles a restart still sees one continuous clock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

OFFSET_VARIABLE = "CHAOSGUARD_CLOCK_OFFSET_SECONDS"


@dataclass(frozen=True)
class Clock:
    offset: timedelta = timedelta(0)

    @classmethod
    def from_environment(cls) -> Clock:
        raw = os.environ.get(OFFSET_VARIABLE, "").strip()
        if not raw:
            return cls()
        try:
            return cls(timedelta(seconds=float(raw)))
        except ValueError:
            raise SystemExit(f"{OFFSET_VARIABLE}={raw!r} is not a number of seconds, e.g. 86400 or -3600") from None

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset
