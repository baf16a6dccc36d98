"""llama.cpp behind one small interface: chat completions with exact token accounting.

The worker owns one Engine for its whole life: the model is loaded once, and llama.cpp keeps the
longest common token prefix between calls, which the prompts are ordered to exploit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from daemon.config import Config, ModelConfig
from daemon.errors import EngineError, ModelError
from daemon.model_store import ModelInfo, model_path


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    evaluated_tokens: int
    generated_tokens: int
    seconds: float
    finish_reason: str


@dataclass
class EngineStats:
    calls: int = 0
    prompt_tokens: int = 0
    evaluated_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    def add(self, completion: Completion) -> None:
        self.calls += 1
        self.prompt_tokens += completion.prompt_tokens
        self.evaluated_tokens += completion.evaluated_tokens
        self.generated_tokens += completion.generated_tokens
        self.seconds += completion.seconds


class Engine(Protocol):
    """What correction and metadata need from a model; tests may supply a fake one."""

    info: ModelInfo
    n_ctx: int
    stats: EngineStats

    def chat(
        self, system: str, user: str, *, max_tokens: int, temperature: float,
        stop: list[str] | None = None, repeat_penalty: float = 1.0,
    ) -> Completion: ...

    def count_tokens(self, text: str) -> int: ...


@dataclass
class LlamaSettings:
    """Everything that decides how llama.cpp runs, apart from the model file."""

    n_ctx: int = 4096
    n_batch: int = 512
    n_threads: int = 1
    flash_attn: bool = True
    use_mmap: bool = True
    seed: int = 0

    @classmethod
    def from_config(cls, model: ModelConfig, threads: int) -> "LlamaSettings":
        return cls(n_ctx=model.n_ctx, n_batch=model.n_batch, n_threads=threads,
                   flash_attn=model.flash_attn, use_mmap=model.use_mmap)


@dataclass
class LlamaEngine:
    path: Path
    info: ModelInfo
    settings: LlamaSettings
    stats: EngineStats = field(default_factory=EngineStats)

    def __post_init__(self) -> None:
        import llama_cpp

        from daemon.logs import route_llama_logs

        route_llama_logs()
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=self.settings.n_ctx,
                n_batch=self.settings.n_batch,
                n_ubatch=self.settings.n_batch,
                n_threads=self.settings.n_threads,
                n_threads_batch=self.settings.n_threads,
                flash_attn=self.settings.flash_attn,
                use_mmap=self.settings.use_mmap,
                seed=self.settings.seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp could not load {self.path}: {exc}") from exc
        route_llama_logs()
        self._llama_cpp = llama_cpp

    @property
    def n_ctx(self) -> int:
        return self._llm.n_ctx()

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _evaluated(self) -> int:
        """Prompt tokens llama.cpp really evaluated: the reused prefix is not counted."""
        return self._llama_cpp.llama_perf_context(self._llm._ctx.ctx).n_p_eval

    def chat(
        self, system: str, user: str, *, max_tokens: int, temperature: float,
        stop: list[str] | None = None, repeat_penalty: float = 1.0,
    ) -> Completion:
        evaluated_before = self._evaluated()
        started = time.perf_counter()
        try:
            result = self._llm.create_chat_completion(
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                max_tokens=max_tokens,
                temperature=temperature,
                top_k=1 if temperature == 0 else 40,
                repeat_penalty=repeat_penalty,
                stop=stop or [],
                seed=self.settings.seed,
            )
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"llama.cpp failed: {exc}") from exc
        seconds = time.perf_counter() - started
        choice = result["choices"][0]
        completion = Completion(
            text=choice["message"]["content"] or "",
            prompt_tokens=result["usage"]["prompt_tokens"],
            evaluated_tokens=self._evaluated() - evaluated_before,
            generated_tokens=result["usage"]["completion_tokens"],
            seconds=seconds,
            finish_reason=choice.get("finish_reason") or "stop",
        )
        self.stats.add(completion)
        return completion


def load_llama(config: Config, info: ModelInfo, threads: int) -> LlamaEngine:
    return LlamaEngine(model_path(config), info, LlamaSettings.from_config(config.model, threads))


@dataclass(frozen=True)
class EngineFactory:
    """How a worker gets its engine; picklable, so it can cross into a spawned process."""

    describe: Callable[[Config], ModelInfo]
    load: Callable[[Config, ModelInfo, int], Engine]
