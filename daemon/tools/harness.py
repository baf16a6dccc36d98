"""The real daemon (`enrichd run`, or its Celery backend with `enrichd worker`s) run by the bench on a temporary
spool: files dropped at once, timed from the drop to the last output, every output read back."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from daemon.config import Config, config_to_dict
from daemon.cpus import TUNED_FILE, available_cpus
from daemon.engine import EngineStats
from daemon.messages import ProgressReport
from daemon.output import output_names
from daemon.schema import schema_errors
from daemon.status import read_status
from daemon.tools.compare import compare_metadata
from daemon.tools.mode_result import ModeResult
from daemon.tools.redis_server import RedisServer
from daemon.tools.rss import RssSampler


def corpus_files(corpus: Path, config: Config) -> list[Path]:
    return sorted(p for p in corpus.iterdir() if p.suffix.lower() in config.queue.extensions)


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
