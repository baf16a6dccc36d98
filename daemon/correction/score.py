"""The scoring corrector: sound-alike spellings judged by the model, kept when the call reads better.

Each segment's candidate edits come from confusion sets (candidates.py). The model reads the dialogue
once, as written, exactly as the metadata prompts will read it ([system] <transcription>, one line
per turn), so the KV cache it leaves behind is the metadata's prefix up to the first correction. A
candidate branches off that reading at the first token where it differs and is scored over the
tokens it changes plus `score_tokens` tokens of the text after them (the rest of its line, then the
next line); its gain is the log-likelihood it adds over the line as written, on the same text. The
first token's probability comes free with the reading, so a candidate the model finds implausible
there never costs a branch (`prune_nats`). Every line is judged in the context of the call as
written: no judgement waits for another, and the reading is never undone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from daemon.config import CorrectionConfig
from daemon.correction.base import CorrectorBase
from daemon.correction.candidates import ConfusionSets, Edit, candidates, load_sets
from daemon.correction.outcomes import CORRECTED, EMPTY, UNCHANGED, Change, SegmentCorrection, settled_without_model
from daemon.engine import Branch, Engine, ScoreStream
from daemon.errors import EngineError
from daemon.prompts import FENCE_CLOSE, FENCE_OPEN, Prompts
from daemon.transcript import Segment

MARK = "@@DIALOGUE@@"


@dataclass(frozen=True)
class Candidate:
    """A line with one or more edits made, as tokens. From `diff` on, `changed` of its tokens stand where the
    line has `written` others; both are then followed by the same text, of which `follow` tokens are scored."""

    edits: tuple[Edit, ...]
    tokens: list[int]
    diff: int
    changed: int
    written: int
    follow: int


@dataclass(frozen=True)
class Judgement:
    """One candidate as the model judged it (for studies): the gain of its first token, and of its whole span
    (None when pruned)."""

    position: int
    edit: Edit
    first_gain: float
    gain: float | None


@dataclass
class Line:
    """One turn of the dialogue as the scorer reads it; `position` is its index among the segments."""

    position: int
    segment: Segment
    edits: list[Edit]
    tokens: list[int] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    known: SegmentCorrection | None = None
    key: list[str] | None = None
    branch_ll: list[float | None] | None = None
    rows: range = range(0)

    @property
    def piece(self) -> str:
        return self.segment.line() + "\n"


def reading_frame(engine: Engine, prompts: Prompts) -> str:
    """The prompt text before the dialogue in every metadata prompt (transcript first)."""
    rendered = engine.render(prompts.metadata_system, FENCE_OPEN + MARK)
    return rendered[: rendered.index(MARK)]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


def _common_suffix(a: list[int], b: list[int], floor: int) -> int:
    n = 0
    while n < len(a) - floor and n < len(b) - floor and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def confusion_sets(config: CorrectionConfig, language: str) -> ConfusionSets:
    """The sets for `language`, with the configured extra files and margins."""
    return load_sets(language, tuple(config.confusion_files), tuple(sorted(config.margins.items())))


class ScoreCorrector(CorrectorBase):
    sets: ConfusionSets

    def correct(self, segments: list[Segment], language: str) -> list[SegmentCorrection]:
        self.sets = confusion_sets(self.config, language)
        results: dict[int, SegmentCorrection] = {}
        lines: list[Line] = []
        for i, segment in enumerate(segments):
            settled = settled_without_model(segment, self.config)
            if settled is not None:
                results[i] = settled
            if settled is None or settled.status != EMPTY:
                edits = [] if settled else candidates(segment.text, self.sets)
                self.stats.candidates += len(edits)
                lines.append(Line(i, segment, edits))
        if any(line.edits for line in lines):
            Reading(self, lines, language).run()
        for line in lines:
            if line.position not in results:
                results[line.position] = line.known or SegmentCorrection(line.segment.text, UNCHANGED)
        return [results[i] for i in range(len(segments))]


class Reading:
    """One pass of the model over the dialogue, and the branches of every line that has candidates.

    Pieces are the dialogue's lines (each with its newline) and the closing fence: piece k is line k.
    The main sequence holds the frame and pieces [window, in_main). Where each piece starts is known
    before it is read, so are the rows every judgement needs. A step extends the main sequence by the
    next pieces (about `chunk_tokens`) and scores, in the same batch, the branches of the lines read
    before. A dialogue longer than the context is read in windows, each with a few lines before it.
    """

    def __init__(self, corrector: ScoreCorrector, lines: list[Line], language: str):
        self.c = corrector
        self.config = corrector.config
        self.engine = corrector.engine
        self.lines = lines
        self.language = language
        self.frame = reading_frame(self.engine, corrector.prompts)
        self.room = self.engine.n_ctx - self.engine.n_ctx // 4
        longest = self.engine.n_ctx // 8
        for line in lines:
            line.tokens = self.engine.tokenize(line.piece)
            if len(line.tokens) > longest:
                # a turn too long to fit beside its branches is read in part and not judged
                line.tokens, line.edits = line.tokens[:longest], []
        self.closing = self.engine.tokenize(FENCE_CLOSE)
        self.total = sum(1 for line in lines if line.edits)
        self.done = 0
        self.stream: ScoreStream | None = None
        self.frame_length = 0
        self.window = 0
        self.in_main = 0
        self.starts: dict[int, int] = {}
        self.wanted: dict[int, set[int]] = {}
        self.rows: dict[int, dict[int, float]] = {}

    def tokens(self, k: int) -> list[int]:
        return self.lines[k].tokens if k < len(self.lines) else self.closing

    def live(self, k: int) -> bool:
        """Line k still needs the model: it has candidates and no decision yet."""
        return bool(self.lines[k].edits) and self.lines[k].known is None

    # ----- the run ---------------------------------------------------------------------------------
    def run(self) -> None:
        self.stream = self.engine.stream(self.frame)
        self.frame_length = self.stream.length
        try:
            self.open_window(0)
            while any(self.live(k) for k in range(self.window, len(self.lines))):
                self.advance()
                for k in range(self.window, min(self.in_main, len(self.lines))):
                    if self.live(k) and self.judged(k):
                        self.decide(k, self.judge(k))
                        self.store(self.lines[k])
        finally:
            self.stream.close()

    def open_window(self, window: int) -> None:
        """Read from line `window` on, right after the frame: where each piece will start, the cache's
        decisions for the lines of the window, and the rows the other lines' judgements need."""
        self.window = self.in_main = window
        self.starts, self.rows, self.wanted = {}, {}, {}
        position = self.frame_length
        for k in range(window, len(self.lines) + 1):
            self.starts[k] = position
            position += len(self.tokens(k))
        for k in range(window, len(self.lines)):
            line = self.lines[k]
            if not self.live(k):
                continue
            line.branch_ll = None
            line.key = self.key(k)
            cached = self.cached(line.key)
            if cached is not None:
                self.decide(k, cached)
                continue
            if not line.candidates:
                line.candidates = [self.candidate(k, (edit,)) for edit in line.edits]
            start, following = self.starts[k], line.tokens + self.tokens(k + 1)
            first = min(c.diff for c in line.candidates)
            line.rows = range(start + first - 1, start + max(c.diff + c.written + c.follow for c in line.candidates) - 1)
            for position in line.rows:
                self.wanted.setdefault(position, set()).add(following[position - start + 1])
            for candidate in line.candidates:
                self.wanted[start + candidate.diff - 1].add(candidate.tokens[candidate.diff])

    def candidate(self, k: int, edits: tuple[Edit, ...]) -> Candidate:
        line = self.lines[k]
        text = line.segment.text
        for edit in sorted(edits, key=lambda e: -e.start):
            text = edit.apply(text)
        tokens = self.engine.tokenize(line.segment.line(text) + "\n")
        diff = _common_prefix(tokens, line.tokens)
        same = _common_suffix(tokens, line.tokens, diff)
        follow = min(self.config.score_tokens, same + len(self.tokens(k + 1)))
        return Candidate(edits, tokens, diff, len(tokens) - same - diff, len(line.tokens) - same - diff, follow)

    def advance(self) -> None:
        """One step: the next pieces into the main sequence, and the branches of lines already read."""
        assert self.stream is not None
        extend = self.extension()
        branches, owners = self.branches()
        if not extend and not branches:
            if any(self.live(k) and self.judged(k) for k in range(self.window, min(self.in_main, len(self.lines)))):
                return  # every candidate of these lines was pruned: they are judged without another step
            self.slide()
            extend = self.extension()
        end = self.stream.length + len(extend)
        queries = {p: tokens for p, tokens in self.wanted.items() if p < end and p not in self.rows}
        if self.config.score_batch:
            steps = [(self.stream.step(extend, queries, branches), owners)]
        else:
            steps = [(self.stream.step(extend, queries, []), [])]
            steps += [(self.stream.step([], {}, [branch]), [owner]) for branch, owner in zip(branches, owners)]
        self.c.stats.model_calls += len(steps)
        for scores, owned in steps:
            self.rows.update(scores.rows)
            for (k, i), ll in zip(owned, scores.branches):
                branch_ll = self.lines[k].branch_ll
                assert branch_ll is not None
                branch_ll[i] = ll

    def extension(self) -> list[int]:
        """The next pieces, about `chunk_tokens`, up to the last line still to judge and the piece after it, as
        far as the context has room."""
        limit = max(k for k in range(len(self.lines)) if self.live(k)) + 2
        extend: list[int] = []
        k = self.in_main
        while k < limit and (not extend or len(extend) < self.config.chunk_tokens):
            if self.starts[k] + len(self.tokens(k)) > self.room:
                break
            extend += self.tokens(k)
            k += 1
        self.in_main = k
        return extend

    def slide(self) -> None:
        """The context is full and every line it holds is judged but those whose text runs past it: read again
        after the frame, from the first line still to judge, with the lines before it that fit in a quarter
        of the context."""
        assert self.stream is not None
        first = next(k for k in range(self.window, len(self.lines)) if self.live(k))
        start, kept = first, 0
        while start > self.window and kept + len(self.lines[start - 1].tokens) <= self.engine.n_ctx // 4:
            start -= 1
            kept += len(self.lines[start].tokens)
        if start == self.window:
            raise EngineError(f"n_ctx {self.engine.n_ctx} leaves no room to score line {first} of the dialogue")
        self.stream.truncate(self.frame_length)
        self.open_window(start)

    def branches(self) -> tuple[list[Branch], list[tuple[int, int]]]:
        """Branches for the lines read whose candidates are not scored yet; a candidate whose first token
        already loses more than `prune_nats` gets none."""
        branches: list[Branch] = []
        owners: list[tuple[int, int]] = []
        prune = self.config.prune_nats
        for k in range(self.window, min(self.in_main, len(self.lines))):
            line = self.lines[k]
            if not self.live(k) or line.branch_ll is not None or not self.first_rows_read(k):
                continue
            line.branch_ll = []
            for i, candidate in enumerate(line.candidates):
                if prune is not None and self.first_gain(k, candidate) < -prune:
                    self.c.stats.pruned += 1
                    line.branch_ll.append(None)
                    continue
                line.branch_ll.append(0.0)
                branches.append(self.branch(k, candidate, 0))
                owners.append((k, i))
        self.c.stats.branches += len(branches)
        return branches, owners

    def branch(self, k: int, candidate: Candidate, back: int) -> Branch:
        """The candidate's changed tokens and the text after them, from `back` tokens before the first change."""
        at = candidate.diff - back
        tokens = (candidate.tokens + self.tokens(k + 1))[at: candidate.diff + candidate.changed + candidate.follow]
        return Branch(self.starts[k] + at, tuple(tokens))

    def first_rows_read(self, k: int) -> bool:
        """The row before every candidate's first changed token is known (a line that starts a step is not:
        the row before it is, those inside it are not yet)."""
        return all(self.starts[k] + candidate.diff - 1 in self.rows for candidate in self.lines[k].candidates)

    def first_gain(self, k: int, candidate: Candidate) -> float:
        row = self.rows[self.starts[k] + candidate.diff - 1]
        return row[candidate.tokens[candidate.diff]] - row[self.lines[k].tokens[candidate.diff]]

    def written(self, k: int, candidate: Candidate, first: int) -> float:
        """Log-likelihood of the line as written over the candidate's span, from its token `first` on."""
        start = self.starts[k]
        following = self.lines[k].tokens + self.tokens(k + 1)
        end = candidate.diff + candidate.written + candidate.follow
        return sum(self.rows[start + j - 1][following[j]] for j in range(first, end))

    def judged(self, k: int) -> bool:
        line = self.lines[k]
        return line.branch_ll is not None and line.rows.stop - 1 in self.rows

    # ----- decisions -------------------------------------------------------------------------------
    def judge(self, k: int) -> SegmentCorrection:
        """Per word, the best candidate that beats its margin, its changed word itself more likely than the written
        one (`first_token_margin`). With several such words, each is added only if the line with it beats the
        line without it by its margin (scored jointly, as one more branch)."""
        line = self.lines[k]
        assert line.branch_ll is not None
        best: dict[int, tuple[float, Candidate]] = {}
        lead = self.config.first_token_margin
        for candidate, ll in zip(line.candidates, line.branch_ll):
            first = self.first_gain(k, candidate)
            gain = None if ll is None else first + ll - self.written(k, candidate, candidate.diff + 1)
            if self.c.trace is not None:
                self.c.trace.append(Judgement(line.position, candidate.edits[0], first, gain))
            edit = candidate.edits[0]
            if gain is None or gain <= self.c.sets.margin(edit) or (lead is not None and first <= lead):
                continue
            if gain > best.get(edit.word, (float("-inf"), candidate))[0]:
                best[edit.word] = (gain, candidate)
        if not best:
            return SegmentCorrection(line.segment.text, UNCHANGED)
        ranked = sorted(best.values(), key=lambda pair: -pair[0])
        gain, current = ranked[0]
        changes = [_change(current.edits[0], gain)]
        for _, other in ranked[1:]:
            joint = self.candidate(k, current.edits + other.edits)
            joint_gain = self.score_alone(k, joint)
            if joint_gain is not None and joint_gain - gain > self.c.sets.margin(other.edits[0]):
                changes.append(_change(other.edits[0], joint_gain - gain))
                gain, current = joint_gain, joint
        text = line.segment.text
        for edit in sorted(current.edits, key=lambda e: -e.start):
            text = edit.apply(text)
        return SegmentCorrection(text, CORRECTED, changes=tuple(sorted(changes, key=lambda c: c.word)))

    def score_alone(self, k: int, candidate: Candidate) -> float | None:
        """The gain of a candidate of line k, in a step of its own. Its first changed token is nearly always a
        single edit's, whose row was read; if not, the branch starts one token early to score it."""
        assert self.stream is not None
        read = candidate.tokens[candidate.diff] in self.rows[self.starts[k] + candidate.diff - 1]
        if not read and candidate.diff == 0:
            return None
        if self.starts[k] + candidate.diff + candidate.written + candidate.follow - 2 not in self.rows:
            return None
        scores = self.stream.step([], {}, [self.branch(k, candidate, 0 if read else 1)])
        self.c.stats.model_calls += 1
        self.c.stats.branches += 1
        if read:
            return self.first_gain(k, candidate) + scores.branches[0] - self.written(k, candidate, candidate.diff + 1)
        return scores.branches[0] - self.written(k, candidate, candidate.diff)

    def decide(self, k: int, outcome: SegmentCorrection) -> None:
        self.lines[k].known = outcome
        self.done += 1
        if self.c.progress:
            self.c.progress(f"{self.done}/{self.total} segments judged")

    # ----- cache -----------------------------------------------------------------------------------
    def key(self, k: int) -> list[str]:
        """Everything line k's judgement depends on: the text read before it, the line, and what follows it."""
        before = self.frame + "".join(line.piece for line in self.lines[self.window:k])
        after = self.lines[k + 1].piece if k + 1 < len(self.lines) else FENCE_CLOSE
        return [self.c.cache_scope, self.language, "score", hashlib.sha256(before.encode()).hexdigest(),
                self.lines[k].segment.text, after]

    def cached(self, key: list[str]) -> SegmentCorrection | None:
        if self.c.cache is None:
            return None
        value = self.c.cache.get("segment", key)
        if value is None:
            return None
        changes = tuple(Change(c["word"], c["from"], c["to"], c["rule"], c["gain"]) for c in value["changes"])
        return SegmentCorrection(value["text"], value["status"], changes=changes)

    def store(self, line: Line) -> None:
        if self.c.cache is not None and line.key is not None and line.known is not None:
            self.c.cache.put("segment", line.key, {"text": line.known.text, "status": line.known.status,
                                                   "changes": [c.as_dict() for c in line.known.changes]})


def _change(edit: Edit, gain: float) -> Change:
    return Change(edit.word, edit.source, edit.target, edit.kind, gain)
