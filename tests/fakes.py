"""A fake engine for queue and supervisor fault tests: instant, deterministic, and able to misbehave.

Text markers in a transcript drive it: CRASH-WORKER kills the worker process mid-job, SLOW-JOB
makes a job take a few seconds, so tests can kill or stop things while work is in flight.
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass, field

from daemon.config import Config
from daemon.engine import Completion, EngineFactory, EngineStats
from daemon.model_store import ModelInfo

NUMBERED = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)
SLOW_SECONDS = 4.0


@dataclass
class FakeEngine:
    info: ModelInfo
    n_ctx: int = 4096
    stats: EngineStats = field(default_factory=EngineStats)

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def chat(self, system: str, user: str, *, max_tokens: int, temperature: float,
             stop: list[str] | None = None, repeat_penalty: float = 1.0, copies_prompt: bool = False) -> Completion:
        if "CRASH-WORKER" in user:
            os.kill(os.getpid(), signal.SIGKILL)
        if "SLOW-JOB" in user:
            time.sleep(SLOW_SECONDS)
        lines = NUMBERED.findall(user)
        if lines and "<transcription>" not in user:
            text = "\n".join(f"[{n}] {t}" for n, t in lines)
        elif "titre" in user.lower() or "title" in user.lower():
            text = "Appel au service pour un problème"
        elif "Note" in user or "Score" in user:
            text = "Note : 4. Justification : l'appelant obtient une réponse claire."
        elif "points" in user:
            text = "- L'appelant décrit son problème\n- Le service pose des questions\n- Une solution est proposée"
        else:
            text = "L'appelant décrit un problème et le service propose une solution adaptée."
        completion = Completion(text, self.count_tokens(user), self.count_tokens(user), self.count_tokens(text), 0.0, "stop")
        self.stats.add(completion)
        return completion


def describe_fake(config: Config) -> ModelInfo:
    return ModelInfo(name="fake", file="fake.gguf", sha256="0" * 64)


def load_fake(config: Config, info: ModelInfo, threads: int) -> FakeEngine:
    return FakeEngine(info)


FAKE_FACTORY = EngineFactory(describe_fake, load_fake)
