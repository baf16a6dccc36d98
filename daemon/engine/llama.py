"""The engine on llama.cpp: chat completions with exact token accounting, and scoring streams."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from daemon.engine import Completion, EngineStats
from daemon.engine.lookup import lookup_decode
from daemon.engine.runtime import LlamaSettings, Runtime, data_content
from daemon.engine.scoring import LlamaScoreStream, choose, surprise
from daemon.errors import EngineError


@dataclass
class LlamaEngine:
    path: Path
    settings: LlamaSettings
    stats: EngineStats = field(default_factory=EngineStats)

    def __post_init__(self) -> None:
        self._runtime = Runtime(self.path, self.settings)

    def close(self) -> None:
        self._runtime.close()

    @property
    def n_ctx(self) -> int:
        return self._runtime.n_ctx

    def tokenize(self, text: str) -> list[int]:
        return self._runtime.tokenize(text)

    def count_tokens(self, text: str) -> int:
        return len(self._runtime.tokenize(text))

    def render(self, system: str, user: str) -> str:
        """The prompt text a chat with these messages reads, its contents marked as data (`runtime.as_data`)."""
        return self._runtime.render(system, user)

    def chat(
        self, system: str, user: str, *, max_tokens: int, temperature: float,
        stop: list[str] | None = None, repeat_penalty: float = 1.0, copies_prompt: bool = False,
    ) -> Completion:
        """A chat completion; greedy answers that mostly copy the prompt take the prompt-lookup path."""
        runtime = self._runtime
        lookup = self.settings.lookup_tokens
        prompt = self.render(system, user)
        if copies_prompt and temperature == 0 and repeat_penalty == 1.0 and lookup and runtime.template is not None:
            completion = lookup_decode(runtime, runtime.tokenize(prompt, prompt=True), max_tokens, stop or [], lookup)
            self.stats.add(completion)
            return completion
        return self.complete(prompt, max_tokens=max_tokens, temperature=temperature, stop=stop,
                             repeat_penalty=repeat_penalty)

    def complete(self, prompt: str, *, max_tokens: int, temperature: float, stop: list[str] | None = None,
                 repeat_penalty: float = 1.0) -> Completion:
        """The continuation of `prompt`, a rendered chat prompt whose answer is begun."""
        completion = self._generate(lambda **kwargs: self._runtime.completion(prompt, **kwargs), max_tokens,
                                    temperature, stop or [], repeat_penalty)
        self.stats.add(completion)
        return completion

    def _generate(self, call: Callable[..., dict[str, Any]], max_tokens: int, temperature: float, stop: list[str],
                  repeat_penalty: float) -> Completion:
        """One of llama-cpp-python's completions, with the tokens llama.cpp actually evaluated."""
        evaluated_before = self._runtime.evaluated()
        started = time.perf_counter()
        result = call(max_tokens=max_tokens, temperature=temperature, top_k=1 if temperature == 0 else 40,
                      repeat_penalty=repeat_penalty, stop=stop, seed=self.settings.seed)
        choice = result["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        return Completion(
            text=text or "",
            prompt_tokens=result["usage"]["prompt_tokens"],
            evaluated_tokens=self._runtime.evaluated() - evaluated_before,
            generated_tokens=result["usage"]["completion_tokens"],
            seconds=time.perf_counter() - started,
            finish_reason=choice.get("finish_reason") or "stop",
        )

    def set_threads(self, threads: int) -> None:
        self._runtime.set_threads(threads)

    def on_decode(self, hook: Callable[[], None]) -> None:
        self._runtime.before_decode = hook

    def stream(self, prefix: str) -> LlamaScoreStream:
        return LlamaScoreStream(self._runtime, self._runtime.tokenize(prefix, prompt=True), self.stats)

    def choose(self, prompt: str, options: Sequence[str]) -> list[float]:
        """log P(option | prompt) for each option (a rendered prompt, its answer begun), read in one pass."""
        return choose(self._runtime, prompt, options, self.stats)

    def surprise(self, system: str, user: str) -> list[tuple[int, float]]:
        """Per token of `user`: its byte offset and how far its logit trails the model's favourite."""
        if self._runtime.template is None:
            raise EngineError(f"{self.path.name} has no chat template: surprise scoring needs one")
        return surprise(self._runtime, self.render(system, user), data_content(user), self.stats)

    def prompt_rate(self, text: str, tokens: int) -> float:
        """Prompt tokens per second over the first `tokens` tokens of `text` repeated, evaluated at once from an
        empty cache (bench limits)."""
        ids = self._runtime.tokenize(text, prompt=True)
        ids = (ids * (tokens // max(1, len(ids)) + 1))[:tokens]
        self._runtime.keep_prefix([], 0)
        started = time.perf_counter()
        self._runtime.evaluate(ids, 0)
        rate = len(ids) / (time.perf_counter() - started)
        self._runtime.sync([])
        return rate

    def generation_rate(self, prompt: str, max_tokens: int) -> float:
        """Tokens per second of greedy generation after `prompt` (bench limits)."""
        self._runtime.completion(prompt, max_tokens=1)
        started = time.perf_counter()
        out = self._runtime.completion(prompt, max_tokens=max_tokens, temperature=0.0, top_k=1)
        return out["usage"]["completion_tokens"] / (time.perf_counter() - started)
