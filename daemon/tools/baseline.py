"""`enrichd bench --modes baseline`: the replaced system, reproduced call for call, as the bench's reference."""

from __future__ import annotations

import os
import time
from pathlib import Path

from daemon.engine.llama import LlamaEngine
from daemon.engine.runtime import LlamaSettings
from daemon.formats import parse
from daemon.messages import ProgressReport
from daemon.tools.mode_result import ModeResult
from daemon.tools.rss import RssSampler

OLD_SYSTEM = "Tu es un assistant qui traite des transcriptions d'appels téléphoniques."


OLD_CORRECT = "Corrige les erreurs de transcription dans le texte suivant et renvoie uniquement le texte corrigé :"


OLD_TASKS = {
    "title": ("Donne un titre court pour cet appel :", 32),
    "summary": ("Résume cet appel en quelques phrases :", 220),
    "satisfaction": ("Note la satisfaction de l'appelant de 1 à 5 et justifie en une phrase :", 64),
    "bullets": ("Donne les points clés de cet appel sous forme de liste :", 220),
}


OLD_TEMPERATURE, OLD_CORRECTION_TEMPERATURE = 0.7, 0.05


def run_baseline(files: list[Path], model: Path, threads: int, batch_threads: int, mode: str,
                 progress: ProgressReport) -> ModeResult:
    """The replaced system, reproduced: per-segment correction calls, then four full-transcript calls. It set
    `n_threads` only; llama-cpp-python's default `n_threads_batch` evaluated its prompts on every CPU."""
    settings = LlamaSettings(n_ctx=2048, n_batch=512, n_threads=threads, n_threads_batch=batch_threads, flash_attn=False)
    with RssSampler(os.getpid()) as sampler:
        engine = LlamaEngine(model, settings)
        budget = settings.n_ctx - max(t for _, t in OLD_TASKS.values()) - 64
        started = time.perf_counter()
        stages = {"correction": 0.0, "metadata": 0.0}
        nulls = 0
        for path in files:
            transcript = parse(path)
            t0 = time.perf_counter()
            corrected = []
            for segment in transcript.segments:
                if not segment.text.strip():
                    corrected.append(segment.text)
                    continue
                answer = engine.chat(OLD_SYSTEM, f"{OLD_CORRECT}\n\n{segment.text}", temperature=OLD_CORRECTION_TEMPERATURE,
                                     max_tokens=2 * engine.count_tokens(segment.text) + 16)
                corrected.append(answer.text.strip() or segment.text)
            t1 = time.perf_counter()
            text = transcript.dialogue(corrected)
            while engine.count_tokens(text) > budget:
                text = text[: int(len(text) * 0.9)]
            for task, (instruction, max_tokens) in OLD_TASKS.items():
                shown = text[:500] if task == "title" else text
                answer = engine.chat(OLD_SYSTEM, f"{instruction}\n\n{shown}", temperature=OLD_TEMPERATURE, max_tokens=max_tokens)
                nulls += not answer.text.strip()
            stages["correction"] += t1 - t0
            stages["metadata"] += time.perf_counter() - t1
            progress(f"{mode}: {path.name} done ({time.perf_counter() - started:.0f} s)")
        wall = time.perf_counter() - started
        stats = engine.stats
        del engine
    return ModeResult(mode, len(files), wall, tokens=stats.copy(), peak_rss_mb=sampler.peak / 2**20, fields_null=nulls,
                      stage_seconds=stages,
                      settings={"n_threads": threads, "n_threads_batch": batch_threads, "n_ctx": 2048, "n_batch": 512,
                                "flash_attn": False})
