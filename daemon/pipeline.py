"""One transcript through the whole enrichment: correct, then metadata, then the output document.

Data flows one way: Transcript -> corrections -> metadata -> output dict. The caller owns the
engine (loaded once per worker) and the cache connection; the engine is only asked for when a
model call is really needed, so a whole-file cache hit loads nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from daemon import __version__
from daemon.cache import Cache, cache_counts
from daemon.config import Config, CorrectionConfig, EnrichmentConfig
from daemon.correction import STATUSES, Corrector, confusion_sets
from daemon.engine import Engine, EngineStats
from daemon.language import detect_language
from daemon.messages import ProgressReport
from daemon.calibration import Thresholds, thresholds_in_force
from daemon.metadata import MetadataWriter
from daemon.model_store import ModelInfo
from daemon.output import SegmentOutcome, build_output
from daemon.prompts import LANGUAGES, prompt_set
from daemon.record import call_record
from daemon.transcript import Transcript


def correction_settings(config: CorrectionConfig) -> dict[str, Any]:
    """The correction settings outputs depend on. The scorer's path is not one: paths differ between hosts, and
    the scorer's sha256 is in the model's identity."""
    return {k: v for k, v in asdict(config).items() if k != "model"}


def prompt_version(config: EnrichmentConfig, thresholds: Thresholds | None = None) -> str:
    """Short hash of every enrichment setting (the language, prompt texts, confusion sets, generation parameters)
    and the calibration: changes whenever outputs could."""
    material: dict[str, Any] = {
        "language": config.language,
        "prompts": {lang: asdict(prompt_set(config, lang)) for lang in LANGUAGES},
        "correction": correction_settings(config.correction),
        "confusions": {lang: confusion_sets(config.correction, lang).digest for lang in LANGUAGES},
        "metadata": asdict(config.metadata),
        "satisfaction_thresholds": thresholds or None,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:12]


InForce = tuple[Thresholds, str]  # the satisfaction thresholds per language and the prompt version


def in_force(config: Config, model: ModelInfo) -> InForce:
    """The satisfaction thresholds in force for this model, per language (the deployment's, else the packaged
    defaults), and the prompt version they make with the prompts: derived here only, for the supervisor, every
    worker and the Celery children alike."""
    thresholds = thresholds_in_force(config.paths.state, model.sha256, config.enrichment)
    return thresholds, prompt_version(config.enrichment, thresholds)


@dataclass
class EnrichContext:
    """What stays the same across the transcripts one worker enriches."""

    config: Config
    model: ModelInfo
    engine: Callable[[], Engine]
    cache: Cache | None = None
    scorer: Callable[[], Engine] | None = None  # the scoring corrector's own smaller model, if configured
    prompt_version: str = field(init=False)
    thresholds: Thresholds = field(init=False)

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Read the thresholds again: a Celery child started before `enrichd calibrate --write` is sent jobs for the
        new prompt version, and must enrich with the thresholds that version stands for."""
        self.thresholds, self.prompt_version = in_force(self.config, self.model)

    def parameters(self) -> dict[str, Any]:
        model = self.config.model
        enrichment = self.config.enrichment
        return {
            "n_ctx": model.n_ctx, "n_batch": model.n_batch, "flash_attn": model.flash_attn,
            "correction": correction_settings(enrichment.correction), "metadata": asdict(enrichment.metadata),
        }

    def scope(self) -> str:
        """What every cache key starts with: all a result depends on besides the transcript. The model, every
        enrichment setting (the prompt version), the context size (it decides the windows a long call is read
        in) and the daemon's version (its code decides the rest)."""
        return f"{self.model.identity}:{self.prompt_version}:{self.config.model.n_ctx}:{__version__}"


def _provenance(context: EnrichContext) -> dict[str, Any]:
    return {
        "daemon_version": __version__,
        "model": asdict(context.model),
        "prompt_version": context.prompt_version,
        "parameters": context.parameters(),
    }


def _cache_stats(cache: Cache | None, before: tuple[Counter[str], Counter[str]]) -> dict[str, Any]:
    if cache is None:
        return {}
    return {"cache_hits_misses": cache_counts(cache.hits - before[0], cache.misses - before[1])}


def enrich(transcript: Transcript, context: EnrichContext, parse_seconds: float = 0.0,
           progress: ProgressReport | None = None, dispatch_seconds: float | None = None) -> dict[str, Any]:
    """`dispatch_seconds`, from the claim of the file to the start of its job, goes into the timings as is."""
    started = time.perf_counter()
    waited = {} if dispatch_seconds is None else {"dispatch": dispatch_seconds}
    cache = context.cache
    before = (Counter(cache.hits), Counter(cache.misses)) if cache else (Counter(), Counter())
    file_key = [context.scope(), transcript.sha256]
    if cache is not None:
        cached = cache.get("file", file_key)
        if cached is not None:
            output = copy.deepcopy(cached)
            output["id"], output["source"]["file"] = transcript.id, transcript.source_file
            output["timings"] = {**waited, "parse": round(parse_seconds, 3),
                                 "total": round(time.perf_counter() - started + parse_seconds, 3)}
            output["stats"] = {"cache": "file", "model_calls": 0, "tokens": EngineStats().tokens(), **_cache_stats(cache, before)}
            return output

    enrichment = context.config.enrichment
    language = detect_language(" ".join(s.text for s in transcript.segments[:200]),
                               transcript.language if enrichment.language == "auto" else enrichment.language)
    prompts = prompt_set(enrichment, language)
    engine = context.engine()
    scorer = context.scorer() if context.scorer else engine
    engine_before, scorer_before = engine.stats.copy(), scorer.stats.copy()

    corrector = Corrector(engine, enrichment.correction, prompts, cache, context.scope(), progress=progress,
                          scorer=scorer)
    t0 = time.perf_counter()
    corrections = corrector.correct(transcript.segments, language)
    t_correct = time.perf_counter() - t0

    texts = [c.text for c in corrections]
    dialogue = transcript.dialogue(texts)
    t0 = time.perf_counter()
    metadata_key = [context.scope(), language, dialogue]
    metadata = cache.get("metadata", metadata_key) if cache is not None else None
    meta_stats: dict[str, Any] = {"cached": metadata is not None}
    if metadata is None:
        writer = MetadataWriter(engine, enrichment.metadata, prompts,
                                progress=(lambda task: progress(f"metadata {task}")) if progress else None,
                                thresholds=context.thresholds.get(language))
        result = writer.write(dialogue)
        metadata = {"values": result.values, "null_reasons": result.null_reasons}
        meta_stats.update(retries=result.retries, chunks=result.chunks)
        if cache is not None and enrichment.metadata.enabled:
            cache.put("metadata", metadata_key, metadata)
    meta_stats["null_reasons"] = metadata["null_reasons"]
    t_meta = time.perf_counter() - t0

    used = engine.stats - engine_before
    scorer_used = scorer.stats - scorer_before if scorer is not engine else None
    if scorer_used is not None:
        used = used + scorer_used
    correction = corrector.stats
    stats = {
        "cache": "miss" if cache is not None else "disabled",
        "model_calls": used.calls,
        "tokens": used.tokens(),
        "segments": {k: correction.counts.get(k, 0) for k in STATUSES},
        "rejections": correction.rejections,
        "correction": {"mode": enrichment.correction.mode, "batches": correction.batches,
                       "batch_splits": correction.batch_splits, "gated": correction.gated,
                       "candidates": correction.candidates, "pruned": correction.pruned,
                       "branches": correction.branches, "settled": correction.settled,
                       **({"scorer_tokens": scorer_used.tokens()} if scorer_used is not None else {})},
        "metadata": meta_stats,
        **_cache_stats(cache, before),
    }
    timings = {**waited, "parse": parse_seconds, "correction": t_correct, "metadata": t_meta,
               "total": time.perf_counter() - started + parse_seconds}
    values = None
    if enrichment.metadata.enabled:
        lines = [(segment.index, text) for segment, text in zip(transcript.segments, texts) if text.strip()]
        values = {**metadata["values"], "record": call_record(metadata["values"], prompts.record_labels, lines)}
    output = build_output(
        replace(transcript, language=language),
        [SegmentOutcome(c.text, c.status, [change.as_dict() for change in c.changes]) for c in corrections],
        values,
        _provenance(context), timings, stats,
    )
    if cache is not None:
        cache.put("file", file_key, output)
    return output
