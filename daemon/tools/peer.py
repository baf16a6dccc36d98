"""`enrichd bench --modes llama-server`: what a user would build instead of enrichd, measured on the same corpus.

llama.cpp's own `llama-server` with the same model, `--parallel` one slot per worker the daemon would run,
every CPU, flash attention, and a short client written the way a competent user would write it: files
taken `parallel` at a time, each file's segments corrected one request per segment (sent concurrently,
so every slot stays busy), then the four metadata prompts with the transcript first, one after the
other, so the server's prompt cache reuses the transcript. The clock starts once the server answers
/health and stops at the last answer, like the daemon's (model load excluded from both).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.cpus import plan_workers, read_tuned
from daemon.engine import Completion, EngineStats
from daemon.formats import parse
from daemon.language import detect_language
from daemon.messages import ProgressReport
from daemon.prompts import fenced, prompt_set
from daemon.tools.mode_result import ModeResult
from daemon.tools.rss import RssSampler

CORRECT = {
    "fr": "Corrige les erreurs de transcription de cette réplique et renvoie uniquement la réplique corrigée :",
    "en": "Correct the transcription errors in this line and return only the corrected line:",
}
TASKS = ("title", "summary", "satisfaction", "bullets")
START_TIMEOUT_SECONDS = 600


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LlamaServer:
    """A llama-server process of the bench's own, on a free local port, stopped afterwards."""

    def __init__(self, binary: Path, model: Path, parallel: int, threads: int, n_ctx: int, log: Path):
        self.port = free_port()
        self.command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
                        "--parallel", str(parallel), "-t", str(threads), "-tb", str(threads), "-fa", "on",
                        "-c", str(n_ctx * parallel), "--no-webui"]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "LlamaServer":
        handle = open(self.log, "wb")
        self.process = subprocess.Popen(self.command, stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited with code {self.process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama-server not healthy after {START_TIMEOUT_SECONDS} s; see {self.log}")
            time.sleep(0.5)
        return self

    def __exit__(self, *_: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def chat(self, system: str, user: str, max_tokens: int) -> Completion:
        body = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                "max_tokens": max_tokens, "temperature": 0.0, "cache_prompt": True}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/chat/completions",
                                         data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=3600) as response:
            answer = json.load(response)
        usage, timings = answer.get("usage", {}), answer.get("timings", {})
        return Completion(text=answer["choices"][0]["message"]["content"] or "", prompt_tokens=usage.get("prompt_tokens", 0),
                          evaluated_tokens=int(timings.get("prompt_n", usage.get("prompt_tokens", 0))),
                          generated_tokens=usage.get("completion_tokens", 0), seconds=time.perf_counter() - started,
                          finish_reason=answer["choices"][0].get("finish_reason") or "stop")


def enrich_with_server(server: LlamaServer, path: Path, config: Config, requests: ThreadPoolExecutor) -> tuple[EngineStats, dict[str, float]]:
    """One file as the user's script does it: corrections concurrently, then metadata on the cached transcript."""
    transcript = parse(path, config.queue.limits)
    language = detect_language(transcript.dialogue()[:20_000], transcript.language)
    prompts = prompt_set(config.enrichment, language)
    stats = EngineStats()
    started = time.perf_counter()
    segments = [s.text for s in transcript.segments]
    answers = list(requests.map(lambda text: server.chat(prompts.metadata_system, f"{CORRECT[language]}\n\n{text}",
                                                         2 * len(text) // 3 + 16) if text.strip() else None, segments))
    corrected = [a.text.strip() or s if a else s for a, s in zip(answers, segments)]
    for answer in answers:
        if answer:
            stats.add(answer)
    corrected_at = time.perf_counter()
    context = fenced(transcript.dialogue(corrected))
    metadata = config.enrichment.metadata
    for task in TASKS:
        instruction = getattr(prompts, task).format(max_words=metadata.summary_max_words)
        stats.add(server.chat(prompts.metadata_system, f"{context}\n\n{instruction}", getattr(metadata, task).max_tokens))
    return stats, {"correction": corrected_at - started, "metadata": time.perf_counter() - corrected_at}


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
