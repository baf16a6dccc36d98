"""Prompt-lookup decoding's parts that need no model: drafts from the prompt, and the stop-string watch."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.engine.lookup import StopWatch, draft


@dataclass
class Pieces:
    """A runtime stand-in for the stop watch: each token is one letter; counts how many pieces were read."""

    read: int = 0

    def piece(self, token: int) -> bytes:
        self.read += 1
        return chr(token).encode()


def test_a_draft_is_what_followed_the_longest_recent_match_in_the_prompt():
    prompt = [1, 2, 3, 4, 5, 6, 2, 3, 9]
    assert draft(prompt + [2, 3], len(prompt), 3) == [9]
    assert draft(prompt + [4], len(prompt), 2) == [5, 6]
    assert draft(prompt + [7], len(prompt), 3) == []


def test_the_stop_watch_finds_a_stop_string_across_tokens_and_reads_each_token_once():
    pieces = Pieces()
    watch = StopWatch(pieces, ["\n\n"])  # type: ignore[arg-type]
    text = "a" * 2000 + "\n\n"
    found = [watch.add([ord(c)]) for c in text]
    assert found == [False] * 2001 + [True]
    assert pieces.read == len(text)
