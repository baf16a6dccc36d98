"""Prompt-lookup speculative decoding: greedy answers that mostly copy their prompt, drafted from it.

Corrections rewritten by the model mostly copy their input, and reading tokens is several times
faster than generating them on CPU, so each accepted draft token saves most of a decode step. The
output is the greedy one (up to rounding on near ties between batched and single-token decoding).
"""

from __future__ import annotations

import time

from daemon.engine import Completion
from daemon.engine.runtime import MAIN, Entry, Runtime
from daemon.errors import EngineError

MIN_DRAFT = 2


def draft(history: list[int], prompt_end: int, size: int) -> list[int]:
    """After the longest recent n-gram (3, 2, then 1 tokens) found in the prompt, what followed it there."""
    for n in (3, 2, 1):
        key = history[-n:]
        for i in range(prompt_end - n, -1, -1):
            if history[i:i + n] == key:
                return history[i + n:min(i + n + size, prompt_end)]
    return []


class StopWatch:
    """Finds a stop string in the answer by looking only at its newest bytes, not re-reading it all."""

    def __init__(self, runtime: Runtime, stop: list[str]):
        self.runtime = runtime
        self.stops = [s.encode("utf-8") for s in stop if s]
        self.reach = max((len(s) for s in self.stops), default=0)
        self.text = bytearray()

    def add(self, tokens: list[int]) -> bool:
        before = len(self.text)
        for token in tokens:
            self.text += self.runtime.piece(token)
        window = bytes(self.text[max(0, before - self.reach):])
        return any(s in window for s in self.stops)


def lookup_decode(runtime: Runtime, prompt: list[int], max_tokens: int, stop: list[str], lookup_tokens: int) -> Completion:
    """Greedy decoding that verifies drafted continuations in one batch and keeps the longest matching run.

    Invariant: the KV cache holds exactly `history`; `next_token` is the prediction that follows it.
    """
    started = time.perf_counter()
    if len(prompt) + max_tokens > runtime.n_ctx:
        raise EngineError(f"prompt of {len(prompt)} tokens plus {max_tokens} to generate exceeds n_ctx {runtime.n_ctx}")
    keep = runtime.keep_prefix(prompt, len(prompt) - 1)
    history = prompt[:keep]
    out: list[int] = []
    watch = StopWatch(runtime, stop)
    drafted = accepted = 0
    draft_size = lookup_tokens
    finish = "length"
    try:
        last = runtime.evaluate(prompt[keep:], keep)
        history = list(prompt)
        next_token = runtime.argmax(last)
        while True:
            if runtime.is_eog(next_token):
                finish = "stop"
                break
            out.append(next_token)
            if watch.add([next_token]):
                finish = "stop"
                break
            if len(out) >= max_tokens:
                break
            proposal = draft(history + [next_token], len(prompt), lookup_tokens)[: min(draft_size, max_tokens - len(out))]
            batch = [next_token] + proposal
            runtime.decode([Entry(t, len(history) + i, MAIN, True) for i, t in enumerate(batch)])
            history.append(next_token)
            drafted += len(proposal)
            matched = 0
            while matched < len(proposal) and runtime.argmax(matched) == proposal[matched] and not runtime.is_eog(proposal[matched]):
                matched += 1
            following = runtime.argmax(matched)
            history += proposal[:matched]
            out += proposal[:matched]
            accepted += matched
            # A rejected draft still costs a batch; when the answer leaves the prompt (a rewrite, a loop),
            # draft little until drafts match again.
            if proposal:
                draft_size = min(lookup_tokens, max(MIN_DRAFT, 2 * matched))
            runtime.truncate(len(history))
            next_token = following
            if watch.add(proposal[:matched]):
                finish = "stop"
                break
            if len(out) >= max_tokens:
                break
    finally:
        runtime.sync(history)
    text = runtime.detokenize(out)
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return Completion(text=text[:cut] if cut >= 0 else text, prompt_tokens=len(prompt),
                      evaluated_tokens=len(prompt) - keep, generated_tokens=len(out),
                      seconds=time.perf_counter() - started, finish_reason=finish,
                      drafted_tokens=drafted, accepted_tokens=accepted)
