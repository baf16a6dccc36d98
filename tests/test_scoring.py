"""The scoring corrector: decisions from scripted scores, and the real batched scorer with the test model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Mapping, Sequence

import pytest

from daemon.cache import Cache
from daemon.config import CorrectionConfig, EnrichmentConfig
from daemon.correction import Corrector
from daemon.correction.judge import Judgement
from daemon.correction.score import Reading, ScoreCorrector
from daemon.engine import Branch, Completion, EngineStats, StepScores
from daemon.prompts import prompt_set
from daemon.transcript import Segment
from tests.fakes import FakeEngine, word_tokens

FR = prompt_set(EnrichmentConfig(), "fr")
EN = prompt_set(EnrichmentConfig(), "en")
NO_EDIT = dict.fromkeys(("default", "homophone", "elision", "verb_person", "plural", "verb_e", "verb_ai"), 1e9)


def segments(*texts: str, speakers: bool = True) -> list[Segment]:
    return [Segment(index=i, text=t, speaker=("appelant" if i % 2 else "régulateur") if speakers else None,
                    start=float(i), end=i + 0.5) for i, t in enumerate(texts)]


@dataclass
class FavouringStream:
    """Every token has log-probability -5 except the favoured ones (0): a candidate whose changed token is
    favoured gains 5 nats on its first token."""

    length: int
    favoured: set[int]
    stats: EngineStats
    steps: list[tuple[int, int]] = field(default_factory=list)
    peak: int = 0
    truncations: int = 0

    def logprob(self, token: int) -> float:
        return 0.0 if token in self.favoured else -5.0

    def step(self, extend: Sequence[int], queries: Mapping[int, Collection[int]], branches: Sequence[Branch]) -> StepScores:
        self.length += len(extend)
        self.peak = max(self.peak, self.length)
        self.steps.append((len(extend), len(branches)))
        self.stats.add(Completion("", len(extend), len(extend), 0, 0.0, "stop"))
        rows = {p: {t: self.logprob(t) for t in tokens} for p, tokens in queries.items()}
        return StepScores(rows, [sum(self.logprob(t) for t in b.tokens[1:]) for b in branches])

    def truncate(self, length: int) -> None:
        self.length = length
        self.truncations += 1

    def close(self) -> None:
        pass


@dataclass
class FavouringEngine(FakeEngine):
    """The fake engine with a stream that favours the tokens of the given words."""

    favoured_words: tuple[str, ...] = ()
    streams: list[FavouringStream] = field(default_factory=list)

    def stream(self, prefix: str) -> FavouringStream:
        favoured = {t for w in self.favoured_words for t in word_tokens(" " + w) + word_tokens(w)}
        stream = FavouringStream(len(word_tokens(prefix)), favoured, self.stats)
        self.streams.append(stream)
        return stream


def corrector(engine, language: str = "fr", **config) -> Corrector:
    return Corrector(engine, CorrectionConfig(**config), FR if language == "fr" else EN)


def test_a_winning_candidate_is_applied_at_its_word_with_case_and_punctuation_kept():
    engine = FavouringEngine(favoured_words=("est", "Est"))
    texts = ["bonjour, il et là ?", "Et voilà.", "d'accord"]
    outcomes = corrector(engine).correct(segments(*texts), "fr")
    assert [o.text for o in outcomes] == ["bonjour, il est là ?", "Est voilà.", "d'accord"]
    assert [o.status for o in outcomes] == ["corrected", "corrected", "unchanged"]
    change = outcomes[0].changes[0]
    assert (change.word, change.source, change.target, change.rule) == (2, "et", "est", "homophone")
    assert change.gain == pytest.approx(5.0)


def test_an_edit_must_beat_its_margin():
    engine = FavouringEngine(favoured_words=("est",))
    outcomes = corrector(engine, margins={"et->est": 6.0}).correct(segments("il et là"), "fr")
    assert outcomes[0].status == "unchanged" and outcomes[0].text == "il et là"


def test_two_words_of_one_line_are_both_corrected_when_each_pays():
    engine = FavouringEngine(favoured_words=("est", "à"))
    outcomes = corrector(engine).correct(segments("il et a la maison"), "fr")
    assert outcomes[0].text == "il est à la maison"
    assert [(c.source, c.target) for c in outcomes[0].changes] == [("et", "est"), ("a", "à")]


def test_pruned_candidates_cost_no_branch():
    """Every written word is favoured: each candidate loses 5 nats on its first token and gets no branch."""
    engine = FavouringEngine(favoured_words=("il", "et", "là"))
    scorer = corrector(engine, prune_nats=4.0)
    outcomes = scorer.correct(segments("il et là"), "fr")
    assert outcomes[0].status == "unchanged"
    assert scorer.stats.branches == 0 and scorer.stats.pruned == scorer.stats.candidates > 0


def test_a_candidate_whose_first_token_gains_nothing_costs_no_branch_and_no_decision_changes():
    """No token is favoured: each candidate's first token gains 0 nats, which the first-token rule refuses, so
    the scorer spends no branch on it even unpruned; without the rule, every candidate is scored, and still none
    beats the margin."""
    texts = ["il et là", "on a dit ça"]
    ruled = corrector(FavouringEngine(), prune_nats=None)
    unruled = corrector(FavouringEngine(), prune_nats=None, first_token_margin=None)
    outcomes = [scorer.correct(segments(*texts), "fr") for scorer in (ruled, unruled)]
    assert outcomes[0] == outcomes[1] and all(o.status == "unchanged" for o in outcomes[0])
    assert ruled.stats.branches == 0 and ruled.stats.pruned == ruled.stats.candidates > 0
    assert unruled.stats.branches == unruled.stats.candidates


def test_a_corrected_line_is_read_again_corrected_before_the_reading_goes_on():
    """The reading goes back to a corrected line once nothing before it awaits a judgement; the lines after it are
    judged after the correction, and the stream ends holding the dialogue as corrected up to the last corrected
    line, which is where the metadata prompt reads on from."""
    engine = FavouringEngine(favoured_words=("est",))
    texts = ["il et là", "bonjour", "elle et ici", "oui", "on et prêt", "merci"]
    scorer = corrector(engine, chunk_tokens=4)
    outcomes = scorer.correct(segments(*texts), "fr")
    assert [o.text for o in outcomes] == ["il est là", "bonjour", "elle est ici", "oui", "on est prêt", "merci"]
    stream = engine.streams[0]
    assert scorer.stats.settled >= 1 and stream.truncations == scorer.stats.settled
    read = [s.line(o.text) + "\n" for s, o in zip(segments(*texts), outcomes)]
    frame = len(word_tokens(engine.render(FR.metadata_system, "<transcription>\n@@DIALOGUE@@").split("@@DIALOGUE@@")[0]))
    assert stream.length == frame + sum(len(engine.tokenize(piece)) for piece in read[:4])


def test_segments_without_candidates_cost_no_model_call():
    engine = FavouringEngine()
    outcomes = corrector(engine).correct(segments("bonjour madame", "", "oui bonjour"), "fr")
    assert [o.status for o in outcomes] == ["unchanged", "empty", "unchanged"]
    assert engine.stats.calls == 0 and not engine.streams


def test_empty_and_confident_segments_keep_their_status_and_place():
    engine = FavouringEngine(favoured_words=("est",))
    segs = segments("", "il et là", "il et ici")
    segs[2].confidence = 0.99
    outcomes = corrector(engine, skip_confidence=0.9).correct(segs, "fr")
    assert [o.status for o in outcomes] == ["empty", "corrected", "skipped"]
    assert outcomes[2].text == "il et ici"


def test_a_dialogue_longer_than_the_context_is_read_in_windows():
    engine = FavouringEngine(n_ctx=480, favoured_words=("est",))
    texts = [f"numéro {i} il et là" for i in range(90)]
    outcomes = corrector(engine).correct(segments(*texts), "fr")
    assert [o.text for o in outcomes] == [f"numéro {i} il est là" for i in range(90)]
    stream = engine.streams[0]
    assert stream.truncations >= 2 and stream.peak <= 480 - 480 // 4


def test_the_cache_key_covers_the_context_read_before_the_line():
    engine = FakeEngine()
    scorer = ScoreCorrector(engine, CorrectionConfig(), FR)

    def key(texts: list[str], k: int) -> list[str]:
        from daemon.correction.score import Line

        lines = [Line(i, s, []) for i, s in enumerate(segments(*texts))]
        return Reading(scorer, lines, "fr").judgements.key(lines, 0, k)

    base = key(["bonjour", "il et là", "merci"], 1)
    assert key(["bonjour", "il et là", "merci"], 1) == base
    assert key(["bonsoir", "il et là", "merci"], 1) != base
    assert key(["bonjour", "il et là", "merci beaucoup"], 1) != base


def test_cached_judgements_are_used_in_the_same_context_only(tmp_path):
    cache = Cache(tmp_path / "cache.sqlite")
    engine = FavouringEngine(favoured_words=("est",))
    first = Corrector(engine, CorrectionConfig(), FR, cache, "scope").correct(segments("bonjour", "il et là"), "fr")
    calls = engine.stats.calls
    again = Corrector(engine, CorrectionConfig(), FR, cache, "scope").correct(segments("bonjour", "il et là"), "fr")
    assert [o.text for o in again] == [o.text for o in first] == ["bonjour", "il est là"]
    assert again[1].changes == first[1].changes and engine.stats.calls == calls
    Corrector(engine, CorrectionConfig(), FR, cache, "scope").correct(segments("bonsoir", "il et là"), "fr")
    assert engine.stats.calls > calls
    cache.close()


# ----- with the real test model ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_engine():
    from daemon.engine.llama import LlamaEngine
    from daemon.engine.runtime import LlamaSettings
    from tests.conftest import small_model_path

    return LlamaEngine(small_model_path(), LlamaSettings(n_ctx=2048, n_threads=2))


CALL = ["allo bonjour le samu", "bonjour mon fils et tombé dans l'escalier", "il a mal a la tête",
        "il et conscient", "oui il me parle", "on envoie une équipe, restez a côté de lui", "d'accord merci"]
SHORT_CALL = ["allo il et malade", "oui il a mal a la tête", "on arrive"]
NO_SPEAKERS = ["a demain alors", "et ton frère ?", "il a dit ça"]


def _common_suffix(a: list[int], b: list[int], floor: int) -> int:
    n = 0
    while n < min(len(a), len(b)) - floor and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def _alone(engine, frame: str, pieces: list[str], k: int, first: int, end: int) -> float:
    """Log-likelihood of tokens first..end of piece k (running into piece k + 1), read with no branch at all."""
    stream = engine.stream(frame)
    tokens = [engine.tokenize(p) for p in pieces]
    start = stream.length + sum(len(t) for t in tokens[:k])
    following = tokens[k] + tokens[k + 1]
    queries = {start + j - 1: {following[j]} for j in range(first, end)}
    rows = stream.step([t for piece in tokens for t in piece], queries, []).rows
    stream.close()
    return sum(rows[start + j - 1][following[j]] for j in range(first, end))


@pytest.fixture(scope="module")
def exact_engine():
    """llama.cpp's numbers depend on how work is batched: its batched kernels round differently from its
    one-token ones, and attention tiles the KV window (256 cells), so a token's log-probability moves by a few
    tenths of a nat with the other tokens in its batch or the cells in use. With one-token micro-batches and a
    single 256-cell window every path computes the same numbers, so the scorer's own bookkeeping (positions,
    sequences, rows, spans) can be checked exactly. BENCHMARKS.md measures the jitter in normal running."""
    from daemon.engine.llama import LlamaEngine
    from daemon.engine.runtime import LlamaSettings
    from tests.conftest import small_model_path

    return LlamaEngine(small_model_path(), LlamaSettings(n_ctx=256, n_threads=2, n_ubatch=1))


@pytest.mark.parametrize("texts, speakers", [(SHORT_CALL, True), (NO_SPEAKERS, False)], ids=["speakers", "first-word"])
def test_batched_gains_equal_each_candidate_scored_alone(exact_engine, texts, speakers):
    from daemon.correction.score import reading_frame
    from daemon.prompts import FENCE_CLOSE

    engine = exact_engine
    trace: list[Judgement] = []
    segs = segments(*texts, speakers=speakers)
    config = CorrectionConfig(prune_nats=None, first_token_margin=None, margins=NO_EDIT, chunk_tokens=16)
    scorer = Corrector(engine, config, FR, trace=trace)
    scorer.correct(segs, "fr")
    assert len(trace) == scorer.stats.candidates == scorer.stats.branches > 4
    assert all(j.gain is not None for j in trace)
    frame = reading_frame(engine, FR)
    pieces = [s.line() + "\n" for s in segs] + [FENCE_CLOSE]
    for judgement in trace:
        k = judgement.position
        edited = list(pieces)
        edited[k] = segs[k].line(judgement.edit.apply(segs[k].text)) + "\n"
        original, candidate = (engine.tokenize(p) for p in (pieces[k], edited[k]))
        diff = next(i for i, (a, b) in enumerate(zip(original, candidate)) if a != b)
        same = _common_suffix(original, candidate, diff)
        follow = min(config.score_tokens, same + len(engine.tokenize(pieces[k + 1])))
        alone = (_alone(engine, frame, edited, k, diff, len(candidate) - same + follow)
                 - _alone(engine, frame, pieces, k, diff, len(original) - same + follow))
        assert judgement.gain == pytest.approx(alone, abs=1e-3), judgement
    assert speakers or any(j.position == 0 and j.edit.word == 0 for j in trace)


def test_a_step_may_begin_at_any_token_and_the_gains_stay_the_same(exact_engine):
    """Steps of every size from 1 token: a line whose first word has candidates may begin a step, and is
    judged only once the rows inside it are read (it once raised KeyError on a row not read yet)."""
    gains = {}
    for chunk in range(1, 13):
        trace: list[Judgement] = []
        Corrector(exact_engine, CorrectionConfig(prune_nats=4.0, margins=NO_EDIT, chunk_tokens=chunk), FR,
                  trace=trace).correct(segments(*NO_SPEAKERS, speakers=False), "fr")
        gains[chunk] = [(j.position, j.edit, j.gain) for j in trace]
    first = gains[1]
    assert any(position == 0 and edit.word == 0 for position, edit, _ in first)
    for chunk, judged in gains.items():
        assert [(p, e) for p, e, _ in judged] == [(p, e) for p, e, _ in first], chunk
        assert [g for _, _, g in judged] == pytest.approx([g for _, _, g in first], abs=1e-3), chunk


def test_the_kv_cache_is_consistent_for_the_next_chat(small_engine):
    ask = dict(max_tokens=12, temperature=0.0)
    before = small_engine.chat(FR.metadata_system, "<transcription>\nbonjour\n</transcription>\n\nUn titre ?", **ask)
    corrector(small_engine).correct(segments(*CALL), "fr")
    after = small_engine.chat(FR.metadata_system, "<transcription>\nbonjour\n</transcription>\n\nUn titre ?", **ask)
    assert after.text == before.text


def test_metadata_reads_on_from_where_scoring_stopped(small_engine):
    """The scorer reads the dialogue as the metadata prompt does: the first task evaluates only its own tail."""
    from daemon.prompts import fenced

    segs = segments(*CALL)
    outcomes = Corrector(small_engine, CorrectionConfig(margins=NO_EDIT), FR).correct(segs, "fr")
    assert all(o.status == "unchanged" for o in outcomes)
    dialogue = "\n".join(s.line() for s in segs)
    completion = small_engine.chat(FR.metadata_system, fenced(dialogue) + "\n\nDonne un titre.", max_tokens=4, temperature=0.0)
    assert completion.evaluated_tokens < 40 and completion.prompt_tokens > 120


def test_after_corrections_metadata_reads_on_from_the_last_one(small_engine):
    """Every candidate kept: the reading settles each corrected line before it reads on, so the metadata prompt over
    the corrected dialogue reads only from the last corrected line on, not every line after the first."""
    from daemon.prompts import fenced

    segs = segments(*CALL)
    margins = dict.fromkeys(NO_EDIT, -1e9)
    scorer = Corrector(small_engine, CorrectionConfig(margins=margins, first_token_margin=None, prune_nats=None, chunk_tokens=16), FR)
    outcomes = scorer.correct(segs, "fr")
    corrected = [i for i, o in enumerate(outcomes) if o.status == "corrected"]
    assert len(corrected) >= 2 and scorer.stats.settled >= 1
    lines = [s.line(o.text) for s, o in zip(segs, outcomes)]
    task = "\n\nDonne un titre."
    completion = small_engine.chat(FR.metadata_system, fenced("\n".join(lines)) + task, max_tokens=4, temperature=0.0)
    after_first = small_engine.count_tokens("\n".join(lines[corrected[0]:]) + "\n</transcription>" + task)
    after_last = small_engine.count_tokens("\n".join(lines[corrected[-1]:]) + "\n</transcription>" + task)
    assert completion.evaluated_tokens <= after_last + 8 < after_first  # + the template's turn end and answer start


# ----- with the default model (make test runs these; make test-fast skips them) ----------------------

ENGLISH_CALL = [
    "Hello, thank you for calling, how can I help you today?",
    "Hi, I'm calling because my internet has been down since this morning.",
    "I'm sorry to hear that. Can you tell me your account number?",
    "Yes, it's four five two one eight.",
    "Thank you. I can see there is an outage in your area.",
    "Do you know when it will be fixed?",
    "Our technicians are working on it, it should be back within two hours.",
    "Okay, that's fine. Will I get a refund for the day?",
    "Yes, you will see a credit on your next bill.",
    "Great, thank you for your help.",
    "You're welcome, have a nice day.",
]


@pytest.fixture(scope="module")
def default_engine():
    from daemon.engine.llama import LlamaEngine
    from daemon.engine.runtime import LlamaSettings
    from tests.conftest import DEFAULT_MODEL

    if not DEFAULT_MODEL.is_file():
        pytest.fail(f"{DEFAULT_MODEL} is missing: `make test` installs it with `enrichd model install`")
    return LlamaEngine(DEFAULT_MODEL, LlamaSettings(n_ctx=4096, n_threads=2))


@pytest.mark.quality
def test_default_model_restores_injected_errors_in_a_short_french_call(default_engine):
    import random

    from daemon.correction.candidates import load_sets
    from daemon.formats import parse
    from daemon.tools.recall import inject_errors, vocabulary, word_at
    from tests.conftest import SIMSAMU

    original = parse(SIMSAMU / "dj_2022_msn.json").segments[:24]
    sets = load_sets("fr")
    segs, injections = inject_errors(original, sets, vocabulary([s.text for s in original], sets), 0.4, random.Random(3))
    assert len(injections) >= 5
    outcomes = corrector(default_engine).correct(segs, "fr")
    restored = [j for j in injections if word_at(outcomes[j.segment].text, j.word) == j.right]
    assert len(restored) >= 0.6 * len(injections), [(j, outcomes[j.segment].text) for j in injections]
    wrong = {j.segment for j in injections}
    changed_clean = [o.text for i, o in enumerate(outcomes) if i not in wrong and o.text != segs[i].text]
    assert len(changed_clean) <= 1, changed_clean


@pytest.mark.quality
def test_default_model_changes_nothing_in_a_clean_english_call(default_engine):
    scorer = Corrector(default_engine, CorrectionConfig(), EN)
    outcomes = scorer.correct(segments(*ENGLISH_CALL), "en")
    assert scorer.stats.candidates > 10
    assert [o.text for o in outcomes] == ENGLISH_CALL
