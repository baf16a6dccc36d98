"""A labelled English development set from the User Satisfaction Simulation data (github
sunnweiwei/user-satisfaction-simulation), as plain-text transcripts and a labels CSV.

    python -m daemon.tools.uss DATASET_DIR OUT_DIR [--per-class N]

Reads dataset/MWOZ.txt and dataset/ReDial.txt only (SGD.txt is kept for an independent check). Each user
turn carries 1-5 ratings from annotators: a dialogue whose last user turn averages under 2.5 is unhappy;
one whose last user turn averages 3.5 or more, with no user turn under 2.5, is happy. Every unhappy
dialogue is kept, and as many happy ones, taken at even steps through the file; the rest is left out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

SOURCES = ("MWOZ", "ReDial")
SPEAKERS = {"USER": "Client", "SYSTEM": "Agent"}


def dialogues(text: str) -> list[list[tuple[str, str, float | None]]]:
    """(speaker, text, mean rating of a user turn) per turn, per dialogue; the OVERALL line left out."""
    found = []
    for block in text.strip().split("\n\n"):
        turns = []
        for line in block.split("\n"):
            parts = line.split("\t")
            if len(parts) < 2 or parts[0] not in SPEAKERS or parts[1] == "OVERALL":
                continue
            ratings = parts[3].strip() if len(parts) > 3 else ""
            mean = statistics.mean(int(r) for r in ratings.split(",")) if ratings else None
            turns.append((parts[0], parts[1].strip(), mean))
        if turns:
            found.append(turns)
    return found


def label(turns: list[tuple[str, str, float | None]]) -> str | None:
    rated = [mean for speaker, _, mean in turns if speaker == "USER" and mean is not None]
    if not rated:
        return None
    if rated[-1] < 2.5:
        return "unhappy"
    if rated[-1] >= 3.5 and min(rated) >= 2.5:
        return "happy"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daemon.tools.uss", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="the data set's dataset/ folder")
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, help="at most this many dialogues of each label")
    args = parser.parse_args(argv)
    chosen: list[tuple[str, str, list[tuple[str, str, float | None]]]] = []
    for source in SOURCES:
        found = [(f"{source.lower()}-{i:04d}", label(turns), turns)
                 for i, turns in enumerate(dialogues((args.dataset / f"{source}.txt").read_text(encoding="utf-8")))]
        unhappy = [d for d in found if d[1] == "unhappy"]
        happy = [d for d in found if d[1] == "happy"]
        step = max(1, len(happy) // max(1, len(unhappy)))
        chosen += unhappy + happy[::step][:len(unhappy)]
    if args.per_class:
        chosen = [d for lab in ("unhappy", "happy") for d in [c for c in chosen if c[1] == lab][:args.per_class]]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = ["file,label"]
    for name, lab, turns in chosen:
        (args.out / f"{name}.txt").write_text("".join(f"{SPEAKERS[s]}: {t}\n" for s, t, _ in turns), encoding="utf-8")
        rows.append(f"{name}.txt,{lab}")
    (args.out / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"{len(chosen)} dialogues ({sum(c[1] == 'unhappy' for c in chosen)} unhappy) written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
