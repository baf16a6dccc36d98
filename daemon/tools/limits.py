"""`enrichd bench --modes limit`: llama.cpp's own prompt and generation rates for the model on this machine, and
the floor they put under the daemon's wall time."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

from daemon.config import LoggingConfig
from daemon.engine import EngineStats
from daemon.engine.llama import LlamaEngine
from daemon.engine.runtime import LlamaSettings
from daemon.logs import setup_logging
from daemon.messages import ProgressReport

LIMIT_PROMPT_TOKENS, LIMIT_GENERATED_TOKENS = 512, 64


def _generation_rate(model: str, threads: int, cpus: list[int], results: Any) -> None:
    os.sched_setaffinity(0, cpus)
    setup_logging(LoggingConfig(level="WARNING"))
    engine = LlamaEngine(Path(model), LlamaSettings(n_ctx=1024, n_threads=threads))
    results.put(engine.generation_rate("Raconte une longue histoire : il était une fois", LIMIT_GENERATED_TOKENS))


def measure_limits(model: Path, cpus: list[int], progress: ProgressReport) -> dict[str, float]:
    """Prompt tokens/s with every CPU (batch of 512), and generation tokens/s: one sequence on every CPU,
    and the aggregate of one single-threaded process per CPU running at once."""
    engine = LlamaEngine(model, LlamaSettings(n_ctx=1024, n_batch=512, n_threads=len(cpus)))
    prompt_rate = engine.prompt_rate("Bonjour, je vous appelle au sujet de ma facture. ", LIMIT_PROMPT_TOKENS)
    engine.close()
    spawn = multiprocessing.get_context("spawn")
    rates: dict[str, float] = {"prompt_tokens_per_second": round(prompt_rate, 2)}
    for label, plan in (("generation_tokens_per_second_one_sequence", [cpus]),
                        ("generation_tokens_per_second_aggregate", [[c] for c in cpus])):
        queue = spawn.Queue()
        processes = [spawn.Process(target=_generation_rate, args=(str(model), len(group), group, queue)) for group in plan]
        for p in processes:
            p.start()
        values = [queue.get(timeout=600) for _ in processes]
        for p in processes:
            p.join()
        rates[label] = round(sum(values), 2)
    progress(f"limit: prompt {rates['prompt_tokens_per_second']} tokens/s, generation "
             f"{rates['generation_tokens_per_second_one_sequence']} (one sequence) / "
             f"{rates['generation_tokens_per_second_aggregate']} (aggregate) tokens/s")
    return rates


def floor(limits: dict[str, float], used: EngineStats, wall_seconds: float) -> dict[str, float]:
    """The least time these tokens could take at llama.cpp's own rates, and the daemon's efficiency against it."""
    best_generation = max(limits["generation_tokens_per_second_one_sequence"], limits["generation_tokens_per_second_aggregate"])
    prompt_rate = limits["prompt_tokens_per_second"]
    seconds = used.evaluated_tokens / prompt_rate + used.generated_tokens / best_generation
    # Drafts are verified in batches, at prompt speed: only the tokens no draft supplied cost a decode step.
    with_drafts = ((used.evaluated_tokens + used.drafted_tokens) / prompt_rate
                   + (used.generated_tokens - used.accepted_tokens) / best_generation)
    return {"floor_seconds": round(seconds, 1), "efficiency": round(seconds / wall_seconds, 3),
            "floor_seconds_with_drafts": round(with_drafts, 1), "efficiency_with_drafts": round(with_drafts / wall_seconds, 3)}
