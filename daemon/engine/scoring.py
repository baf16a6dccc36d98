"""Judging text instead of writing it: log-likelihoods from prompt-speed passes, no generation.

A `LlamaScoreStream` reads one main sequence once and scores candidate continuations beside it the
way llama.cpp's perplexity tool scores multiple choices: each candidate is a sequence of its own that
shares the KV cells of the prefix it branches off, all candidates of a step go in the batch that
also extends the main sequence, and logits are read only for the rows that are scored.
"""

from __future__ import annotations

import time
from typing import Collection, Mapping, Sequence

import numpy as np

from daemon.engine import Branch, Completion, EngineStats, StepScores
from daemon.engine.runtime import MAIN, MAX_SEQUENCES, Entry, Runtime, unmarked
from daemon.errors import EngineError

SURPRISE_ROWS = 128


class LlamaScoreStream:
    """The main sequence starts as `prefix` (its cached part reused); `length` counts its positions."""

    def __init__(self, runtime: Runtime, prefix: list[int], stats: EngineStats):
        self.runtime = runtime
        self.stats = stats
        keep = runtime.keep_prefix(prefix, len(prefix) - 1)
        self.history = prefix[:keep]
        self.pending = prefix[keep:]

    @property
    def length(self) -> int:
        return len(self.history) + len(self.pending)

    def step(self, extend: Sequence[int], queries: Mapping[int, Collection[int]],
             branches: Sequence[Branch]) -> StepScores:
        """Append `extend` to the main sequence and score `branches`, in as few llama_decode calls as fit.

        A query for a position already read (its logits are gone) reads the main sequence again from there.
        Branches leave the main sequence at positions it holds before the step. Units of branches (at most
        MAX_SEQUENCES - 1, and as many tokens as the context has room for) are decoded one after the other,
        the first with the main tokens, and dropped once read.
        """
        started = time.perf_counter()
        scores = StepScores(branches=[0.0] * len(branches))
        start = min([len(self.history), *queries])
        if start < len(self.history):
            self.runtime.truncate(start)
            self.pending = self.history[start:] + self.pending
            del self.history[start:]
        main = self.pending + list(extend)
        if any(b.at > start or b.at < 1 for b in branches):
            raise EngineError("a branch must leave the main sequence at a position it already holds")
        entries = [Entry(t, start + i, MAIN, start + i in queries) for i, t in enumerate(main)]
        owners: list[tuple[int, int] | None] = [None] * len(entries)
        units = self._units(branches, self.runtime.n_ctx - start - len(main))
        decoded = 0
        try:
            for number, unit in enumerate(units):
                batch, owned = (entries, owners) if number == 0 else ([], [])
                for sequence, index in enumerate(unit, start=1):
                    tokens = branches[index].tokens
                    self.runtime.share(sequence, branches[index].at)
                    batch = batch + [Entry(t, branches[index].at + j, sequence, j < len(tokens) - 1) for j, t in enumerate(tokens)]
                    owned = owned + [(index, j) for j in range(len(tokens))]
                for offset in range(0, len(batch), self.runtime.n_batch):
                    window = batch[offset:offset + self.runtime.n_batch]
                    self.runtime.decode(window)
                    decoded += len(window)
                    self._read(window, owned[offset:offset + self.runtime.n_batch], queries, branches, scores)
                for sequence in range(1, len(unit) + 1):
                    self.runtime.drop(sequence)
        except EngineError:
            for sequence in range(1, MAX_SEQUENCES):
                self.runtime.drop(sequence)
            self.runtime.truncate(start)
            raise
        self.history += main
        self.pending = []
        self.stats.add(Completion(text="", prompt_tokens=decoded, evaluated_tokens=decoded, generated_tokens=0,
                                  seconds=time.perf_counter() - started, finish_reason="stop"))
        return scores

    @staticmethod
    def _units(branches: Sequence[Branch], room: int) -> list[list[int]]:
        """Branches in groups that fit the sequences and the free cells of the context (one-token ones need none)."""
        units: list[list[int]] = [[]]
        used = 0
        for index, branch in enumerate(branches):
            size = len(branch.tokens)
            if size < 2:
                continue
            if size > room:
                raise EngineError(f"a branch of {size} tokens does not fit the {room} free cells of the context")
            if len(units[-1]) == MAX_SEQUENCES - 1 or used + size > room:
                units.append([])
                used = 0
            units[-1].append(index)
            used += size
        return units

    def _read(self, window: list[Entry], owned: list[tuple[int, int] | None], queries: Mapping[int, Collection[int]],
              branches: Sequence[Branch], scores: StepScores) -> None:
        for index, (entry, owner) in enumerate(zip(window, owned)):
            if not entry.logits:
                continue
            if owner is None:
                wanted = list(queries[entry.position])
                scores.rows[entry.position] = dict(zip(wanted, self.runtime.logprobs(index, wanted)))
            else:
                branch, j = owner
                following = branches[branch].tokens[j + 1]
                scores.branches[branch] += self.runtime.logprobs(index, [following])[0]

    def truncate(self, length: int) -> None:
        """Forget the main sequence from `length` on (a decision changed what follows)."""
        if self.pending:
            raise EngineError("truncate before the prefix was read")
        self.runtime.truncate(length)
        del self.history[length:]

    def close(self) -> None:
        self.runtime.sync(self.history)


def choose(runtime: Runtime, prompt: str, options: Sequence[str], stats: EngineStats) -> list[float]:
    """Multiple-choice scoring: the log-likelihood of each option continuing `prompt`. Their shared prefix is read
    once (its cached part reused), the first token of every option comes from its last row, and an option of
    several tokens scores the rest as a branch of the same step. The KV cache is left holding the prefix."""
    tokenized = [runtime.tokenize(prompt + option, prompt=True) for option in options]
    shared = 0
    while shared < min(len(t) for t in tokenized) - 1 and len({t[shared] for t in tokenized}) == 1:
        shared += 1
    if shared == 0:
        raise EngineError("the options share no prompt to be scored after")
    stream = LlamaScoreStream(runtime, tokenized[0][:shared], stats)
    longer = [i for i, tokens in enumerate(tokenized) if len(tokens) > shared + 1]
    try:
        row = stream.step([], {shared - 1: {tokens[shared] for tokens in tokenized}}, []).rows[shared - 1]
        rests = stream.step([], {}, [Branch(shared, tuple(tokenized[i][shared:])) for i in longer]).branches if longer else []
    finally:
        stream.close()
    scores = [row[tokens[shared]] for tokens in tokenized]
    for i, rest in zip(longer, rests):
        scores[i] += rest
    return scores


def surprise(runtime: Runtime, prompt: str, user: str, stats: EngineStats) -> list[tuple[int, float]]:
    """For each token of `user` inside `prompt`: its byte offset in `user`, and how far its logit trails the
    model's favourite. Rows are read a chunk at a time to bound llama.cpp's output buffer."""
    started = time.perf_counter()
    raw = unmarked(prompt).encode("utf-8")
    user_at = raw.find(user.encode("utf-8"))
    if user_at < 0:
        raise EngineError("the chat template does not keep the user text verbatim")
    user_end = user_at + len(user.encode("utf-8"))
    tokens = runtime.tokenize(prompt, prompt=True)
    if len(tokens) > runtime.n_ctx:
        raise EngineError(f"surprise prompt of {len(tokens)} tokens exceeds n_ctx {runtime.n_ctx}")
    starts = np.cumsum([0] + runtime.piece_lengths(tokens[:-1]))
    first = int(np.searchsorted(starts, user_at))
    keep = runtime.keep_prefix(tokens, max(0, first - 1))
    gaps: list[tuple[int, float]] = []
    history = tokens[:keep]
    try:
        step = min(SURPRISE_ROWS, runtime.n_batch)
        for offset in range(keep, len(tokens), step):
            chunk = tokens[offset:offset + step]
            runtime.decode([Entry(t, offset + i, MAIN, offset + i >= first - 1 or i == len(chunk) - 1)
                            for i, t in enumerate(chunk)])
            history += chunk
            for i in range(len(chunk)):
                position = offset + i
                if position >= first - 1 and first <= position + 1 < len(tokens) and starts[position + 1] < user_end:
                    gap = runtime.gaps(i, [tokens[position + 1]])[0]
                    gaps.append((int(starts[position + 1]) - user_at, gap))
    finally:
        runtime.sync(history)
    stats.add(Completion(text="", prompt_tokens=len(tokens), evaluated_tokens=len(tokens) - keep,
                         generated_tokens=0, seconds=time.perf_counter() - started, finish_reason="stop"))
    return gaps
