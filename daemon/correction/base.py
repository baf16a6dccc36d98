"""What every corrector is given: the model, its settings and prompts, the cache, and where to report."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from daemon.cache import Cache
from daemon.config import CorrectionConfig
from daemon.correction.outcomes import CorrectionStats
from daemon.engine import Engine
from daemon.messages import ProgressReport
from daemon.prompts import Prompts


@dataclass
class CorrectorBase:
    engine: Engine
    config: CorrectionConfig
    prompts: Prompts
    cache: Cache | None = None
    cache_scope: str = ""
    progress: ProgressReport | None = None
    stats: CorrectionStats = field(default_factory=CorrectionStats)
    trace: list[Any] | None = None
    scorer: Engine | None = None  # the model that judges candidates, when not `engine`

    def parts(self) -> dict[str, Any]:
        """These fields, to hand to another corrector that shares them (and so its stats)."""
        return {f.name: getattr(self, f.name) for f in fields(CorrectorBase)}
