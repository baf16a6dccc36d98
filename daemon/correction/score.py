"""The scoring corrector: sound-alike spellings judged by the model, kept when the call reads better.

Each segment's candidate edits come from confusion sets (candidates.py). The model reads the dialogue
as written, exactly as the metadata prompts will read it ([system] <transcription>, one line
per turn), so the KV cache it leaves behind is the metadata's prefix. A
candidate branches off that reading at the first token where it differs and is scored over the
tokens it changes plus `score_tokens` tokens of the text after them (the rest of its line, then the
next line); its gain is the log-likelihood it adds over the line as written, on the same text. The
first token's probability comes free with the reading, so a candidate the model finds implausible there,
or no likelier than the written word (which the judgement requires), never costs a branch. A line is
judged in the context of the call as read so far; once a line is corrected and no line before it awaits its
judgement, the reading goes back to it and reads on with it corrected, so that the cache left behind holds
the dialogue the metadata prompts read (else they would read every line after the first correction again).
"""

from __future__ import annotations

import hashlib
from functools import partial
from dataclasses import dataclass, field

from daemon.cache import Cache
from daemon.config import CorrectionConfig
from daemon.correction.base import CorrectorBase
from daemon.correction.candidates import ConfusionSets, Edit, candidates, load_sets
from daemon.correction.judge import Scored, judge_line
from daemon.correction.outcomes import EMPTY, UNCHANGED, Change, SegmentCorrection, settled_without_model
from daemon.engine import Branch, Engine, ScoreStream
from daemon.errors import EngineError
from daemon.prompts import FENCE_CLOSE, FENCE_OPEN, Prompts
from daemon.transcript import Segment

MARK = "@@DIALOGUE@@"
Rows = dict[int, dict[int, float]]  # position in the reading -> the log-probabilities read there of the tokens asked


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
    read_as: str | None = None  # the corrected text the reading holds in place of the written one

    @property
    def piece(self) -> str:
        """The line as written (what judgements are cached under)."""
        return self.segment.line() + "\n"

    @property
    def read_piece(self) -> str:
        """The line as the reading holds it: corrected, once it is settled."""
        return self.piece if self.read_as is None else self.segment.line(self.read_as) + "\n"

    def unsettled(self) -> bool:
        """Decided with a correction that the reading does not hold yet."""
        return self.known is not None and self.known.text != self.segment.text and self.read_as is None

    def first_rows_read(self, rows: Rows, start: int) -> bool:
        """The row before every candidate's first changed token is known (a line that starts a step is not: the
        row before it is, those inside it are not yet)."""
        return all(start + candidate.diff - 1 in rows for candidate in self.candidates)

    def judged(self, rows: Rows) -> bool:
        """Every candidate's branch is scored and every row the judgement reads is known."""
        return self.branch_ll is not None and self.rows.stop - 1 in rows

    def first_gain(self, rows: Rows, start: int, candidate: Candidate) -> float:
        row = rows[start + candidate.diff - 1]
        return row[candidate.tokens[candidate.diff]] - row[self.tokens[candidate.diff]]

    def ask(self, start: int, following: list[int], wanted: dict[int, set[int]]) -> None:
        """The rows this line's judgement needs (the line from its first candidate's change to the end of the
        longest span), and at each the tokens whose log-probabilities are asked: the written text's, and each
        candidate's first changed token."""
        after = self.tokens + following
        first = min(c.diff for c in self.candidates)
        self.rows = range(start + first - 1, start + max(c.diff + c.written + c.follow for c in self.candidates) - 1)
        for position in self.rows:
            wanted.setdefault(position, set()).add(after[position - start + 1])
        for candidate in self.candidates:
            wanted[start + candidate.diff - 1].add(candidate.tokens[candidate.diff])

    def branch(self, start: int, following: list[int], candidate: Candidate, back: int) -> Branch:
        """The candidate's changed tokens and the text after them, from `back` tokens before the first change."""
        at = candidate.diff - back
        tokens = (candidate.tokens + following)[at: candidate.diff + candidate.changed + candidate.follow]
        return Branch(start + at, tuple(tokens))

    def written(self, rows: Rows, start: int, following: list[int], candidate: Candidate, first: int) -> float:
        """Log-likelihood of the line as written over the candidate's span, from its token `first` on
        (`following`: the next piece's tokens)."""
        after = self.tokens + following
        end = candidate.diff + candidate.written + candidate.follow
        return sum(rows[start + j - 1][after[j]] for j in range(first, end))


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


def edited(engine: Engine, line: Line, edits: tuple[Edit, ...], following: list[int], score_tokens: int) -> Candidate:
    """The line with `edits` made, as tokens, placed against the line as written (`following`: the next piece)."""
    text = line.segment.text
    for edit in sorted(edits, key=lambda e: -e.start):
        text = edit.apply(text)
    tokens = engine.tokenize(line.segment.line(text) + "\n")
    diff = _common_prefix(tokens, line.tokens)
    same = _common_suffix(tokens, line.tokens, diff)
    follow = min(score_tokens, same + len(following))
    return Candidate(edits, tokens, diff, len(tokens) - same - diff, len(line.tokens) - same - diff, follow)


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
        self.frame = reading_frame(self.engine, corrector.prompts)
        self.judgements = LineCache(corrector.cache, corrector.cache_scope, language, self.frame)
        self.room = self.engine.n_ctx - self.engine.n_ctx // 4
        longest = self.engine.n_ctx // 8
        for line in lines:
            line.tokens = self.engine.tokenize(line.piece)
            if len(line.tokens) > longest:
                # a turn too long to fit beside its branches is read in part and not judged
                line.tokens, line.edits = line.tokens[:longest], []
        self.pieces = [line.tokens for line in lines] + [self.engine.tokenize(FENCE_CLOSE)]  # piece k is line k
        self.total = sum(1 for line in lines if line.edits)
        self.done = 0
        self.stream: ScoreStream | None = None
        self.frame_length = 0
        self.window = 0
        self.in_main = 0
        self.starts: dict[int, int] = {}
        self.wanted: dict[int, set[int]] = {}
        self.rows: Rows = {}

    def read_up_to(self) -> int:
        """The lines of the window read so far are [window, read_up_to())."""
        return min(self.in_main, len(self.lines))

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
                for k in range(self.window, self.read_up_to()):
                    if self.live(k) and self.lines[k].judged(self.rows):
                        self.decide(k, self.judge(k))
                        self.judgements.put(self.lines[k])
                self.settle()
        finally:
            self.stream.close()

    def open_window(self, window: int) -> None:
        """Read from line `window` on, right after the frame: where each piece will start, the cache's
        decisions for the lines of the window, and the rows the other lines' judgements need."""
        self.window = self.in_main = window
        self.rows, self.wanted = {}, {}
        for k in range(window, len(self.lines)):
            line = self.lines[k]
            if self.live(k):
                line.key = self.judgements.key(self.lines, window, k)
                cached = self.judgements.get(line.key)
                if cached is not None:
                    self.decide(k, cached)
            if line.unsettled():
                self.read_corrected(k)
        self.place(window, self.frame_length)
        for k in range(window, len(self.lines)):
            if self.live(k):
                self.prepare(k)

    def prepare(self, k: int, following_changed: bool = True) -> None:
        """The rows line k's judgement needs at its place, and its candidates, made again where the piece after it
        changed (they are placed against it; their offsets do not depend on where the line starts)."""
        line = self.lines[k]
        line.branch_ll = None
        if following_changed or not line.candidates:
            line.candidates = [edited(self.engine, line, (edit,), self.pieces[k + 1], self.config.score_tokens)
                               for edit in line.edits]
        line.ask(self.starts[k], self.pieces[k + 1], self.wanted)

    def place(self, first: int, position: int) -> None:
        """Where pieces `first` on start in the main sequence, the first at `position`."""
        for k in range(first, len(self.lines) + 1):
            self.starts[k] = position
            position += len(self.pieces[k])

    def read_corrected(self, k: int) -> None:
        line = self.lines[k]
        assert line.known is not None
        line.read_as = line.known.text
        self.pieces[k] = self.engine.tokenize(line.read_piece)

    def settle(self) -> None:
        """Lines corrected after the reading passed them are read again corrected, from the first of them on, once
        no line before it awaits its judgement (its rows would run into the line changed): the main sequence is
        cut there and read on from there, and the lines after it that await a judgement are asked for again."""
        assert self.stream is not None
        stale = [k for k in range(self.window, self.read_up_to()) if self.lines[k].unsettled()]
        if not stale or any(self.live(k) for k in range(self.window, stale[0])):
            return
        first, start = stale[0], self.starts[stale[0]]
        for k in stale:
            self.read_corrected(k)
        self.stream.truncate(start)
        self.in_main = first
        self.place(first, start)
        self.rows = {p: row for p, row in self.rows.items() if p < start}
        self.wanted = {p: tokens for p, tokens in self.wanted.items() if p < start}
        for k in range(first + 1, len(self.lines)):
            if self.live(k):
                self.prepare(k, following_changed=k + 1 in stale)
        self.c.stats.settled += 1

    def advance(self) -> None:
        """One step: the next pieces into the main sequence, and the branches of lines already read."""
        assert self.stream is not None
        extend = self.extension()
        branches, owners = self.branches()
        if not extend and not branches:
            if any(self.live(k) and self.lines[k].judged(self.rows) for k in range(self.window, self.read_up_to())):
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
            if self.starts[k] + len(self.pieces[k]) > self.room:
                break
            extend += self.pieces[k]
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
        while start > self.window and kept + len(self.pieces[start - 1]) <= self.engine.n_ctx // 4:
            start -= 1
            kept += len(self.pieces[start])
        if start == self.window:
            raise EngineError(f"n_ctx {self.engine.n_ctx} leaves no room to score line {first} of the dialogue")
        self.stream.truncate(self.frame_length)
        self.open_window(start)

    def branches(self) -> tuple[list[Branch], list[tuple[int, int]]]:
        """Branches for the lines read whose candidates are not scored yet. A candidate whose first token already
        decides against it gets none: it loses more than `prune_nats`, or gains no more than `first_token_margin`,
        which the judgement asks of every edit it keeps (judge.py), so its branch could change no decision."""
        branches: list[Branch] = []
        owners: list[tuple[int, int]] = []
        for k in range(self.window, self.read_up_to()):
            line = self.lines[k]
            if not self.live(k) or line.branch_ll is not None or not line.first_rows_read(self.rows, self.starts[k]):
                continue
            line.branch_ll = []
            for i, candidate in enumerate(line.candidates):
                if self.decided_by_first_token(line.first_gain(self.rows, self.starts[k], candidate)):
                    self.c.stats.pruned += 1
                    line.branch_ll.append(None)
                    continue
                line.branch_ll.append(0.0)
                branches.append(line.branch(self.starts[k], self.pieces[k + 1], candidate, 0))
                owners.append((k, i))
        self.c.stats.branches += len(branches)
        return branches, owners

    def decided_by_first_token(self, first_gain: float) -> bool:
        prune, lead = self.config.prune_nats, self.config.first_token_margin
        return (prune is not None and first_gain < -prune) or (lead is not None and first_gain <= lead)

    # ----- decisions -------------------------------------------------------------------------------
    def judge(self, k: int) -> SegmentCorrection:
        """Line k's correction from its candidates' gains (judge.py); a pair of edits is scored jointly here."""
        line = self.lines[k]
        assert line.branch_ll is not None
        scored = []
        for candidate, ll in zip(line.candidates, line.branch_ll):
            first = line.first_gain(self.rows, self.starts[k], candidate)
            scored.append(Scored(candidate.edits, first, None if ll is None else self.gain(k, candidate, ll)))
        return judge_line(line.segment.text, line.position, scored, self.c.sets, self.config.first_token_margin,
                          partial(self.score_alone, k), self.c.trace)

    def score_alone(self, k: int, edits: tuple[Edit, ...]) -> float | None:
        """The gain of line k with `edits`, in a step of its own. Its first changed token is nearly always a single
        edit's, whose row was read; if not, the branch starts one token early to score it."""
        assert self.stream is not None
        candidate = edited(self.engine, self.lines[k], edits, self.pieces[k + 1], self.config.score_tokens)
        read = candidate.tokens[candidate.diff] in self.rows[self.starts[k] + candidate.diff - 1]
        if not read and candidate.diff == 0:
            return None
        if self.starts[k] + candidate.diff + candidate.written + candidate.follow - 2 not in self.rows:
            return None
        branch = self.lines[k].branch(self.starts[k], self.pieces[k + 1], candidate, 0 if read else 1)
        scores = self.stream.step([], {}, [branch])
        self.c.stats.model_calls += 1
        self.c.stats.branches += 1
        return self.gain(k, candidate, scores.branches[0], read)

    def gain(self, k: int, candidate: Candidate, ll: float, first_read: bool = True) -> float:
        """How much more likely line k is with the candidate than as written, given its branch's log-likelihood:
        from its second changed token on, the first one's row read with the line (or, not `first_read`, in it)."""
        line, start, following = self.lines[k], self.starts[k], self.pieces[k + 1]
        if first_read:
            first = line.first_gain(self.rows, start, candidate)
            return first + ll - line.written(self.rows, start, following, candidate, candidate.diff + 1)
        return ll - line.written(self.rows, start, following, candidate, candidate.diff)

    def decide(self, k: int, outcome: SegmentCorrection) -> None:
        self.lines[k].known = outcome
        self.done += 1
        if self.c.progress:
            self.c.progress(f"{self.done}/{self.total} segments judged")


class LineCache:
    """Judgements kept across calls, each under everything it depends on: the model and prompts (`scope`), the
    language, the text read before the line, the line, and what follows it."""

    def __init__(self, cache: Cache | None, scope: str, language: str, frame: str):
        self.cache, self.scope, self.language, self.frame = cache, scope, language, frame

    def key(self, lines: list[Line], window: int, k: int) -> list[str]:
        before = self.frame + "".join(line.piece for line in lines[window:k])
        after = lines[k + 1].piece if k + 1 < len(lines) else FENCE_CLOSE
        return [self.scope, self.language, "score", hashlib.sha256(before.encode()).hexdigest(), lines[k].segment.text,
                after]

    def get(self, key: list[str]) -> SegmentCorrection | None:
        value = self.cache.get("segment", key) if self.cache is not None else None
        if value is None:
            return None
        changes = tuple(Change(c["word"], c["from"], c["to"], c["rule"], c["gain"]) for c in value["changes"])
        return SegmentCorrection(value["text"], value["status"], changes=changes)

    def put(self, line: Line) -> None:
        if self.cache is not None and line.key is not None and line.known is not None:
            self.cache.put("segment", line.key, {"text": line.known.text, "status": line.known.status,
                                                 "changes": [c.as_dict() for c in line.known.changes]})
