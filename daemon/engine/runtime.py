"""llama-cpp-python behind one door: the only module that touches its internals.

The library's `Llama` object renders chat prompts, samples, and reuses the longest cached prefix of
its last prompt. The daemon also decodes batches of its own (prompt-lookup drafts, candidate
continuations scored side by side), on the same llama.cpp context, so this module keeps the
library's record of the KV cache in step with what is really there (`sync`). Moving off the pinned
llama-cpp-python release means re-reading this file, and only this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from daemon.config import ModelConfig
from daemon.errors import EngineError, ModelError

# A message's content is data: marked by two private-use characters in the rendered prompt, tokenized as plain
# text (a "<|im_end|>" typed in a transcript stays text), and the marks dropped. Only the template's own
# text between the contents is parsed for control tokens. The marks never reach the model.
DATA_OPEN, DATA_CLOSE = "\ue000", "\ue001"
_MARKS = str.maketrans({DATA_OPEN: "\ufffd", DATA_CLOSE: "\ufffd"})

# Sequences one context can hold at once: the main one and the branches scored beside it.
MAX_SEQUENCES = 64
MAIN = 0


@dataclass
class LlamaSettings:
    """Everything that decides how llama.cpp runs, apart from the model file."""

    n_ctx: int = 4096
    n_batch: int = 512
    n_ubatch: int | None = None
    n_threads: int = 1
    n_threads_batch: int | None = None
    flash_attn: bool = True
    use_mmap: bool = True
    lookup_tokens: int = 0
    seed: int = 0

    @classmethod
    def from_config(cls, model: ModelConfig, threads: int) -> "LlamaSettings":
        return cls(n_ctx=model.n_ctx, n_batch=model.n_batch, n_threads=threads, flash_attn=model.flash_attn,
                   use_mmap=model.use_mmap, lookup_tokens=model.lookup_tokens)


@dataclass(frozen=True)
class Entry:
    """One token of a batch: which sequence it extends, at which position, and whether its logits are read."""

    token: int
    position: int
    sequence: int = MAIN
    logits: bool = False


class Runtime:
    """One model and one context. Positions and sequences are llama.cpp's; sequence 0 is the main one."""

    def __init__(self, path: Path, settings: LlamaSettings):
        import llama_cpp
        from llama_cpp import _internals

        from daemon.logs import route_llama_logs

        route_llama_logs()
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        self.settings = settings
        try:
            llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=settings.n_ctx, n_batch=settings.n_batch,
                n_ubatch=settings.n_ubatch or settings.n_batch,
                n_threads=settings.n_threads, n_threads_batch=settings.n_threads_batch or settings.n_threads,
                flash_attn=settings.flash_attn,
                use_mmap=settings.use_mmap, seed=settings.seed, verbose=False,
            )
            # A context whose one KV cache serves several sequences: a branch then shares the cells of the
            # prefix it leaves the main sequence at (llama_memory_seq_cp) instead of evaluating it again.
            params = llm.context_params
            params.n_seq_max, params.kv_unified = MAX_SEQUENCES, True
            context = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp could not load {path}: {exc}") from exc
        llm._ctx.close()
        llm._ctx = context
        # every decode, the library's own included, first runs the hook (CPU lending happens between decodes)
        self.before_decode: Callable[[], None] = lambda: None
        decode = context.decode
        context.decode = lambda batch: (self.before_decode(), decode(batch))[1]
        self._lib = llama_cpp
        self._llm = llm
        self._ctx = context.ctx
        self._memory = context.memory
        self._vocab = llm._model.vocab
        self.n_vocab = llm.n_vocab()
        self.n_batch = settings.n_batch
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.template = self._chat_template()

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        self._llm.close()

    def _chat_template(self) -> Any:
        """The model's own chat template, rendered the way create_chat_completion renders it."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        model = self._llm._model
        return Jinja2ChatFormatter(template=template, eos_token=model.token_get_text(self._llm.token_eos()),
                                   bos_token=model.token_get_text(self._llm.token_bos()))

    # ----- tokens --------------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self._llm.n_ctx()

    def tokenize(self, text: str, *, prompt: bool = False) -> list[int]:
        """`prompt`: a rendered prompt, whose template text is parsed for control tokens and whose message
        contents (between the data marks) are plain text; the BOS comes from the template, or is added for a
        model without one. Else `text` is plain text."""
        if not prompt:
            return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        tokens = [self._llm.token_bos()] if self.template is None else []
        for at, part in enumerate(text.split(DATA_OPEN)):
            data, _, template = part.partition(DATA_CLOSE) if at else ("", "", part)
            for piece, special in ((data, False), (template, True)):
                if piece:
                    tokens += self._llm.tokenize(piece.encode("utf-8"), add_bos=False, special=special)
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._llm.detokenize(list(tokens)).decode("utf-8", errors="replace")

    def piece_lengths(self, tokens: Sequence[int]) -> list[int]:
        """Bytes each token stands for, special tokens included, to map tokens back to offsets in the text."""
        return [len(self._llm._model.detokenize([t], special=True)) for t in tokens]

    def piece(self, token: int) -> bytes:
        """The bytes a token adds to an answer (special tokens add none)."""
        return self._llm._model.detokenize([token], special=False)

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def render(self, system: str, user: str) -> str:
        """The prompt text for one system and one user message, each content marked as data; a plain layout
        for a model without a chat template."""
        system, user = as_data(system), as_data(user)
        if self.template is None:
            return f"{system}\n\n{user}"
        return self.template(messages=[{"role": "system", "content": system}, {"role": "user", "content": user}]).prompt

    # ----- the KV cache --------------------------------------------------------------------------
    def keep_prefix(self, tokens: Sequence[int], limit: int) -> int:
        """Drop every cached cell past the longest prefix shared with `tokens` (at most `limit`); its length."""
        cached = self._llm.input_ids[: self._llm.n_tokens]
        keep = 0
        top = min(len(cached), limit, len(tokens))
        while keep < top and cached[keep] == tokens[keep]:
            keep += 1
        self._lib.llama_memory_seq_rm(self._memory, -1, keep, -1)
        return keep

    def truncate(self, length: int, sequence: int = MAIN) -> None:
        self._lib.llama_memory_seq_rm(self._memory, sequence, length, -1)

    def share(self, sequence: int, length: int) -> None:
        """Let `sequence` see the main sequence's first `length` positions (no copy: the cells gain a tag)."""
        self._lib.llama_memory_seq_cp(self._memory, MAIN, sequence, 0, length)

    def drop(self, sequence: int) -> None:
        self._lib.llama_memory_seq_rm(self._memory, sequence, -1, -1)

    def sync(self, history: Sequence[int]) -> None:
        """Tell llama-cpp-python what the main sequence now holds, so its own prefix reuse stays right."""
        self._llm.input_ids[: len(history)] = history
        self._llm.n_tokens = len(history)
        self._llm._requires_eval = True

    # ----- decoding ------------------------------------------------------------------------------
    def set_threads(self, threads: int) -> None:
        """Threads for the next decodes (generation and batches alike)."""
        self._lib.llama_set_n_threads(self._ctx, threads, threads)

    def decode(self, entries: Sequence[Entry]) -> None:
        """One llama_decode of at most n_batch entries; their logits are then read by entry index."""
        if not entries or len(entries) > self.n_batch:
            raise EngineError(f"a batch holds 1 to {self.n_batch} tokens, not {len(entries)}")
        self.before_decode()
        batch = self._batch
        batch.n_tokens = len(entries)
        for i, entry in enumerate(entries):
            batch.token[i] = entry.token
            batch.pos[i] = entry.position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = entry.sequence
            batch.logits[i] = entry.logits
        code = self._lib.llama_decode(self._ctx, batch)
        if code != 0:
            raise EngineError(f"llama_decode returned {code} for a batch of {len(entries)} tokens")

    def evaluate(self, tokens: Sequence[int], start: int) -> int:
        """The main sequence from `start`, n_batch tokens at a time, logits for the last token: its entry index."""
        index = 0
        for offset in range(0, len(tokens), self.n_batch):
            chunk = tokens[offset:offset + self.n_batch]
            last = offset + len(chunk) == len(tokens)
            self.decode([Entry(t, start + offset + i, MAIN, last and i == len(chunk) - 1) for i, t in enumerate(chunk)])
            index = len(chunk) - 1
        return index

    def _logits(self, index: int) -> np.ndarray:
        pointer = self._lib.llama_get_logits_ith(self._ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def argmax(self, index: int) -> int:
        return int(self._logits(index).argmax())

    def logprobs(self, index: int, tokens: Sequence[int]) -> list[float]:
        """log P(token) for each of `tokens` after entry `index` of the last decode."""
        logits = self._logits(index).astype(np.float64)
        top = logits.max()
        normaliser = top + np.log(np.exp(logits - top).sum())
        return [float(logits[t] - normaliser) for t in tokens]

    def gaps(self, index: int, tokens: Sequence[int]) -> list[float]:
        """How far each of `tokens` trails the model's favourite after entry `index`, in logits."""
        logits = self._logits(index)
        top = logits.max()
        return [float(top - logits[t]) for t in tokens]

    def evaluated(self) -> int:
        """Prompt tokens llama.cpp has evaluated in its own calls since the context was made."""
        return self._lib.llama_perf_context(self._ctx).n_p_eval

    # ----- llama-cpp-python's own paths ------------------------------------------------------------
    def completion(self, prompt: str, **kwargs: Any) -> dict[str, Any]:
        """A continuation of a rendered prompt (`tokenize(prompt=True)`: control tokens from the template only)."""
        try:
            return self._llm.create_completion(self.tokenize(prompt, prompt=True), **kwargs)
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"llama.cpp failed: {exc}") from exc


# ----- llama.cpp's quantiser ---------------------------------------------------------------------
FILE_TYPE_PREFIX = "LLAMA_FTYPE_"


def data_content(text: str) -> str:
    """`text` as it stands inside a data span: a mark already in it replaced, so that none can end the span."""
    return text.translate(_MARKS)


def as_data(text: str) -> str:
    """`text` marked as data for `Runtime.tokenize`."""
    return f"{DATA_OPEN}{data_content(text)}{DATA_CLOSE}"


def unmarked(text: str) -> str:
    """A rendered prompt as the model reads it: the data marks dropped."""
    return text.replace(DATA_OPEN, "").replace(DATA_CLOSE, "")


def file_types() -> dict[str, int]:
    """Every file type this llama.cpp writes, by the name its own `llama-quantize` uses (Q4_0, Q4_K_M...)."""
    import llama_cpp

    types = {}
    for name, value in vars(llama_cpp).items():
        if name.startswith(FILE_TYPE_PREFIX) and isinstance(value, int) and not name.endswith("GUESSED"):
            types[name[len(FILE_TYPE_PREFIX):].removeprefix("MOSTLY_").removeprefix("ALL_")] = value
    return types


def quantize_file(source: Path, target: Path, file_type: int, threads: int) -> int:
    """llama_model_quantize with requantising allowed (the input may itself be quantised); 0 on success."""
    import ctypes

    import llama_cpp

    from daemon.logs import route_llama_logs

    route_llama_logs()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = file_type, True, threads
    return int(llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)))
