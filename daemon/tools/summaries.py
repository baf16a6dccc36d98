"""What people read first, measured: the title, summary and bullets of enriched outputs against fact sheets
(`facts/simsamu.yaml`), against reference summaries (ROUGE-1/2/L, a corpus' `references.yaml`), and
structural checks every output must pass: the caller named as the caller, no bullet narrating a turn, no
number or name that the transcript does not hold (those two by the metadata validators' own rules, so outputs of
an older version are measured by the rule new ones meet), the transcript's language.

Matching is on lowercased text with accents kept, at word boundaries. A measurement, not a validator: the
daemon's own checks live in daemon/answers.py; these are what BENCHMARKS.md reports for each method.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daemon.evidence import Evidence
from daemon.language import detect_language
from daemon.record import RESOLUTIONS
from daemon.text import narrates, words

FACTS_DIR = Path(__file__).with_name("facts")
# the agent made the caller: "le médecin appelle ...", "Agent appelle client", "the doctor calls"
AGENT_CALLS = re.compile(r"\b(?:le|la|un|une|l'|the|an?)?\s*(?:médecin|docteur|dr|régulat\w*|agent|samu|opérat\w*|"
                         r"doctor|operator)\b[^.;\n]{0,40}?\b(?:appelle|a appelé|téléphone à|contacte|calls|called)\b",
                         re.IGNORECASE)


def mentions(text: str, phrase: str) -> bool:
    """`phrase` in `text` at word boundaries, lowercased."""
    return re.search(r"(?<!\w)" + re.escape(phrase.lower()) + r"(?!\w)", text.lower()) is not None


def invented(output_text: str, transcript: str, title: str = "") -> list[str]:
    """Numbers and names in the output that the transcript does not hold, by the validators' own rule (evidence.py):
    outputs of an older version are measured by the rule new ones meet."""
    evidence = Evidence.of(transcript)
    return evidence.unsupported(title, heading=True) + evidence.unsupported(output_text)


def _rouge_n(candidate: list[str], reference: list[str], n: int) -> float:
    grams = lambda tokens: [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]  # noqa: E731
    cand, ref = grams(candidate), grams(reference)
    if not cand or not ref:
        return 0.0
    pool = {g: ref.count(g) for g in set(ref)}
    overlap = sum(min(cand.count(g), count) for g, count in pool.items())
    return _f1(overlap / len(cand), overlap / len(ref))


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _rouge_l(candidate: list[str], reference: list[str]) -> float:
    if not candidate or not reference:
        return 0.0
    previous = [0] * (len(reference) + 1)
    for c in candidate:
        row = [0]
        for j, r in enumerate(reference, start=1):
            row.append(previous[j - 1] + 1 if c == r else max(previous[j], row[j - 1]))
        previous = row
    lcs = previous[-1]
    return _f1(lcs / len(candidate), lcs / len(reference))


def rouge(candidate: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F1 with a tokenizer that keeps accented letters (lowercased words, no stemming)."""
    c, r = words(candidate), words(reference)
    return {"rouge1": _rouge_n(c, r, 1), "rouge2": _rouge_n(c, r, 2), "rougeL": _rouge_l(c, r)}


@dataclass
class Sheet:
    caller: list[str]
    facts: list[list[str]]
    never: list[str] = field(default_factory=list)


def read_sheets(corpus_name: str) -> dict[str, Sheet]:
    path = FACTS_DIR / f"{corpus_name}.yaml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {stem: Sheet([str(c) for c in s["caller"]], [[str(a) for a in f] for f in s["facts"]],
                        [str(n) for n in s.get("never", [])]) for stem, s in data.items()}


def readable(output: dict[str, Any]) -> tuple[str | None, str | None, list[str]]:
    meta = output.get("metadata") or {}
    return meta.get("title"), meta.get("summary"), list(meta.get("bullet_points") or [])


def score_outputs(outputs: dict[str, dict[str, Any]], sheets: dict[str, Sheet],
                  references: dict[str, str]) -> dict[str, Any]:
    """Per-file findings and totals: fact sheets where a sheet exists, ROUGE where a reference does, structure always."""
    per_file: dict[str, Any] = {}
    totals = {"files": 0, "null_summaries": 0, "bullets": 0, "narrating_bullets": 0, "invented": 0,
              "wrong_language": 0}
    sheet_totals = {"calls": 0, "caller_right": 0, "facts": 0, "facts_stated": 0, "contradicting_calls": 0}
    # the call record: how many calls have each part, and the resolutions read
    record_totals = {"with_reason": 0, "with_actions": 0, "with_next_steps": 0, "entities": 0,
                     **{value: 0 for value in (*RESOLUTIONS, "no_resolution")}}
    scores: list[dict[str, float]] = []
    for stem, output in sorted(outputs.items()):
        title, summary, bullets = readable(output)
        transcript = "\n".join(f"{s['speaker'] or ''}: {s['original_text']}" for s in output["segments"])
        speakers = frozenset(s["speaker"].lower() for s in output["segments"] if s["speaker"])
        text = "\n".join([title or "", summary or "", *bullets])
        found: dict[str, Any] = {"narrating": [b for b in bullets if narrates(b, speakers)],
                                 "invented": invented("\n".join([summary or "", *bullets]), transcript, title or "")}
        language = detect_language(" ".join([summary or "", *bullets])) if (summary or bullets) else None
        found["language_ok"] = language in (None, output["language"])
        totals["files"] += 1
        totals["null_summaries"] += summary is None
        totals["bullets"] += len(bullets)
        totals["narrating_bullets"] += len(found["narrating"])
        totals["invented"] += len(found["invented"])
        totals["wrong_language"] += not found["language_ok"]
        record = (output.get("metadata") or {}).get("record") or {}
        for part in ("reason", "actions", "next_steps"):
            record_totals[f"with_{part}"] += bool(record.get(part))
        record_totals["entities"] += len(record.get("entities") or [])
        record_totals[(record.get("resolution") or {}).get("value") or "no_resolution"] += 1
        if stem in sheets:
            sheet = sheets[stem]
            found["caller_right"] = any(mentions(text, c) for c in sheet.caller) and not AGENT_CALLS.search(text)
            stated = [any(mentions(text, a) for a in fact) for fact in sheet.facts]
            found["facts_missing"] = [fact[0] for fact, ok in zip(sheet.facts, stated) if not ok]
            found["contradictions"] = [n for n in sheet.never if mentions(text, n)] + (
                [m.group(0) for m in [AGENT_CALLS.search(text)] if m])
            sheet_totals["calls"] += 1
            sheet_totals["caller_right"] += found["caller_right"]
            sheet_totals["facts"] += len(stated)
            sheet_totals["facts_stated"] += sum(stated)
            sheet_totals["contradicting_calls"] += bool(found["contradictions"])
        if stem in references and summary:
            found["rouge"] = {k: round(v, 4) for k, v in rouge(summary, references[stem]).items()}
            scores.append(found["rouge"])
        elif stem in references:
            scores.append({"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0})
        per_file[stem] = found
    report: dict[str, Any] = {"structure": totals, "record": record_totals, "files": per_file}
    if sheet_totals["calls"]:
        report["fact_sheets"] = {**sheet_totals,
                                 "facts_stated_share": round(sheet_totals["facts_stated"] / sheet_totals["facts"], 3)}
    if scores:
        report["rouge"] = {k: round(sum(s[k] for s in scores) / len(scores), 4) for k in ("rouge1", "rouge2", "rougeL")}
        report["rouge"]["files"] = len(scores)
    return report


def read_outbox(outbox: Path) -> dict[str, dict[str, Any]]:
    """Every enriched document of an outbox, by its input's stem."""
    return {p.name[: -len(".enriched.json")]: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(outbox.glob("*.enriched.json"))}


def read_references(corpus: Path) -> dict[str, str]:
    path = corpus / "references.yaml"
    return {str(k): str(v) for k, v in yaml.safe_load(path.read_text(encoding="utf-8")).items()} if path.is_file() else {}


def main(argv: list[str] | None = None) -> int:
    """`python -m daemon.tools.summaries OUTPUTS --corpus DIR`: score documents kept by `enrichd bench --outputs`
    (the same scoring as `--modes summaries`, without running the daemon again)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("outputs", type=Path)
    parser.add_argument("--corpus", type=Path, required=True, help="the corpus the outputs came from")
    args = parser.parse_args(argv)
    report = score_outputs(read_outbox(args.outputs), read_sheets(args.corpus.name), read_references(args.corpus))
    json.dump(report, sys.stdout, ensure_ascii=False, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
