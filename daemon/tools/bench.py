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
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import yaml

from daemon.calibration import read_labels
from daemon.config import Config, LoggingConfig, config_to_dict
from daemon.cpus import TUNED_FILE, available_cpus, plan_workers, possible_plans, read_tuned
from daemon.engine import EngineStats
from daemon.engine.llama import LlamaEngine
from daemon.engine.runtime import LlamaSettings
from daemon.formats import parse
from daemon.logs import setup_logging
from daemon.messages import ProgressReport
from daemon.model_store import describe_model
from daemon.output import output_names
from daemon.schema import schema_errors
from daemon.status import read_status
from daemon.text import words
from daemon.tools.peer import LlamaServer, enrich_with_server
from daemon.tools.recall import run_recall
from daemon.tools.redis_server import RedisServer
from daemon.tools.satisfaction import run_satisfaction
from daemon.tools.summaries import read_outbox, read_references, read_sheets, score_outputs

OLD_SYSTEM = "Tu es un assistant qui traite des transcriptions d'appels téléphoniques."
OLD_CORRECT = "Corrige les erreurs de transcription dans le texte suivant et renvoie uniquement le texte corrigé :"
OLD_TASKS = {
    "title": ("Donne un titre court pour cet appel :", 32),
    "summary": ("Résume cet appel en quelques phrases :", 220),
    "satisfaction": ("Note la satisfaction de l'appelant de 1 à 5 et justifie en une phrase :", 64),
    "bullets": ("Donne les points clés de cet appel sous forme de liste :", 220),
}
OLD_TEMPERATURE, OLD_CORRECTION_TEMPERATURE = 0.7, 0.05
LIMIT_PROMPT_TOKENS, LIMIT_GENERATED_TOKENS = 512, 64

MODES = ("baseline", "baseline-allcores", "enrichd", "enrichd-celery", "llama-server", "limit", "recall", "satisfaction",
         "summaries")
SPEED_MODES = ("baseline", "baseline-allcores", "enrichd", "enrichd-warm", "enrichd-celery", "llama-server")


@dataclass
class ModeResult:
    mode: str
    transcripts: int
    wall_seconds: float
    tokens: EngineStats = field(default_factory=EngineStats)
    peak_rss_mb: float = 0.0
    outputs_valid: int = 0
    fields_null: int = 0
    segments_rejected: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    dispatch_seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    against_reference: dict[str, Any] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        data = asdict(self)
        del data["tokens"]
        data.update({f"{key}_tokens": count for key, count in self.tokens.tokens().items()})
        per_second = (lambda n: round(n / self.wall_seconds, 2) if self.wall_seconds else None)
        data["transcripts_per_hour"] = per_second(self.transcripts * 3600)
        data["generated_tokens_per_second"] = per_second(self.tokens.generated_tokens)
        data["evaluated_tokens_per_second"] = per_second(self.tokens.evaluated_tokens)
        return data


class RssSampler:
    """Peak resident memory of processes and all their descendants, sampled twice a second."""

    def __init__(self, *roots: int):
        self.roots, self.peak = list(roots), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree_rss(self) -> int:
        children: dict[int, list[int]] = {}
        rss: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
                rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                continue
        total, todo = 0, list(self.roots)
        while todo:
            pid = todo.pop()
            total += rss.get(pid, 0)
            todo += children.get(pid, [])
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self._tree_rss())

    def __enter__(self) -> "RssSampler":
        self.peak = self._tree_rss()
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


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


def _wait(predicate: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited with code {process.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def start_celery_workers(config_file: Path, cpus: list[int], work: Path, stack: ExitStack) -> list[subprocess.Popen[bytes]]:
    """One `enrichd worker` per CPU, each pinned to it with its own state folder (its cache starts cold), the way
    README "Scaling out" runs two hosts on one machine; stopped when `stack` closes."""
    workers = []
    for cpu in cpus:
        log = stack.enter_context(open(work / f"worker-{cpu}.log", "wb"))
        process = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-m", "daemon", "worker", "--config",
                                    str(config_file)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "ENRICHD_PATHS_STATE": str(work / f"worker-{cpu}")})
        stack.callback(stop_group, process)
        workers.append(process)
    return workers


def stop_group(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGTERM to the process group a worker leads (its Celery children too), SIGKILL after `timeout`."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass(frozen=True)
class Outputs:
    """Where the cold pass's documents are kept (`--outputs`), and another run's they are compared with."""

    outputs: Path | None = None
    reference: Path | None = None


def run_daemon_passes(files: list[Path], config: Config, work: Path, progress: ProgressReport,
                      modes: tuple[str, ...] = ("enrichd", "enrichd-warm"), keep: Outputs = Outputs()) -> list[ModeResult]:
    """`enrichd run` on a temporary spool: one cold pass, then the same files again on the warm cache.

    A split stored by `enrichd tune --write` goes along, so `workers: auto` runs what the daemon would run.
    `enrichd-celery` is the distributed mode on this machine: a redis-server of the bench's own, the supervisor
    with `workers.backend: celery`, and one single-CPU `enrichd worker` per CPU.
    """
    with ExitStack() as stack:
        return _daemon_passes(files, config, work, progress, modes, keep, stack)


def _daemon_passes(files: list[Path], config: Config, work: Path, progress: ProgressReport, modes: tuple[str, ...],
                   keep: Outputs, stack: ExitStack) -> list[ModeResult]:
    data = config_to_dict(config)
    data.pop("source", None)
    data["paths"] = {name: str(work / name) for name in ("inbox", "processing", "outbox", "failed", "archive", "state")}
    data["queue"].update(settle_seconds=0.0, rescan_seconds=2.0)
    data["cache"]["enabled"] = True
    data["logging"].update(level="INFO", file=None)
    cpus = available_cpus()
    celery = "enrichd-celery" in modes
    if celery:
        redis = stack.enter_context(RedisServer(work / "redis"))
        data["workers"].update(backend="celery", count=1, threads=1)
        credentials = work / "credentials.yaml"  # the signing key, as a deployment keeps it (0600, this user's)
        credentials.touch(mode=0o600)
        credentials.write_text(yaml.safe_dump({"signing_key": secrets.token_urlsafe(32)}))
        data["celery"].update(broker_url=redis.url, result_backend=None, credentials_file=str(credentials))
    config_file = work / "bench-config.yaml"
    config_file.write_text(yaml.safe_dump(data, allow_unicode=True))
    state, inbox, outbox, staging = work / "state", work / "inbox", work / "outbox", work / "staging"
    staging.mkdir(parents=True)
    if (config.paths.state / TUNED_FILE).is_file() and not celery:
        state.mkdir()
        shutil.copyfile(config.paths.state / TUNED_FILE, state / TUNED_FILE)
    workers = start_celery_workers(config_file, cpus, work, stack) if celery else []
    log = stack.enter_context(open(work / "daemon.log", "wb"))
    process = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--config", str(config_file)],
                               stdout=log, stderr=subprocess.STDOUT)
    results = []
    try:
        with RssSampler(process.pid, *(w.pid for w in workers)) as sampler:
            def workers_ready() -> bool:
                status = read_status(state)[0] or {}
                slots = status.get("workers", [])
                loaded = all(b"loaded in" in (work / f"worker-{cpu}.log").read_bytes() for cpu in cpus) if celery else True
                return (status.get("pid") == process.pid and loaded and len(slots) >= (len(cpus) if celery else 1)
                        and all(w["state"] == "idle" for w in slots))

            _wait(workers_ready, 600, "workers ready", process)
            for mode in modes:
                for old in outbox.glob("*"):
                    old.unlink()
                for path in files:
                    shutil.copyfile(path, staging / path.name)
                expected = {output_names(p.name)[0] for p in files}
                started = time.perf_counter()
                for path in files:
                    os.rename(staging / path.name, inbox / path.name)
                seen: set[str] = set()

                def finished() -> bool:
                    for name in expected & {p.name for p in outbox.iterdir()} - seen:
                        seen.add(name)
                        progress(f"{mode}: {name} ({time.perf_counter() - started:.0f} s)")
                    return len(seen) == len(expected) and not any((work / "processing").iterdir())

                _wait(finished, 6 * 3600, f"{mode} outputs", process)
                wall = time.perf_counter() - started
                result = _collect(mode, files, outbox, wall, sampler.peak, config)
                if celery:
                    result.settings.update(backend="celery", workers=len(cpus), threads=1)
                if mode != "enrichd-warm":
                    names = [output_names(p.name)[0] for p in files]
                    if keep.reference:
                        result.against_reference = compare_metadata(outbox, keep.reference, names)
                    if keep.outputs:
                        keep.outputs.mkdir(parents=True, exist_ok=True)
                        for name in names:
                            shutil.copyfile(outbox / name, keep.outputs / name)
                results.append(result)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
    return results


def run_peer(files: list[Path], config: Config, binary: Path, model: Path, cpus: list[int], work: Path,
             progress: ProgressReport) -> ModeResult:
    """The llama-server peer on the same files: `parallel` files at a time, one slot per worker the daemon runs."""
    tuned = read_tuned(config.paths.state)
    parallel = plan_workers(config.workers, cpus, tuned[0] if tuned else None).count
    stages = {"correction": 0.0, "metadata": 0.0}
    stats = EngineStats()
    with LlamaServer(binary, model, parallel, len(cpus), config.model.n_ctx, work / "llama-server.log") as server:
        assert server.process is not None
        with RssSampler(server.process.pid) as sampler, ThreadPoolExecutor(parallel) as requests, \
                ThreadPoolExecutor(parallel) as per_file:
            started = time.perf_counter()

            def one(path: Path) -> tuple[EngineStats, dict[str, float]]:
                done = enrich_with_server(server, path, config, requests)
                progress(f"llama-server: {path.name} done ({time.perf_counter() - started:.0f} s)")
                return done

            for file_stats, seconds in per_file.map(one, files):
                stats += file_stats
                for stage, value in seconds.items():
                    stages[stage] = round(stages[stage] + value, 3)
            wall = time.perf_counter() - started
    return ModeResult("llama-server", len(files), wall, tokens=stats, peak_rss_mb=sampler.peak / 2**20, stage_seconds=stages,
                      settings={"parallel": parallel, "threads": len(cpus), "n_ctx": config.model.n_ctx * parallel,
                                "flash_attn": True, "binary": str(binary)})


def _word_overlap(a: str | None, b: str | None) -> float | None:
    """Jaccard overlap of the two texts' lowercased words: 1 the same words, 0 none in common."""
    if not a or not b:
        return None
    first, second = set(words(a)), set(words(b))
    return len(first & second) / len(first | second) if first | second else None


def compare_metadata(outbox: Path, reference: Path, names: list[str]) -> dict[str, Any]:
    """How far titles, summaries, bullet points and satisfaction moved from another run's outputs (same files)."""
    overlaps: dict[str, list[float]] = {"title": [], "summary": [], "bullet_points": []}
    same_score, compared = 0, 0
    for name in names:
        if not (reference / name).is_file():
            continue
        ours, theirs = (json.loads(p.read_text())["metadata"] or {} for p in (outbox / name, reference / name))
        compared += 1
        for key, values in overlaps.items():
            joined = [" ".join(v) if isinstance(v, list) else v for v in (ours.get(key), theirs.get(key))]
            overlap = _word_overlap(*joined)
            if overlap is not None:
                values.append(overlap)
        scores = [(m.get("satisfaction") or {}).get("score") for m in (ours, theirs)]
        same_score += scores[0] is not None and scores[0] == scores[1]
    return {"files": compared, "same_satisfaction_score": same_score,
            **{f"{key}_word_overlap": round(sum(v) / len(v), 3) if v else None for key, v in overlaps.items()}}


def _collect(mode: str, files: list[Path], outbox: Path, wall: float, peak: int, config: Config) -> ModeResult:
    result = ModeResult(mode, len(files), wall, peak_rss_mb=peak / 2**20,
                        settings={"workers": config.workers.count, "threads": config.workers.threads,
                                  "n_ctx": config.model.n_ctx, "n_batch": config.model.n_batch,
                                  "flash_attn": config.model.flash_attn, "cache": "warm" if mode == "enrichd-warm" else "cold"})
    dispatch = []
    for path in files:
        output = json.loads((outbox / output_names(path.name)[0]).read_text())
        dispatch.append(output["timings"].get("dispatch", 0.0))
        result.tokens += EngineStats.of_tokens(output["stats"]["tokens"])
        result.outputs_valid += not schema_errors(output)
        result.fields_null += sum(v is None for v in (output["metadata"] or {}).values())
        result.segments_rejected += output["stats"].get("segments", {}).get("rejected", 0)
        for stage, seconds in output["timings"].items():
            result.stage_seconds[stage] = round(result.stage_seconds.get(stage, 0.0) + seconds, 3)
    result.dispatch_seconds = {"mean": round(sum(dispatch) / len(dispatch), 3), "max": max(dispatch)}
    return result


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


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def corpus_files(corpus: Path, config: Config) -> list[Path]:
    return sorted(p for p in corpus.iterdir() if p.suffix.lower() in config.queue.extensions)


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
              llama_server: Path | None = None, shapes: list[int] | None = None, keep: Outputs = Outputs()) -> dict[str, Any]:
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
        report["summaries"] = run_summaries(files, config, corpus, progress, keep)
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
        daemon = results.get("enrichd")
        if daemon:
            best_generation = max(limits["generation_tokens_per_second_one_sequence"], limits["generation_tokens_per_second_aggregate"])
            prompt_rate = limits["prompt_tokens_per_second"]
            used = daemon.tokens
            floor = used.evaluated_tokens / prompt_rate + used.generated_tokens / best_generation
            # Drafts are verified in batches, at prompt speed: only the tokens no draft supplied cost a decode step.
            floor_drafts = ((used.evaluated_tokens + used.drafted_tokens) / prompt_rate
                            + (used.generated_tokens - used.accepted_tokens) / best_generation)
            report["limit"].update(floor_seconds=round(floor, 1), efficiency=round(floor / daemon.wall_seconds, 3),
                                   floor_seconds_with_drafts=round(floor_drafts, 1),
                                   efficiency_with_drafts=round(floor_drafts / daemon.wall_seconds, 3))
    if results:
        report["ratios"] = speed_ratios(results)
    return report


def run_summaries(files: list[Path], config: Config, corpus: Path, progress: ProgressReport,
                  keep: Outputs = Outputs()) -> dict[str, Any]:
    """The daemon's cold pass on the files, its titles, summaries and bullets scored (tools/summaries.py): the fact
    sheets named after the corpus folder (`facts/<name>.yaml`), the corpus' `references.yaml`, structure always;
    with the metadata stage's seconds, summed over files, of the same pass (`--outputs` keeps the documents)."""
    with tempfile.TemporaryDirectory(prefix="enrichd-bench-summaries-") as work:
        result = run_daemon_passes(files, config, Path(work), progress, ("enrichd",), Outputs(keep.outputs))[0]
        scored = score_outputs(read_outbox(Path(work) / "outbox"), read_sheets(corpus.name), read_references(corpus))
    return {"wall_seconds": round(result.wall_seconds, 1), "metadata_seconds": result.stage_seconds.get("metadata"),
            "generated_tokens": result.tokens.generated_tokens, "fields_null": result.fields_null, **scored}


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
