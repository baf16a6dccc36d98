"""The rewrite corrector: answers mapped back by number, guardrails, the surprise gate, real batches with the test model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pytest

from daemon.config import CorrectionConfig
from daemon.correction import Corrector
from daemon.correction.rewrite import Rewriter, _batch_prompt, _line_spans, check_correction, parse_numbered_answer
from daemon.engine import Completion, EngineStats
from daemon.prompts import DEFAULTS, Prompts
from daemon.transcript import Segment

PROMPTS = Prompts(**DEFAULTS["fr"])


@dataclass
class ScriptedEngine:
    """Answers correction prompts with whatever `answer(lines)` returns, to craft broken answers."""

    answer: Callable[[list[str]], str]
    n_ctx: int = 4096
    stats: EngineStats = field(default_factory=EngineStats)
    prompts_seen: list[str] = field(default_factory=list)

    def count_tokens(self, text: str) -> int:
        return max(1, len(text.split()))

    def chat(self, system, user, *, max_tokens, temperature, stop=None, repeat_penalty=1.0, copies_prompt=False) -> Completion:
        self.prompts_seen.append(user)
        lines = [line.split("] ", 1)[1] for line in user.split("\n")]
        text = self.answer(lines)
        completion = Completion(text, 10, 10, 10, 0.0, "stop")
        self.stats.add(completion)
        return completion


def segments(*texts: str) -> list[Segment]:
    return [Segment(index=i, text=t, speaker="A" if i % 2 else "B", start=float(i), end=i + 0.5) for i, t in enumerate(texts)]


FIXES = {"il a mal o ventre": "il a mal au ventre", "sa va": "ça va", "je suis a la maison": "je suis à la maison",
         "c'est sont fils": "c'est son fils"}


def fixed(lines: list[str]) -> list[str]:
    return [FIXES.get(line, line) for line in lines]


def numbered(lines: list[str]) -> str:
    return "\n".join(f"[{i}] {t}" for i, t in enumerate(lines, start=1))


def rewrite(**config) -> CorrectionConfig:
    return CorrectionConfig(mode="rewrite", **config)


def run(answer: Callable[[list[str]], str], texts: list[str], **config) -> tuple[list, Corrector, ScriptedEngine]:
    engine = ScriptedEngine(answer)
    corrector = Corrector(engine, rewrite(**config), PROMPTS)
    return corrector.correct(segments(*texts), "fr"), corrector, engine


TEXTS = ["il a mal o ventre", "sa va", "je suis a la maison", "c'est sont fils"]


def test_clean_answer_maps_each_line_to_its_segment():
    result, corrector, engine = run(lambda lines: numbered(fixed(lines)), TEXTS)
    assert [r.text for r in result] == [FIXES[t] for t in TEXTS]
    assert [r.status for r in result] == ["corrected"] * 4
    assert corrector.stats.model_calls == 1


@pytest.mark.parametrize("breakage", [
    lambda lines: numbered(fixed(lines)[:-1]),                                  # last line dropped
    lambda lines: numbered([" ".join(fixed(lines)[:2])] + fixed(lines)[2:]),    # two lines merged
    lambda lines: numbered(fixed(lines) + ["une ligne en trop"]),               # extra line
    lambda lines: "\n".join(f"[{i + 2}] {t}" for i, t in enumerate(fixed(lines))),  # renumbered
    lambda lines: numbered(fixed(lines)).replace("[2]", "[1]"),                 # duplicated number
], ids=["dropped", "merged", "extra", "renumbered", "duplicate"])
def test_broken_answers_are_split_until_every_segment_maps_to_itself(breakage):
    def answer(lines: list[str]) -> str:
        return breakage(lines) if len(lines) > 1 else numbered(fixed(lines))

    result, corrector, engine = run(answer, TEXTS)
    assert [r.text for r in result] == [FIXES[t] for t in TEXTS]
    assert corrector.stats.batch_splits >= 1


def test_a_single_line_that_never_parses_keeps_its_original():
    result, _, _ = run(lambda lines: "" if len(lines) == 1 else "n'importe quoi", TEXTS[:2])
    assert [(r.text, r.status) for r in result] == [(TEXTS[0], "rejected"), (TEXTS[1], "rejected")]


def test_empty_segments_make_no_model_call_and_keep_their_place():
    result, corrector, engine = run(lambda lines: numbered(fixed(lines)), ["", "sa va", "   ", "il a mal o ventre"])
    assert [r.status for r in result] == ["empty", "corrected", "empty", "corrected"]
    assert [r.text for r in result] == ["", "ça va", "   ", "il a mal au ventre"]
    assert engine.prompts_seen == ["[1] sa va\n[2] il a mal o ventre"]


def test_only_empty_segments_means_no_model_call_at_all():
    _, _, engine = run(lambda lines: pytest.fail("no call expected"), ["", "  "])
    assert engine.stats.calls == 0


def test_confident_segments_are_skipped_when_configured():
    engine = ScriptedEngine(lambda lines: numbered(fixed(lines)))
    corrector = Corrector(engine, rewrite(skip_confidence=0.9), PROMPTS)
    segs = segments("sa va", "il a mal o ventre")
    segs[0].confidence = 0.95
    segs[1].confidence = 0.5
    result = corrector.correct(segs, "fr")
    assert [r.status for r in result] == ["skipped", "corrected"]
    assert engine.prompts_seen == ["[1] il a mal o ventre"]


def test_batches_respect_the_token_budget():
    texts = [f"phrase numéro {i} avec quelques mots" for i in range(10)]
    _, corrector, engine = run(lambda lines: numbered(lines), texts, batch_tokens=25)
    assert len(engine.prompts_seen) == 5
    assert all(p.count("\n") == 1 for p in engine.prompts_seen)


@pytest.mark.parametrize("original, candidate, status, reason", [
    ("il faut envoyer", "Il faut envoyer un médecin", "rejected", "length ratio"),
    ("il faut envoyer le médecin chez vous", "il faut envoyer le médecin chez vous maintenant", "rejected", "added words: maintenant"),
    ("je dans le bras", "Je suis dans le bras", "rejected", "added words: suis"),
    ("oui oui d'accord", "oui d'accord", "rejected", "removed words"),
    ("il a mal", "", "rejected", "empty answer"),
    ("d'accord", "le patient est d'accord avec le médecin", "rejected", "length ratio"),
    ("on arrive bientôt chez vous", "xq zzv wpp kkr yyyyyy ttt", "rejected", "similarity"),
    ("je sais pas je sais pas", "je sais pas je sais pas je sais pas", "rejected", "repeated phrase"),
    ("il a mal o ventre", "il a mal au ventre", "corrected", None),
    ("est ce qu'il respire", "est-ce qu'il respire ?", "corrected", None),
    ("bonjour madame", "bonjour madame", "unchanged", None),
])
def test_guardrails(original, candidate, status, reason):
    outcome = check_correction(original, candidate, CorrectionConfig())
    assert outcome.status == status
    assert outcome.text == (candidate if status == "corrected" else original)
    if reason:
        assert reason in outcome.reason


def test_parse_numbered_answer():
    assert parse_numbered_answer("[1] a\n[2] b\n") == {1: "a", 2: "b"}
    assert parse_numbered_answer("Voici :\n[1] a\n[2] b") == {1: "a", 2: "b"}
    assert parse_numbered_answer("[1] a\n[1] b") is None
    assert parse_numbered_answer("[1] a\nsuite de a") is None


@pytest.fixture(scope="module")
def small_engine():
    from daemon.engine.llama import LlamaEngine
    from daemon.engine.runtime import LlamaSettings
    from tests.conftest import small_model_path

    return LlamaEngine(small_model_path(), LlamaSettings(n_ctx=2048, n_threads=2))


def test_real_batches_keep_every_segment_in_place(small_engine):
    """The small test model often breaks the format: whatever it answers, nothing moves."""
    texts = ["allo bonjour", "", "oui je vous écoute", "mon fils a mal o ventre", "d'accord", "il a quel âge"]
    corrector = Corrector(small_engine, rewrite(batch_tokens=40), PROMPTS)
    result = corrector.correct(segments(*texts), "fr")
    assert len(result) == len(texts)
    assert result[1].status == "empty"
    for original, outcome in zip(texts, result):
        if outcome.status in ("rejected", "unchanged", "empty"):
            assert outcome.text == original
        else:
            assert check_correction(original, outcome.text, CorrectionConfig()).status == "corrected"
    assert corrector.stats.model_calls >= 1
    assert sum(corrector.stats.counts.values()) == len(texts)


def _gap_at(gaps: list[tuple[int, float]], user: str, word: str, occurrence: int = 0) -> float:
    """The gap of the token that starts `word` (with its leading space) in `user`."""
    raw, at = user.encode(), -1
    for _ in range(occurrence + 1):
        at = raw.index(f" {word}".encode(), at + 1)
    return next(gap for offset, gap in gaps if offset == at)


def test_surprise_singles_out_the_word_the_model_would_not_have_written(small_engine):
    user = "[1] one two three four five six seven eight nine ten\n[2] one two three four five six seven banana nine ten"
    gaps = small_engine.surprise("Repeat the lines.", user)
    assert gaps and all(0 <= offset < len(user.encode()) and gap >= 0 for offset, gap in gaps)
    assert [offset for offset, _ in gaps] == sorted({offset for offset, _ in gaps})
    banana = _gap_at(gaps, user, "banana")
    assert banana > _gap_at(gaps, user, "eight") + 2
    assert banana > _gap_at(gaps, user, "seven", occurrence=1) + 2


def test_surprise_leaves_the_kv_cache_consistent_for_the_next_chat(small_engine):
    ask = dict(max_tokens=12, temperature=0.0)
    before = small_engine.chat(PROMPTS.correction_system, "[1] bonjour je voudrais un rendez vous", **ask)
    small_engine.surprise(PROMPTS.correction_system, "[1] il a mal au cou depuis hier\n[2] d'accord")
    after = small_engine.chat(PROMPTS.correction_system, "[1] bonjour je voudrais un rendez vous", **ask)
    assert after.text == before.text
    assert 0 < after.evaluated_tokens < after.prompt_tokens


def test_surprise_gate_rewrites_only_the_segments_over_the_threshold(small_engine):
    texts = ["allo bonjour", "", "oui je vous écoute", "mon fils a mal o ventre", "d'accord", "il a quel âge"]
    non_empty = [i for i, t in enumerate(texts) if t]
    gaps = Rewriter(small_engine, rewrite(), PROMPTS).worst_gaps(non_empty, texts)
    assert set(gaps) == set(non_empty)
    for threshold, gated in ((1e9, len(non_empty)), (0.0, 0)):
        corrector = Corrector(small_engine, rewrite(surprise_threshold=threshold), PROMPTS)
        result = corrector.correct(segments(*texts), "fr")
        assert corrector.stats.gated == gated
        assert (corrector.stats.model_calls == 0) == (gated == len(non_empty))
        assert [r.status for r in result][1] == "empty"
    values = sorted(set(gaps.values()))
    middle = (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
    corrector = Corrector(small_engine, rewrite(surprise_threshold=middle), PROMPTS)
    result = corrector.correct(segments(*texts), "fr")
    assert corrector.stats.gated == sum(gap < middle for gap in gaps.values())
    for i in non_empty:
        if gaps[i] < middle:
            assert result[i].status == "unchanged" and result[i].text == texts[i]


def test_line_spans_point_at_each_text_inside_the_batch_prompt():
    texts = ["ça brûle", "il a mal au cou", "", "d'accord"] + [f"ligne {i}" for i in range(12)]
    raw = _batch_prompt(texts).encode("utf-8")
    assert [raw[start:end].decode("utf-8") for start, end in _line_spans(texts)] == texts
