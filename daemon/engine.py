"""llama.cpp behind one small interface: chat completions with exact token accounting.

The worker owns one Engine for its whole life: the model is loaded once, and llama.cpp keeps the
longest common token prefix between calls, which the prompts are ordered to exploit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from daemon.config import Config, ModelConfig
from daemon.errors import EngineError, ModelError
from daemon.model_store import ModelInfo, model_path

SURPRISE_ROWS = 128
MIN_DRAFT = 2


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


@dataclass
class EngineStats:
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


class Engine(Protocol):
    """What correction and metadata need from a model; tests may supply a fake one."""

    info: ModelInfo
    n_ctx: int
    stats: EngineStats

    def chat(
        self, system: str, user: str, *, max_tokens: int, temperature: float,
        stop: list[str] | None = None, repeat_penalty: float = 1.0, copies_prompt: bool = False,
    ) -> Completion: ...

    def count_tokens(self, text: str) -> int: ...

    def surprise(self, system: str, user: str) -> list[tuple[int, float]]: ...


@dataclass
class LlamaSettings:
    """Everything that decides how llama.cpp runs, apart from the model file."""

    n_ctx: int = 4096
    n_batch: int = 512
    n_threads: int = 1
    flash_attn: bool = True
    use_mmap: bool = True
    lookup_tokens: int = 0
    seed: int = 0

    @classmethod
    def from_config(cls, model: ModelConfig, threads: int) -> "LlamaSettings":
        return cls(n_ctx=model.n_ctx, n_batch=model.n_batch, n_threads=threads, flash_attn=model.flash_attn,
                   use_mmap=model.use_mmap, lookup_tokens=model.lookup_tokens)


@dataclass
class LlamaEngine:
    path: Path
    info: ModelInfo
    settings: LlamaSettings
    stats: EngineStats = field(default_factory=EngineStats)

    def __post_init__(self) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaBatch

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
        self._llama_cpp = llama_cpp
        self._n_vocab = self._llm.n_vocab()
        self._batch = LlamaBatch(n_tokens=max(self.settings.n_batch, self.settings.lookup_tokens + 1), embd=0, n_seq_max=1)
        self._formatter = self._chat_formatter()

    def _chat_formatter(self) -> Any:
        """The model's own chat template, rendered the way create_chat_completion renders it."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        model = self._llm._model
        return Jinja2ChatFormatter(template=template, eos_token=model.token_get_text(self._llm.token_eos()),
                                   bos_token=model.token_get_text(self._llm.token_bos()))

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
        stop: list[str] | None = None, repeat_penalty: float = 1.0, copies_prompt: bool = False,
    ) -> Completion:
        """A chat completion; greedy answers that mostly copy the prompt take the prompt-lookup path."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        if copies_prompt and temperature == 0 and repeat_penalty == 1.0 and self.settings.lookup_tokens and self._formatter:
            completion = self._lookup_decode(messages, max_tokens, stop or [])
        else:
            completion = self._create(messages, max_tokens, temperature, stop or [], repeat_penalty)
        self.stats.add(completion)
        return completion

    def _create(self, messages: list[dict[str, str]], max_tokens: int, temperature: float, stop: list[str],
                repeat_penalty: float) -> Completion:
        evaluated_before = self._evaluated()
        started = time.perf_counter()
        try:
            result = self._llm.create_chat_completion(
                messages=messages, max_tokens=max_tokens, temperature=temperature,
                top_k=1 if temperature == 0 else 40, repeat_penalty=repeat_penalty, stop=stop, seed=self.settings.seed,
            )
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"llama.cpp failed: {exc}") from exc
        choice = result["choices"][0]
        return Completion(
            text=choice["message"]["content"] or "",
            prompt_tokens=result["usage"]["prompt_tokens"],
            evaluated_tokens=self._evaluated() - evaluated_before,
            generated_tokens=result["usage"]["completion_tokens"],
            seconds=time.perf_counter() - started,
            finish_reason=choice.get("finish_reason") or "stop",
        )

    def _decode(self, tokens: list[int], start: int, logits_from: int | None = None) -> None:
        """Evaluate `tokens` at positions start.. in batches of n_batch; logits for the last position and
        for every position from `logits_from` on."""
        n_batch = self.settings.n_batch
        for offset in range(0, len(tokens), n_batch):
            chunk = tokens[offset:offset + n_batch]
            self._batch.set_batch(chunk, start + offset, False)
            if logits_from is not None:
                for i in range(len(chunk)):
                    self._batch.batch.logits[i] = start + offset + i >= logits_from
                self._batch.batch.logits[len(chunk) - 1] = True
            self._llm._ctx.decode(self._batch)

    def _reusable(self, tokens: list[int], limit: int) -> int:
        """How many leading tokens the KV cache already holds (at most `limit`)."""
        cached = self._llm.input_ids[: self._llm.n_tokens].tolist()
        keep = 0
        while keep < min(len(cached), limit) and cached[keep] == tokens[keep]:
            keep += 1
        return keep

    def _sync(self, history: list[int]) -> None:
        """Tell llama-cpp-python what the KV cache now holds, so its own prefix reuse stays right."""
        self._llm.input_ids[: len(history)] = history
        self._llm.n_tokens = len(history)
        self._llm._requires_eval = True

    def surprise(self, system: str, user: str) -> list[tuple[int, float]]:
        """For each token of `user`: its byte offset in `user`, and how far its logit trails the model's favourite.

        One prompt pass, no generation, tells which lines the model would have written differently. Rows of
        logits are read a chunk at a time to bound llama.cpp's output buffer (rows x vocabulary floats).
        """
        if self._formatter is None:
            raise EngineError(f"{self.path.name} has no chat template: surprise scoring needs one")
        llm = self._llm
        started = time.perf_counter()
        raw = self._formatter(messages=[{"role": "system", "content": system}, {"role": "user", "content": user}]).prompt.encode("utf-8")
        user_at = raw.find(user.encode("utf-8"))
        user_end = user_at + len(user.encode("utf-8"))
        if user_at < 0:
            raise EngineError(f"the chat template of {self.path.name} does not keep the user text verbatim")
        tokens = llm.tokenize(raw, special=True)
        if len(tokens) > self.n_ctx:
            raise EngineError(f"surprise prompt of {len(tokens)} tokens exceeds n_ctx {self.n_ctx}")
        starts = np.cumsum([0] + [len(llm._model.detokenize([t], special=True)) for t in tokens[:-1]])
        first = int(np.searchsorted(starts, user_at))
        keep = self._reusable(tokens, max(0, first - 1))
        gaps: list[tuple[int, float]] = []
        history = tokens[:keep]
        try:
            llm._ctx.kv_cache_seq_rm(-1, keep, -1)
            step = min(SURPRISE_ROWS, self.settings.n_batch)
            for offset in range(keep, len(tokens), step):
                chunk = tokens[offset:offset + step]
                self._decode(chunk, offset, logits_from=first - 1)
                history += chunk
                rows = [offset + i for i in range(len(chunk)) if offset + i >= first - 1 or i == len(chunk) - 1]
                logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(rows), self._n_vocab))
                for row, position in enumerate(rows):
                    if first <= position + 1 < len(tokens) and starts[position + 1] < user_end:
                        following = tokens[position + 1]
                        gaps.append((int(starts[position + 1]) - user_at, float(logits[row].max() - logits[row, following])))
        except RuntimeError as exc:
            raise EngineError(f"llama.cpp failed: {exc}") from exc
        finally:
            self._sync(history)
        self.stats.add(Completion(text="", prompt_tokens=len(tokens), evaluated_tokens=len(tokens) - keep,
                                  generated_tokens=0, seconds=time.perf_counter() - started, finish_reason="stop"))
        return gaps

    def _argmax(self, index: int) -> int:
        logits = np.ctypeslib.as_array(self._llm._ctx.get_logits_ith(index), shape=(self._n_vocab,))
        return int(logits.argmax())

    def _draft(self, history: list[int], prompt_end: int) -> list[int]:
        """Prompt lookup: after the longest recent n-gram (3, 2, then 1 tokens) found in the prompt, what followed it."""
        for n in (3, 2, 1):
            key = history[-n:]
            for i in range(prompt_end - n, -1, -1):
                if history[i:i + n] == key:
                    return history[i + n:min(i + n + self.settings.lookup_tokens, prompt_end)]
        return []

    def _lookup_decode(self, messages: list[dict[str, str]], max_tokens: int, stop: list[str]) -> Completion:
        """Greedy decoding that verifies drafted continuations in one batch and keeps the longest matching run.

        Corrections mostly copy their input, and reading tokens is several times faster than generating
        them on CPU, so each accepted draft token saves most of a decode step. The output is the greedy one.
        Invariant: the KV cache holds exactly `history`; `next_token` is the prediction that follows it.
        """
        llm = self._llm
        started = time.perf_counter()
        tokens = llm.tokenize(self._formatter(messages=messages).prompt.encode("utf-8"), special=True)
        if len(tokens) + max_tokens > self.n_ctx:
            raise EngineError(f"prompt of {len(tokens)} tokens plus {max_tokens} to generate exceeds n_ctx {self.n_ctx}")
        keep = self._reusable(tokens, len(tokens) - 1)
        history = tokens[:keep]
        out: list[int] = []
        drafted = accepted = 0
        draft_size = self.settings.lookup_tokens
        finish = "length"

        def end_reason() -> str | None:
            if any(s in llm.detokenize(out).decode("utf-8", errors="ignore") for s in stop):
                return "stop"
            return "length" if len(out) >= max_tokens else None

        try:
            llm._ctx.kv_cache_seq_rm(-1, keep, -1)
            self._decode(tokens[keep:], keep)
            history = list(tokens)
            next_token = self._argmax(self._batch.n_tokens() - 1)
            while True:
                if self._is_eog(next_token):
                    finish = "stop"
                    break
                out.append(next_token)
                if reason := end_reason():
                    finish = reason
                    break
                draft = self._draft(history + [next_token], len(tokens))[: min(draft_size, max_tokens - len(out))]
                self._decode([next_token] + draft, len(history), logits_from=len(history))
                history.append(next_token)
                drafted += len(draft)
                matched = 0
                while matched < len(draft) and self._argmax(matched) == draft[matched] and not self._is_eog(draft[matched]):
                    matched += 1
                following = self._argmax(matched)
                history += draft[:matched]
                out += draft[:matched]
                accepted += matched
                # A rejected draft still costs a batch; when the answer leaves the prompt (a rewrite, a loop),
                # draft little until drafts match again.
                if draft:
                    draft_size = min(self.settings.lookup_tokens, max(MIN_DRAFT, 2 * matched))
                llm._ctx.kv_cache_seq_rm(-1, len(history), -1)
                next_token = following
                if reason := end_reason():
                    finish = reason
                    break
        except RuntimeError as exc:
            raise EngineError(f"llama.cpp failed: {exc}") from exc
        finally:
            self._sync(history)
        text = llm.detokenize(out).decode("utf-8", errors="replace")
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        return Completion(text=text[:cut] if cut >= 0 else text, prompt_tokens=len(tokens),
                          evaluated_tokens=len(tokens) - keep, generated_tokens=len(out),
                          seconds=time.perf_counter() - started, finish_reason=finish,
                          drafted_tokens=drafted, accepted_tokens=accepted)

    def _is_eog(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self._llm._model.vocab, token))


def load_llama(config: Config, info: ModelInfo, threads: int) -> LlamaEngine:
    return LlamaEngine(model_path(config), info, LlamaSettings.from_config(config.model, threads))


@dataclass(frozen=True)
class EngineFactory:
    """How a worker gets its engine; picklable, so it can cross into a spawned process."""

    describe: Callable[[Config], ModelInfo]
    load: Callable[[Config, ModelInfo, int], Engine]
