"""`enrichd bench`: the old way against the daemon against llama.cpp's own limits, on one corpus and model.

Every figure comes from a run of this command; nothing here is estimated. Modes:
  baseline           the replaced system: one call per segment, four metadata calls each re-reading the
                     transcript (title on its first 500 characters), cpu_count - 1 threads, n_ctx 2048,
                     no flash attention, temperature 0.7 (0.05 for correction), instructions first, no cache
  baseline-allcores  the same with every CPU
  enrichd            the real daemon (`enrichd run`) on a temporary spool, all files dropped at once, a fresh
                     (cold) cache; the clock runs from the drop to the last output in the outbox
  enrichd-warm       the same files dropped again on the now warm cache
  llama-server       the peer: llama.cpp's own server with --llama-server PATH, one slot per worker, every CPU,
                     driven the way a user's script would drive it (tools/peer.py)
  limit              llama.cpp's prompt and generation rates for this model here, and the resulting floor
  recall             not a speed mode: French sound-alike errors injected into the corpus (confusion sets read
                     backwards), and what the configured correction restores, misses and changes in clean text
  satisfaction       with --labels, how well the satisfaction score orders labelled calls, and the previous method
                     on the same calls; both steps timed as the daemon runs them, on a transcript already read
  summaries          not a speed mode: the daemon's titles, summaries and bullets scored (tools/summaries.py); with
                     --repeats N, N runs with n_batch halved each time and the range of every figure (their noise)
"""

from __future__ import annotations

import platform
import tempfile
from copy import deepcopy
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

from daemon.calibration import read_labels
from daemon.config import Config
from daemon.cpus import available_cpus
from daemon.engine.llama import LlamaEngine
from daemon.engine.runtime import LlamaSettings
from daemon.formats import parse
from daemon.messages import ProgressReport
from daemon.model_store import describe_model
from daemon.tools.baseline import run_baseline
from daemon.tools.harness import Outputs, corpus_files, run_daemon_passes
from daemon.tools.limits import floor, measure_limits
from daemon.tools.mode_result import ModeResult, ratio
from daemon.tools.peer import run_peer
from daemon.tools.recall import run_recall
from daemon.tools.satisfaction import run_satisfaction
from daemon.tools.summaries import read_outbox, read_references, read_sheets, score_outputs

MODES = ("baseline", "baseline-allcores", "enrichd", "enrichd-celery", "llama-server", "limit", "recall", "satisfaction",
         "summaries")
MIN_N_BATCH = 32  # the smallest batch a repeat of the summaries mode reads its prompts in
SPEED_MODES = ("baseline", "baseline-allcores", "enrichd", "enrichd-warm", "enrichd-celery", "llama-server")


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def run_speed_modes(files: list[Path], config: Config, model: Path, modes: list[str], progress: ProgressReport,
                    llama_server: Path | None, warm: bool = True, keep: Outputs = Outputs()) -> dict[str, ModeResult]:
    """The timed modes asked for, one after the other, on these files."""
    cpus = available_cpus()
    results: dict[str, ModeResult] = {}
    if "baseline" in modes:
        results["baseline"] = run_baseline(files, model, max(1, len(cpus) - 1), len(cpus), "baseline", progress)
    if "baseline-allcores" in modes:
        results["baseline-allcores"] = run_baseline(files, model, len(cpus), len(cpus), "baseline-allcores", progress)
    if "enrichd" in modes:
        with tempfile.TemporaryDirectory(prefix="enrichd-bench-") as work:
            passes = ("enrichd", "enrichd-warm") if warm else ("enrichd",)
            for result in run_daemon_passes(files, config, Path(work), progress, passes, keep):
                results[result.mode] = result
    if "enrichd-celery" in modes:
        with tempfile.TemporaryDirectory(prefix="enrichd-bench-celery-") as work:
            results["enrichd-celery"] = run_daemon_passes(files, config, Path(work), progress, ("enrichd-celery",))[0]
    if "llama-server" in modes:
        if llama_server is None:
            raise ValueError("--modes llama-server needs --llama-server PATH (README: Benchmarks)")
        with tempfile.TemporaryDirectory(prefix="enrichd-peer-") as work:
            results["llama-server"] = run_peer(files, config, llama_server, model, cpus, Path(work), progress)
    return results


def speed_ratios(results: dict[str, ModeResult]) -> dict[str, float | None]:
    wall = {name: r.wall_seconds for name, r in results.items()}
    pairs = (("baseline", "enrichd"), ("baseline-allcores", "enrichd"), ("enrichd", "enrichd-warm"), ("llama-server", "enrichd"),
             ("enrichd-celery", "enrichd"))
    return {f"{a} / {b}": ratio(wall.get(a), wall.get(b)) for a, b in pairs if a in wall and b in wall}


def run_bench(config: Config, corpus: Path, model: Path, limit: int | None, modes: list[str], progress: ProgressReport,
              seeds: tuple[int, ...] = (0, 1, 2), injection_rate: float = 0.2, labels: Path | None = None,
              llama_server: Path | None = None, shapes: list[int] | None = None, keep: Outputs = Outputs(),
              repeats: int = 1) -> dict[str, Any]:
    files = corpus_files(corpus, config)
    if limit:
        files = files[:limit]
    if not files:
        raise ValueError(f"no transcripts in {corpus}")
    if shapes and max(shapes) > len(files):
        raise ValueError(f"--shapes {max(shapes)} needs that many transcripts; {corpus} has {len(files)}")
    cpus = available_cpus()
    config.model.path = model
    info = describe_model(config)
    report: dict[str, Any] = {
        "machine": {"cpu": _cpu_model(), "cpus": cpus, "python": platform.python_version(),
                    "llama_cpp_python": version("llama-cpp-python"), "enrichd": version("enrichd")},
        "model": asdict(info) | {"path": str(model)} | (
            {"scorer_path": str(config.enrichment.correction.scorer_path)} if info.scorer else {}),
        "corpus": {"dir": str(corpus), "files": [p.name for p in files],
                   "segments": sum(len(parse(p).segments) for p in files)},
    }
    results: dict[str, ModeResult] = {}
    if shapes:
        # load shapes: the first n files dropped at once, for each n (one file alone: latency; a backlog: throughput)
        report["shapes"] = {}
        for n in shapes:
            shaped = run_speed_modes(files[:n], config, model, modes, progress, llama_server, warm=False)
            report["shapes"][str(n)] = {"files": [p.name for p in files[:n]],
                                        "modes": {name: r.figures() for name, r in shaped.items()},
                                        "ratios": speed_ratios(shaped)}
    else:
        results = run_speed_modes(files, config, model, modes, progress, llama_server, keep=keep)
        report["modes"] = {name: r.figures() for name, r in results.items()}
    if "summaries" in modes:
        report["summaries"] = run_summaries(files, config, corpus, progress, keep, repeats)
    if "recall" in modes or "satisfaction" in modes:
        engine = LlamaEngine(model, LlamaSettings.from_config(config.model, len(cpus)))
        if "recall" in modes:
            scorer_path = config.enrichment.correction.scorer_path
            scorer = LlamaEngine(scorer_path, LlamaSettings.from_config(config.model, len(cpus))) if scorer_path else None
            report["recall"] = run_recall(config, files, engine, progress, seeds, injection_rate, scorer)
            if scorer is not None:
                scorer.close()
        if "satisfaction" in modes:
            if labels is None:
                raise ValueError("--modes satisfaction needs --labels FILE")
            report["satisfaction"] = run_satisfaction(config, engine, read_labels(labels, corpus), progress)
        engine.close()
    if "limit" in modes:
        limits = measure_limits(model, cpus, progress)
        report["limit"] = limits
        if "enrichd" in results:
            report["limit"].update(floor(limits, results["enrichd"].tokens, results["enrichd"].wall_seconds))
    if results:
        report["ratios"] = speed_ratios(results)
    return report


def run_summaries(files: list[Path], config: Config, corpus: Path, progress: ProgressReport,
                  keep: Outputs = Outputs(), repeats: int = 1) -> dict[str, Any]:
    """The daemon's cold pass on the files, its titles, summaries and bullets scored (tools/summaries.py): the fact
    sheets named after the corpus folder (`facts/<name>.yaml`), the corpus' `references.yaml`, structure always;
    with the metadata stage's seconds, summed over files, of the same pass (`--outputs` keeps the documents).

    With `repeats` > 1, the pass runs that many times with `model.n_batch` halved each time (512, 256, 128...):
    the same tokens read in other batches, so greedy answers differ by floating-point rounding alone. Their range
    is the noise a method's difference must beat (a change that leaves every answer's meaning alone moved the
    facts stated on the 31 simsamu calls by 5)."""
    sheets, references = read_sheets(corpus.name), read_references(corpus)
    runs = []
    for repeat in range(repeats):
        run_config = deepcopy(config)
        run_config.model.n_batch = config.model.n_batch >> repeat  # no lower than MIN_N_BATCH: `enrichd bench` checks
        kept = keep.outputs / f"n_batch-{run_config.model.n_batch}" if keep.outputs and repeats > 1 else keep.outputs
        with tempfile.TemporaryDirectory(prefix="enrichd-bench-summaries-") as work:
            result = run_daemon_passes(files, run_config, Path(work), progress, ("enrichd",), Outputs(kept))[0]
            scored = score_outputs(read_outbox(Path(work) / "outbox"), sheets, references)
        runs.append({"n_batch": run_config.model.n_batch, "wall_seconds": round(result.wall_seconds, 1),
                     "metadata_seconds": result.stage_seconds.get("metadata"),
                     "generated_tokens": result.tokens.generated_tokens, "fields_null": result.fields_null, **scored})
    return runs[0] if repeats == 1 else {"runs": runs, "spread": spread(runs)}


SPREAD_FIGURES = (("fact_sheets", "caller_right"), ("fact_sheets", "facts_stated"), ("fact_sheets", "contradicting_calls"),
                  ("structure", "null_summaries"), ("structure", "narrating_bullets"), ("structure", "invented"),
                  ("rouge", "rougeL"), (None, "fields_null"))


def spread(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each quality figure's lowest, mean and highest value over the runs (those the runs report)."""
    found: dict[str, dict[str, float]] = {}
    for section, name in SPREAD_FIGURES:
        values = [(run.get(section) or {}).get(name) if section else run.get(name) for run in runs]
        if values and all(isinstance(v, (int, float)) for v in values):
            found[name] = {"min": min(values), "mean": round(sum(values) / len(values), 3), "max": max(values)}
    return found


