"""`enrichd tune`: every worker x thread split and n_batch measured with the real daemon on a short sample."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.cpus import available_cpus, possible_plans
from daemon.messages import ProgressReport
from daemon.tools.harness import corpus_files, run_daemon_passes


def run_tune(config: Config, corpus: Path, model: Path, limit: int, progress: ProgressReport) -> list[dict[str, Any]]:
    """Every worker x thread split that fits the CPUs, with n_batch 256 and 512, on a short sample."""
    files = corpus_files(corpus, config)[:limit]
    if not files:
        raise ValueError(f"no transcripts in {corpus}")
    config.model.path = model
    rows = []
    for plan in possible_plans(len(available_cpus())):
        for n_batch in (256, 512):
            trial = copy.deepcopy(config)
            trial.workers.count, trial.workers.threads, trial.model.n_batch = plan.count, plan.threads, n_batch
            with tempfile.TemporaryDirectory(prefix="enrichd-tune-") as work:
                result = run_daemon_passes(files, trial, Path(work), progress, modes=("enrichd",))[0]
            row = {"workers": plan.count, "threads": plan.threads, "n_batch": n_batch,
                   "transcripts_per_hour": result.figures()["transcripts_per_hour"], "wall_seconds": round(result.wall_seconds, 1)}
            progress(f"tune: {plan.count} x {plan.threads}, n_batch {n_batch}: {row['transcripts_per_hour']} transcripts/hour")
            rows.append(row)
    return sorted(rows, key=lambda r: -r["transcripts_per_hour"])
