"""A fake engine for queue and supervisor fault tests: instant, deterministic, and able to misbehave.

Text markers in a transcript drive it: CRASH-WORKER kills the worker process mid-job, SLOW-JOB
makes a job take a few seconds, RAISE-KEYERROR raises an exception no part of the daemon expects.
Environment variables make the whole worker misbehave: FAKE_LOAD_SECONDS delays the model load,
FAKE_LINGER_SECONDS keeps the process alive that long after it is asked to stop.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Mapping, Sequence

from daemon.config import Config
from daemon.engine import Branch, Completion, EngineFactory, EngineStats, StepScores
from daemon.model_store import ModelInfo

NUMBERED = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)
PIECE = re.compile(r"\s*\S+|\s+")
SLOW_SECONDS = 4.0


def word_tokens(text: str) -> list[int]:
    """A stand-in tokenizer: one token per word with its leading spaces, the same id for the same piece."""
    return [zlib.crc32(piece.encode()) % 50_000 for piece in PIECE.findall(text)]


@dataclass
class FlatStream:
    """A scoring stream that finds every token equally likely: no candidate ever gains."""

    length: int
    stats: EngineStats

    def step(self, extend: Sequence[int], queries: Mapping[int, Collection[int]], branches: Sequence[Branch]) -> StepScores:
        self.length += len(extend)
        self.stats.add(Completion("", len(extend), len(extend), 0, 0.0, "stop"))
        return StepScores({p: dict.fromkeys(tokens, 0.0) for p, tokens in queries.items()}, [0.0] * len(branches))

    def truncate(self, length: int) -> None:
        self.length = length

    def close(self) -> None:
        pass


@dataclass
class FakeEngine:
    n_ctx: int = 4096
    stats: EngineStats = field(default_factory=EngineStats)
    threads: int = 1
    before_decode: Callable[[], None] = lambda: None

    def set_threads(self, threads: int) -> None:
        self.threads = threads

    def on_decode(self, hook: Callable[[], None]) -> None:
        self.before_decode = hook

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def tokenize(self, text: str) -> list[int]:
        return word_tokens(text)

    def render(self, system: str, user: str) -> str:
        return f"{system}\n\n{user}"

    def stream(self, prefix: str) -> FlatStream:
        return FlatStream(len(word_tokens(prefix)), self.stats)

    def choose(self, prompt: str, options: Sequence[str]) -> list[float]:
        """Satisfaction digits: a caller mostly content (4)."""
        self.stats.add(Completion("", self.count_tokens(prompt), self.count_tokens(prompt), 0, 0.0, "stop"))
        return [{"4": -0.2, "3": -2.0, "5": -2.5}.get(option, -6.0) for option in options]

    def complete(self, prompt: str, *, max_tokens: int, temperature: float, stop: list[str] | None = None,
                 repeat_penalty: float = 1.0) -> Completion:
        """The satisfaction answer's reason."""
        self.before_decode()
        text = " l'appelant obtient une réponse claire"
        completion = Completion(text, self.count_tokens(prompt), 1, self.count_tokens(text), 0.0, "stop")
        self.stats.add(completion)
        return completion

    def chat(self, system: str, user: str, *, max_tokens: int, temperature: float,
             stop: list[str] | None = None, repeat_penalty: float = 1.0, copies_prompt: bool = False) -> Completion:
        self.before_decode()
        if "CRASH-WORKER" in user:
            os.kill(os.getpid(), signal.SIGKILL)
        if "SLOW-JOB" in user:
            time.sleep(SLOW_SECONDS)
        if "RAISE-KEYERROR" in user:
            raise KeyError("no such thing")
        lines = NUMBERED.findall(user)
        if lines and "<transcription>" not in user:
            text = "\n".join(f"[{n}] {t}" for n, t in lines)
        elif "titre" in user.lower() or "title" in user.lower():
            text = "Appel au service pour un problème"
        elif "points" in user or "faits clés" in user:
            text = "- Motif : une panne depuis hier\n- Décision : un technicien passera\n- Conseils : redémarrer l'appareil"
        else:
            text = "L'appelant décrit un problème et le service propose une solution adaptée."
        completion = Completion(text, self.count_tokens(user), self.count_tokens(user), self.count_tokens(text), 0.0, "stop")
        self.stats.add(completion)
        return completion


def describe_fake(config: Config) -> ModelInfo:
    return ModelInfo(name="fake", file="fake.gguf", sha256="0" * 64)


def load_fake(config: Config, threads: int, path: Path | None = None) -> FakeEngine:
    time.sleep(float(os.environ.get("FAKE_LOAD_SECONDS", "0")))
    linger = float(os.environ.get("FAKE_LINGER_SECONDS", "0"))
    if linger:
        threading.Thread(target=time.sleep, args=(linger,), daemon=False).start()
    return FakeEngine()


FAKE_FACTORY = EngineFactory(describe_fake, load_fake)
