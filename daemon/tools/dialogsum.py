"""DialogSum dialogues as plain-text transcripts and their human summaries as `references.yaml` (not a transcript extension), for
`enrichd bench --modes summaries` (ROUGE against the references).

    python -m daemon.tools.dialogsum DIALOGSUM_JSONL OUT_DIR [--limit N]

DialogSum is CC BY-NC-SA 4.0, for evaluation only: OUT_DIR belongs outside the repository. Speakers
`#Person1#` become `Person1:` (the plain-text format's speaker prefix); the references keep them as written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

SPEAKER = re.compile(r"^#(Person\d+)#:\s*", re.MULTILINE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jsonl", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="the first N dialogues only")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    references = {}
    for line in args.jsonl.read_text(encoding="utf-8").splitlines()[: args.limit]:
        item = json.loads(line)
        (args.out / f"{item['fname']}.txt").write_text(SPEAKER.sub(r"\1: ", item["dialogue"]) + "\n", encoding="utf-8")
        references[item["fname"]] = item["summary"]
    (args.out / "references.yaml").write_text(yaml.safe_dump(references, allow_unicode=True, width=1000),
                                              encoding="utf-8")
    print(f"{len(references)} dialogues in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
