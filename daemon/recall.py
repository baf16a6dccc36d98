"""`enrichd bench --modes recall`: French ASR-style errors injected into real lines, and what correction restores.

Homophones are the recognition errors a language model can judge from context. The same injected
corpus is corrected with every segment rewritten and, when `surprise_threshold` is set, through the
surprise gate, so the gate's savings and its misses are counted on the same errors.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from daemon.config import Config
from daemon.correction import CORRECTED, REJECTED, WORD, Corrector
from daemon.engine import LlamaEngine, LlamaSettings
from daemon.formats import parse
from daemon.model_store import ModelInfo
from daemon.prompts import prompt_set
from daemon.transcript import Segment

SWAPS = {"à": "a", "a": "à", "et": "est", "est": "et", "ces": "ses", "ses": "ces",
         "cou": "coup", "coup": "cou", "ça": "sa", "sa": "ça"}
SWAPPABLE = re.compile(r"(?<![\w'’-])(" + "|".join(sorted(SWAPS, key=len, reverse=True)) + r")(?![\w'’-])", re.IGNORECASE)
THRESHOLDS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
INJECTION_RATE = 0.5


@dataclass(frozen=True)
class Injection:
    segment: int
    word: int
    right: str
    wrong: str


def inject_errors(segments: list[Segment], rate: float, rng: random.Random) -> tuple[list[Segment], list[Injection]]:
    """Swap one homophone in about `rate` of the segments that contain one; keep the first letter's case."""
    injected, made = [], []
    for i, segment in enumerate(segments):
        matches = list(SWAPPABLE.finditer(segment.text))
        if not matches or rng.random() >= rate:
            injected.append(segment)
            continue
        match = rng.choice(matches)
        right = match.group(1)
        wrong = SWAPS[right.lower()]
        if right[0].isupper():
            wrong = wrong[0].upper() + wrong[1:]
        text = segment.text[:match.start()] + wrong + segment.text[match.end():]
        injected.append(replace(segment, text=text))
        made.append(Injection(i, len(WORD.findall(segment.text[:match.start()])), right.lower(), wrong.lower()))
    return injected, made


def restored(corrected: str, injection: Injection) -> bool:
    words = [w.lower() for w in WORD.findall(corrected)]
    return injection.word < len(words) and words[injection.word] == injection.right


def run_recall(config: Config, files: list[Path], model: Path, info: ModelInfo, threads: int,
               progress: Callable[[str], None], seed: int = 0) -> dict[str, Any]:
    """One engine with every CPU; the gate's flag rates at several thresholds come from one scoring pass."""
    settings = LlamaSettings.from_config(config.model, threads)
    engine = LlamaEngine(model, info, settings)
    prompts = prompt_set(config.enrichment, "fr")
    rng = random.Random(seed)
    threshold = config.enrichment.correction.surprise_threshold
    rewrite_all = replace(config.enrichment.correction, surprise_threshold=None, skip_confidence=None)
    variants = {"rewrite_all": rewrite_all}
    if threshold is not None:
        variants["gated"] = replace(rewrite_all, surprise_threshold=threshold)
    counts: dict[str, Any] = {"segments": 0, "injected": 0, "injected_by_swap": {},
                              "flagged_at_threshold": {str(t): {"injected": 0, "clean": 0} for t in THRESHOLDS}}
    runs: dict[str, dict[str, Any]] = {}
    for path in files:
        segments, injections = inject_errors(parse(path).segments, INJECTION_RATE, rng)
        non_empty = [i for i, s in enumerate(segments) if s.text.strip()]
        counts["segments"] += len(non_empty)
        counts["injected"] += len(injections)
        for injection in injections:
            swap = f"{injection.right}->{injection.wrong}"
            counts["injected_by_swap"][swap] = counts["injected_by_swap"].get(swap, 0) + 1
        gaps = Corrector(engine, rewrite_all, prompts).worst_gaps(non_empty, [s.text for s in segments])
        wrong_segments = {j.segment for j in injections}
        for t in THRESHOLDS:
            flagged = {i for i, gap in gaps.items() if gap >= t}
            counts["flagged_at_threshold"][str(t)]["injected"] += len(flagged & wrong_segments)
            counts["flagged_at_threshold"][str(t)]["clean"] += len(flagged - wrong_segments)
        for name, correction in variants.items():
            corrector = Corrector(engine, correction, prompts)
            started, generated = time.perf_counter(), engine.stats.generated_tokens
            outcomes = corrector.correct(segments, "fr")
            run = runs.setdefault(name, {"seconds": 0.0, "restored": 0, "injected_rejected": 0, "clean_changed": 0,
                                         "gated": 0, "generated_tokens": 0, "surprise_threshold": correction.surprise_threshold})
            run["seconds"] = round(run["seconds"] + time.perf_counter() - started, 1)
            run["generated_tokens"] += engine.stats.generated_tokens - generated
            run["restored"] += sum(restored(outcomes[j.segment].text, j) for j in injections)
            run["injected_rejected"] += sum(outcomes[i].status == REJECTED for i in wrong_segments)
            run["clean_changed"] += sum(outcomes[i].status == CORRECTED for i in non_empty if i not in wrong_segments)
            run["gated"] += corrector.stats.gated
        runs_done = ", ".join(f"{n} restored {r['restored']} in {r['seconds']} s" for n, r in runs.items())
        progress(f"recall: {path.name}: {len(injections)} errors injected; {runs_done} so far")
    return counts | {"runs": runs, "seed": seed, "injection_rate": INJECTION_RATE}
