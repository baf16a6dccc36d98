"""What correction and metadata need from a model, and how a worker gets one.

Two ways to use a model: `chat` writes (a title, a summary, a rewritten line) and `complete` continues
an answer begun (the reason after a satisfaction score); `stream` and `choose` judge (the log-likelihood
of what is written against candidate spellings, branching off one read of the transcript). The worker
owns one engine for its whole life: the model is loaded once, and llama.cpp keeps the longest common
token prefix between calls, which the prompts are ordered to exploit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Collection, Mapping, Protocol, Sequence

from daemon.config import Config
from daemon.model_store import ModelInfo


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    evaluated_tokens: int
    generated_tokens: int
    seconds: float
    finish_reason: str
    drafted_tokens: int = 0
    accepted_tokens: int = 0


TOKEN_COUNTS = {"prompt": "prompt_tokens", "evaluated": "evaluated_tokens", "generated": "generated_tokens",
                "drafted": "drafted_tokens", "accepted": "accepted_tokens"}


@dataclass
class EngineStats:
    """Model calls and tokens; added and subtracted to count per file, per run, per window."""

    calls: int = 0
    prompt_tokens: int = 0
    evaluated_tokens: int = 0
    generated_tokens: int = 0
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    seconds: float = 0.0

    def add(self, completion: Completion) -> None:
        self.calls += 1
        self.prompt_tokens += completion.prompt_tokens
        self.evaluated_tokens += completion.evaluated_tokens
        self.generated_tokens += completion.generated_tokens
        self.drafted_tokens += completion.drafted_tokens
        self.accepted_tokens += completion.accepted_tokens
        self.seconds += completion.seconds

    def __add__(self, other: "EngineStats") -> "EngineStats":
        return EngineStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __sub__(self, other: "EngineStats") -> "EngineStats":
        return EngineStats(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def copy(self) -> "EngineStats":
        return EngineStats(**{f.name: getattr(self, f.name) for f in fields(self)})

    def tokens(self) -> dict[str, int]:
        """The token counts as an output's `stats.tokens` holds them."""
        return {key: getattr(self, name) for key, name in TOKEN_COUNTS.items()}

    @classmethod
    def of_tokens(cls, tokens: dict[str, int], calls: int = 0) -> "EngineStats":
        return cls(calls=calls, **{name: tokens.get(key, 0) for key, name in TOKEN_COUNTS.items()})


@dataclass(frozen=True)
class Branch:
    """A continuation that leaves the main sequence at position `at` (its first token's position)."""

    at: int
    tokens: tuple[int, ...]


@dataclass
class StepScores:
    """`rows[position][token]`: log P(token at position + 1) on the main sequence, for the positions asked;
    `branches[i]`: the log-likelihood of branch i's tokens after its first (the first is the main row's)."""

    rows: dict[int, dict[int, float]] = field(default_factory=dict)
    branches: list[float] = field(default_factory=list)


class ScoreStream(Protocol):
    """One sequence read once, with branches scored beside it. Close it before the next chat."""

    length: int

    def step(self, extend: Sequence[int], queries: Mapping[int, Collection[int]],
             branches: Sequence[Branch]) -> StepScores: ...

    def truncate(self, length: int) -> None: ...

    def close(self) -> None: ...


class Engine(Protocol):
    """What correction and metadata need from a model; tests may supply a fake one."""

    n_ctx: int
    stats: EngineStats

    def chat(
        self, system: str, user: str, *, max_tokens: int, temperature: float,
        stop: list[str] | None = None, repeat_penalty: float = 1.0, copies_prompt: bool = False,
    ) -> Completion: ...

    def complete(self, prompt: str, *, max_tokens: int, temperature: float, stop: list[str] | None = None,
                 repeat_penalty: float = 1.0) -> Completion: ...

    def count_tokens(self, text: str) -> int: ...

    def tokenize(self, text: str) -> list[int]: ...

    def render(self, system: str, user: str) -> str: ...

    def stream(self, prefix: str) -> ScoreStream: ...

    def choose(self, prompt: str, options: Sequence[str]) -> list[float]: ...

    def surprise(self, system: str, user: str) -> list[tuple[int, float]]: ...

    def set_threads(self, threads: int) -> None: ...

    def on_decode(self, hook: Callable[[], None]) -> None:
        """`hook` runs before every decode: the only moment the threads may change."""


def load_llama(config: Config, threads: int, path: Path | None = None) -> Engine:
    """The configured model, or the GGUF at `path` (the scorer's) with the same settings."""
    from daemon.engine.llama import LlamaEngine
    from daemon.engine.runtime import LlamaSettings
    from daemon.model_store import model_path

    return LlamaEngine(path or model_path(config), LlamaSettings.from_config(config.model, threads))


@dataclass(frozen=True)
class EngineFactory:
    """How a worker gets its engines; picklable, so it can cross into a spawned process."""

    describe: Callable[[Config], ModelInfo]
    load: Callable[[Config, int, Path | None], Engine]

    def load_all(self, config: Config, threads: int) -> tuple[Engine, Engine | None]:
        """The model, and the scoring corrector's own when configured; each loaded once, for a worker's life."""
        scorer = config.enrichment.correction.scorer_path
        return self.load(config, threads, None), self.load(config, threads, scorer) if scorer else None
